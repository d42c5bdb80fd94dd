"""Locally aware patch features (PatchCore, Roth et al. 2022, section 3.1).

Each layer's map is averaged over a ``p x p`` neighbourhood (so a patch feature sees its
surroundings without a deeper, more ImageNet-biased layer), resized to the finest
requested layer's grid, and concatenated along channels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def aggregate(layers: Sequence[torch.Tensor], *, patch_size: int = 3, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Locally aggregate and concatenate multi-layer features.

    Args:
        layers: Feature maps ``(N, C_l, h_l, w_l)``, finest first.
        patch_size: Neighbourhood size of the local average (1 = none).
        grid: Output ``(h, w)``; default: the first layer's grid.

    Returns:
        ``(N, sum C_l, h, w)`` float32 tensor.
    """
    grid = tuple(grid or layers[0].shape[-2:])
    out = []
    for feat in layers:
        if patch_size > 1:
            feat = F.avg_pool2d(feat, patch_size, stride=1, padding=patch_size // 2, count_include_pad=False)
        if tuple(feat.shape[-2:]) != grid:
            if feat.shape[-2] > grid[0]:
                feat = F.adaptive_avg_pool2d(feat, grid)
            else:
                feat = F.interpolate(feat, size=grid, mode="bilinear", align_corners=False)
        out.append(feat)
    return torch.cat(out, dim=1)
