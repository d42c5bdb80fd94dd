"""Locally aware patch features (PatchCore, Roth et al. 2022, section 3.1), aligned exactly.

Each layer's map is averaged over a ``p x p`` neighbourhood (so a patch feature sees its
surroundings without a deeper, more ImageNet-biased layer), brought to one feature grid,
and concatenated along channels.

Alignment matters for localisation. A plain bilinear resize assumes that cell ``k`` of a
stride-``s`` layer is centred on input pixel ``s * k + (s - 1) / 2``; measured on
EfficientNet-Lite0, its stride-8 cells are centred about 3.5 px *before* ``8 k``, so a
resize puts every defect 7 px down and right of where it is. Each layer's effective
receptive-field centre is therefore measured once per backbone
(:func:`anomaly.features.backbone.receptive_field_offsets`), every layer is sampled at the
exact centres of one output grid (``grid_sample``), and maps are upsampled with the same
convention (:func:`anomaly.maps.model_resolution_map`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resample(
    feat: torch.Tensor,
    in_stride: int,
    in_offset: tuple[float, float],
    out_stride: int,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Sample a ``(N, C, h, w)`` feature map at the centres of another grid.

    Cell ``k`` of the input is centred on input pixel ``in_stride * k + in_offset``; output
    cell ``i`` is centred on pixel ``out_stride * i``. Finer inputs are first averaged over
    ``2r - 1`` cells (``r = out_stride / in_stride``) so sampling them does not alias.

    Returns:
        ``(N, C, grid_h, grid_w)`` tensor.
    """
    if in_stride < out_stride:
        r = out_stride // in_stride
        feat = F.avg_pool2d(feat, 2 * r - 1, stride=1, padding=r - 1, count_include_pad=False)
    h_in, w_in = feat.shape[-2:]
    ys = (torch.arange(grid[0], dtype=torch.float32) * out_stride - in_offset[0]) / in_stride
    xs = (torch.arange(grid[1], dtype=torch.float32) * out_stride - in_offset[1]) / in_stride
    # grid_sample with align_corners=True maps -1 to cell 0 and +1 to the last cell.
    gy = ys / max(h_in - 1, 1) * 2 - 1
    gx = xs / max(w_in - 1, 1) * 2 - 1
    mesh_y, mesh_x = torch.meshgrid(gy, gx, indexing="ij")
    sample = torch.stack([mesh_x, mesh_y], dim=-1).unsqueeze(0).expand(feat.shape[0], -1, -1, -1)
    return F.grid_sample(feat, sample.to(feat.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def pool_channels(feat: torch.Tensor, channels: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis, ``(N, C, h, w) -> (N, min(C, channels), h, w)``.

    PatchCore reduces its patch features the same way (Roth et al. 2022, section 3.1: adaptive
    average pooling to a target dimension). Done per layer, it also gives every layer about
    the same weight in the Euclidean patch distance: concatenated as they come, a deeper
    layer with three times the channels dominates it.
    """
    n, c, h, w = feat.shape
    if channels >= c:
        return feat
    flat = feat.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
    return F.adaptive_avg_pool1d(flat, channels).reshape(n, h, w, channels).permute(0, 3, 1, 2)


def aggregate(
    layers: Sequence[torch.Tensor],
    strides: Sequence[int],
    offsets: Sequence[tuple[float, float]],
    *,
    patch_size: int = 3,
    out_stride: int,
    grid: tuple[int, int],
    channels_per_layer: int | None = None,
) -> torch.Tensor:
    """Locally aggregate and concatenate multi-layer features on one grid.

    Args:
        layers: Feature maps ``(N, C_l, h_l, w_l)``.
        strides: Each layer's stride in input pixels.
        offsets: Each layer's receptive-field centre offset ``(dy, dx)`` in pixels
            (cell ``k`` centred on ``stride * k + offset``), see
            :func:`anomaly.features.backbone.receptive_field_offsets`.
        patch_size: Neighbourhood size of the local average (1 = none).
        out_stride: Stride of the output grid.
        grid: Output ``(h, w)``.
        channels_per_layer: Average each layer's channels down to at most this many
            (see :func:`pool_channels`); ``None`` keeps them all.

    Returns:
        ``(N, sum C'_l, h, w)`` float32 tensor, cell ``(i, j)`` centred on input pixel
        ``(out_stride * i, out_stride * j)``; ``C'_l = min(C_l, channels_per_layer)``.
    """
    out = []
    for feat, stride, offset in zip(layers, strides, offsets):
        if channels_per_layer is not None:
            # Averaging channels commutes with the spatial averages below: do it first,
            # on the layer's own (coarser) grid, where it is cheapest.
            feat = pool_channels(feat, int(channels_per_layer))
        if patch_size > 1:
            feat = F.avg_pool2d(feat, patch_size, stride=1, padding=patch_size // 2, count_include_pad=False)
        out.append(resample(feat, int(stride), offset, int(out_stride), grid))
    return torch.cat(out, dim=1)
