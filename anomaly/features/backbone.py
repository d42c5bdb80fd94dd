"""A timm feature extractor with pretrained ImageNet weights loaded offline.

The extractor is pruned after the deepest stage a detector asks for, so scoring pays only
for the layers it uses. Normalisation is the weights' own (the TF-converted EfficientNet-
Lite weights were trained on ``(x - 0.5) / 0.5``; timm's ImageNet weights use the usual
ImageNet mean and std) and is applied here, in one place, for every detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from anomaly.errors import BackboneWeightsError, InvalidParameterError
from anomaly.features.weights import WeightsFile, locate_weights, sha256_file

_LITE_NORMALISATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class BackboneInfo:
    """What a bundle records about the backbone.

    Attributes:
        name: timm model name.
        layers: Stage indices whose outputs are used.
        weights_sha256: sha256 of the weights file.
        weights_source: How the weights were found.
        mean: Normalisation mean, RGB.
        std: Normalisation std, RGB.
        offsets: Per layer, the ``(dy, dx)`` receptive-field centre offset in pixels.
    """

    name: str
    layers: list[int]
    weights_sha256: str
    weights_source: str
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    offsets: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layers": list(self.layers),
            "weights_sha256": self.weights_sha256,
            "weights_source": self.weights_source,
            "mean": list(self.mean),
            "std": list(self.std),
            "offsets": [list(o) for o in self.offsets],
        }


class FeatureExtractor:
    """Pretrained timm backbone returning intermediate feature maps.

    Args:
        name: timm model name (``efficientnet_lite0``, ``resnet18``, ``wide_resnet50_2``...).
        layers: Stage indices (as timm's ``forward_intermediates`` counts them) to return.
        expected_sha256: If given, the weights file must have this hash.
        offsets: Receptive-field offsets recorded when the model was trained; measured
            (see :func:`receptive_field_offsets`) when not given.

    Raises:
        BackboneWeightsError: weights not present locally, not matching the expected hash,
            or not fitting the architecture.
        InvalidParameterError: unknown timm model name or layer indices.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[int],
        *,
        expected_sha256: str | None = None,
        offsets: Sequence[Sequence[float]] | None = None,
    ) -> None:
        import timm  # lazy: a slow import, needed only when a backbone is built

        self.name = name
        self.layers = [int(i) for i in layers]
        if not self.layers or sorted(set(self.layers)) != self.layers:
            raise InvalidParameterError(f"layers must be increasing stage indices, got {list(layers)}")
        try:
            model = timm.create_model(name, pretrained=False)
        except Exception as exc:  # noqa: BLE001 - timm raises RuntimeError for unknown names
            raise InvalidParameterError(f"unknown timm backbone {name!r}: {exc}") from None
        weights = locate_weights(name)
        digest = sha256_file(weights.path)
        if expected_sha256 is not None and digest != expected_sha256:
            raise BackboneWeightsError(
                f"weights of backbone {name!r} at {weights.path} have sha256 {digest[:16]}..., "
                f"but the model was trained with {expected_sha256[:16]}...; install the same weights"
            )
        model.load_state_dict(_state_dict_for(model, weights))
        n_stages = len(model.feature_info)
        if self.layers[-1] >= n_stages:
            raise InvalidParameterError(f"{name} has stages 0..{n_stages - 1}, asked for layers {self.layers}")
        model.prune_intermediate_layers(self.layers, prune_norm=True, prune_head=True)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.folded_batchnorms = fold_batchnorm(model)
        # Channels-last (NHWC) weights and activations, which torch's oneDNN CPU
        # convolutions run faster (benchmarks/backbone_layout.py measures both layouts);
        # features equal to float rounding (tested).
        model.to(memory_format=torch.channels_last)
        self.model = model
        if weights.key_scheme == "efficientnet_pytorch":
            mean, std = _LITE_NORMALISATION
        else:
            mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.channels = [int(model.feature_info[i]["num_chs"]) for i in self.layers]
        self.reductions = [int(model.feature_info[i]["reduction"]) for i in self.layers]
        if offsets is not None and len(offsets) == len(self.layers):
            self.offsets = [(float(o[0]), float(o[1])) for o in offsets]
        else:
            self.offsets = receptive_field_offsets(self, f"{name}:{digest}")
        self.info = BackboneInfo(
            name=name,
            layers=self.layers,
            weights_sha256=digest,
            weights_source=weights.source,
            mean=[float(v) for v in self.mean],
            std=[float(v) for v in self.std],
            offsets=self.offsets,
        )

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """Run the backbone.

        Args:
            batch: ``(N, 3, H, W)`` float32 normalised input.

        Returns:
            One tensor per requested layer, ``(N, C_l, H / r_l, W / r_l)``, stored
            channels-last (``permute(0, 2, 3, 1)`` of it is contiguous).
        """
        x = torch.as_tensor(batch).contiguous(memory_format=torch.channels_last)
        return list(self.model.forward_intermediates(x, indices=self.layers, intermediates_only=True))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into its weights (inference).

    ``BN(W * x + b) = (s W) * x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``,
    so the convolution takes the scaled weights and bias and the norm goes; a timm
    ``BatchNormAct2d`` keeps its dropout and activation. A norm is folded only where it
    is the next child after a ``Conv2d`` of the same width in its parent (the order in
    which timm's EfficientNet and ResNet blocks run them). On EfficientNet-Lite0 this
    takes its 33 batch-norm calls out of every forward; features change by float
    rounding only (tested).

    Args:
        model: A module in eval mode; changed in place.

    Returns:
        How many norms were folded.
    """
    from timm.layers import BatchNormAct2d  # lazy, as in FeatureExtractor

    folded = 0
    for parent in list(model.modules()):
        previous = None
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d)
                    and child.running_mean is not None and previous.out_channels == child.num_features):
                _fold_into(previous, child)
                if isinstance(child, BatchNormAct2d):
                    setattr(parent, name, nn.Sequential(child.drop, child.act))
                else:
                    setattr(parent, name, nn.Identity())
                folded += 1
            previous = child
    return folded


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else \
        1.0 / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias if norm.affine else torch.zeros_like(norm.running_mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift, requires_grad=False)


_OFFSETS: dict[tuple[str, tuple[int, ...]], list[tuple[float, float]]] = {}


def receptive_field_offsets(extractor: "FeatureExtractor", cache_key: str, size: int = 160) -> list[tuple[float, float]]:
    """Where each layer's cells really sit: the centre of the effective receptive field.

    For a layer of stride ``s``, the gradient of one central cell's features with respect to
    a uniform input is taken; the centroid of its magnitude is the pixel the cell looks at,
    and ``offset = centroid - s * k``. Measured once per backbone and layer set (a backward
    pass at ``size`` px), independent of the weights' padding conventions.

    Returns:
        One ``(dy, dx)`` offset in pixels per layer.
    """
    key = (cache_key, tuple(extractor.layers))
    if key in _OFFSETS:
        return _OFFSETS[key]
    offsets = []
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    # Seeded noise inputs: a uniform input leaves most units at a ReLU's flat part and gives
    # a lopsided gradient; the average over a few textured inputs is stable.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((2, 3, size, size), generator=generator)
    for layer_pos, stride in enumerate(extractor.reductions):
        x = inputs.clone().requires_grad_(True)
        with torch.enable_grad():
            feats = extractor.model.forward_intermediates(x, indices=extractor.layers, intermediates_only=True)
            feat = feats[layer_pos]
            k_y, k_x = feat.shape[-2] // 2, feat.shape[-1] // 2
            feat[:, :, k_y, k_x].abs().sum().backward()
        g = x.grad.abs().sum(dim=(0, 1)).numpy().astype(np.float64)
        total = g.sum()
        if total <= 0:
            offsets.append((0.0, 0.0))
            continue
        cy, cx = (g * yy).sum() / total, (g * xx).sum() / total
        offsets.append((float(cy - stride * k_y), float(cx - stride * k_x)))
    _OFFSETS[key] = offsets
    return offsets


def _state_dict_for(model: torch.nn.Module, weights: WeightsFile) -> dict[str, torch.Tensor]:
    if weights.path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: only for .safetensors weight files

        source = load_file(str(weights.path))
    else:
        source = torch.load(weights.path, map_location="cpu", weights_only=True)
        if isinstance(source, dict) and "state_dict" in source and isinstance(source["state_dict"], dict):
            source = source["state_dict"]
    target = model.state_dict()
    if weights.key_scheme == "efficientnet_pytorch":
        return map_efficientnet_pytorch(source, target)
    missing = [k for k in target if k not in source]
    if missing:
        raise BackboneWeightsError(
            f"weights file {weights.path} does not fit {type(model).__name__}: {len(missing)} missing keys, "
            f"e.g. {missing[:3]}"
        )
    return {k: source[k] for k in target}


def map_efficientnet_pytorch(source: dict, target: dict) -> dict[str, torch.Tensor]:
    """Map an ``efficientnet_pytorch`` state dict onto timm's key names, in order.

    The two implementations register the same tensors in the same order; the mapping is
    checked to be one to one in count and shape, and any mismatch is an error.

    Args:
        source: State dict with ``efficientnet_pytorch`` keys (``_conv_stem.weight``...).
        target: timm model's state dict (``conv_stem.weight``...).

    Returns:
        ``source``'s tensors under ``target``'s keys.

    Raises:
        BackboneWeightsError: different tensor counts or any shape mismatch.
    """
    if len(source) != len(target):
        raise BackboneWeightsError(
            f"efficientnet_pytorch weights have {len(source)} tensors, the timm model expects {len(target)}"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if tuple(src.shape) != tuple(dst.shape):
            raise BackboneWeightsError(
                f"weight {src_key} has shape {tuple(src.shape)}, but timm's {dst_key} expects {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped
