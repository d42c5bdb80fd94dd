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

import functools
from typing import Sequence

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

#: How layers at least as coarse as the output grid are sampled at its cell centres.
SAMPLINGS = ("linear", "nearest")


def resample(
    feat: torch.Tensor,
    in_stride: int,
    in_offset: tuple[float, float],
    out_stride: int,
    grid: tuple[int, int],
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> torch.Tensor:
    """Sample a ``(N, C, h, w)`` feature map at the centres of another grid.

    Cell ``k`` of the input is centred on input pixel ``in_stride * k + in_offset``; output
    cell ``i`` is centred on pixel ``out_stride * i + origin``. Finer inputs are first averaged over
    ``2r - 1`` cells (``r = out_stride / in_stride``) so sampling them does not alias, then
    interpolated bilinearly. Inputs at least as coarse as the grid are interpolated
    bilinearly (``sampling="linear"``) or give each output cell the input cell whose centre
    is nearest (``"nearest"``, half-way ties to the later cell): every output cell then
    holds one real feature vector of the layer, not a blend of up to four.

    Returns:
        ``(N, C, grid_h, grid_w)`` tensor.
    """
    if in_stride < out_stride:
        r = out_stride // in_stride
        feat = F.avg_pool2d(feat, 2 * r - 1, stride=1, padding=r - 1, count_include_pad=False)
    h_in, w_in = feat.shape[-2:]
    ys = (torch.arange(grid[0], dtype=torch.float64) * out_stride + (origin[0] - in_offset[0])) / in_stride
    xs = (torch.arange(grid[1], dtype=torch.float64) * out_stride + (origin[1] - in_offset[1])) / in_stride
    if sampling == "nearest" and in_stride >= out_stride:
        iy = torch.floor(ys + 0.5).clamp(0, h_in - 1).long()
        ix = torch.floor(xs + 0.5).clamp(0, w_in - 1).long()
        return feat.index_select(-2, iy).index_select(-1, ix)
    # grid_sample with align_corners=True maps -1 to cell 0 and +1 to the last cell.
    gy = (ys / max(h_in - 1, 1) * 2 - 1).float()
    gx = (xs / max(w_in - 1, 1) * 2 - 1).float()
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
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> torch.Tensor:
    """Locally aggregate and concatenate multi-layer features on one grid.

    The local average and the resampling act on every channel alike and linearly, so for
    one layer shape they are one sparse ``(cells, positions)`` matrix (built once from
    :func:`aggregate_reference`, see :func:`layer_operator`), applied to all channels in
    one sparse product, several times faster than the pooling and ``grid_sample`` calls,
    and the result comes out channel-last, as the nearest-neighbour search wants it.

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
        origin: ``(dy, dx)`` input pixel of the output grid's cell ``(0, 0)``. With the
            finest layer's own offset and stride, that layer is taken as it is, cell for
            cell, instead of being interpolated between its cells.
        sampling: How layers at least as coarse as the grid are sampled: ``"linear"``
            (bilinear) or ``"nearest"`` (see :func:`resample`).

    Returns:
        ``(N, sum C'_l, h, w)`` float32 tensor (a channel-last array seen channel-first),
        cell ``(i, j)`` centred on input pixel ``(out_stride * i + origin[0], out_stride
        * j + origin[1])``; ``C'_l = min(C_l, channels_per_layer)``.
    """
    if channels_per_layer is not None:
        # Averaging channels commutes with the spatial operators: do it first, on each
        # layer's own (coarser) grid, where it is cheapest.
        layers = [pool_channels(feat, int(channels_per_layer)) for feat in layers]
    n = int(layers[0].shape[0])
    cells = int(grid[0]) * int(grid[1])
    dims = [int(feat.shape[1]) for feat in layers]
    out = np.empty((n, cells, sum(dims)), dtype=np.float32)
    start = 0
    for feat, stride, offset, c in zip(layers, strides, offsets, dims):
        h, w = int(feat.shape[-2]), int(feat.shape[-1])
        op = layer_operator((h, w), int(stride), (float(offset[0]), float(offset[1])), int(patch_size),
                            int(out_stride), (int(grid[0]), int(grid[1])), (float(origin[0]), float(origin[1])),
                            sampling)
        # (positions, n * c), contiguous: scipy's sparse product reads it row by row. The
        # backbone's channels-last output is already in this order for one image (no copy).
        x = np.ascontiguousarray(feat.detach().permute(2, 3, 0, 1).numpy(), dtype=np.float32).reshape(h * w, n * c)
        y = np.asarray(op @ x, dtype=np.float32)  # (cells, n * c)
        out[:, :, start : start + c] = y.reshape(cells, n, c).transpose(1, 0, 2)
        start += c
    return torch.from_numpy(out).view(n, int(grid[0]), int(grid[1]), -1).permute(0, 3, 1, 2)


def aggregate_cells(
    layers: Sequence[torch.Tensor],
    strides: Sequence[int],
    offsets: Sequence[tuple[float, float]],
    cells: Sequence[np.ndarray],
    *,
    patch_size: int = 3,
    out_stride: int,
    grid: tuple[int, int],
    channels_per_layer: int | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> list[np.ndarray]:
    """:func:`aggregate` at a few cells of the grid only, other cells for each image.

    The same operator rows as :func:`aggregate`'s, so the features are the same; for a
    handful of cells (PatchCore's refinement of its top grid cells) this is a small
    fraction of aggregating the whole grid.

    Args:
        layers: Feature maps ``(N, C_l, h_l, w_l)``.
        strides, offsets, patch_size, out_stride, grid, channels_per_layer, origin,
            sampling: As for :func:`aggregate`.
        cells: ``N`` arrays of flat cell indices ``i * grid_w + j``, one per image.

    Returns:
        ``N`` float32 arrays ``(len(cells[n]), sum C'_l)``.
    """
    if channels_per_layer is not None:
        layers = [pool_channels(feat, int(channels_per_layer)) for feat in layers]
    dims = [int(feat.shape[1]) for feat in layers]
    out = [np.empty((len(c), sum(dims)), dtype=np.float32) for c in cells]
    start = 0
    for feat, stride, offset, c in zip(layers, strides, offsets, dims):
        h, w = int(feat.shape[-2]), int(feat.shape[-1])
        columns, weights = layer_operator_rows((h, w), int(stride), (float(offset[0]), float(offset[1])),
                                               int(patch_size), int(out_stride), (int(grid[0]), int(grid[1])),
                                               (float(origin[0]), float(origin[1])), sampling)
        x = feat.detach().permute(0, 2, 3, 1).numpy()  # (N, h, w, c): one image's block is (h * w, c)
        for i, rows in enumerate(cells):
            block = x[i].reshape(h * w, c)
            rows = np.asarray(rows, dtype=np.int64)
            # (cells, k, c) gathered positions, weighted and summed: the operator's rows.
            out[i][:, start : start + c] = np.einsum("rk,rkc->rc", weights[rows], block[columns[rows]])
        start += c
    return out


@functools.lru_cache(maxsize=32)
def layer_operator_rows(*args) -> tuple[np.ndarray, np.ndarray]:
    """:func:`layer_operator` (same arguments) as padded rows: ``(cells, k)`` int64 column
    indices and ``(cells, k)`` float32 weights, zero-weighted where a row has fewer than ``k``
    entries. Gathering a few rows this way takes microseconds, far less than scipy's row
    indexing of the sparse matrix.
    """
    op = layer_operator(*args)
    counts = np.diff(op.indptr)
    k = max(int(counts.max()) if len(counts) else 0, 1)
    columns = np.zeros((op.shape[0], k), dtype=np.int64)
    weights = np.zeros((op.shape[0], k), dtype=np.float32)
    for r in range(op.shape[0]):
        a, b = op.indptr[r], op.indptr[r + 1]
        columns[r, : b - a] = op.indices[a:b]
        weights[r, : b - a] = op.data[a:b]
    columns.flags.writeable = weights.flags.writeable = False  # cached: shared by every call
    return columns, weights


@functools.lru_cache(maxsize=32)
def layer_operator(
    shape: tuple[int, int],
    stride: int,
    offset: tuple[float, float],
    patch_size: int,
    out_stride: int,
    grid: tuple[int, int],
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> scipy.sparse.csr_matrix:
    """One layer's local average and resampling as a sparse ``(cells, h * w)`` matrix.

    Both steps are separable (a box average with a constant divisor; bilinear or nearest
    sampling on a rectangular grid), so the matrix is the Kronecker product of a row and a
    column operator (:func:`layer_axis_operators`). Exact zeros stay out of it: about
    ``(patch_size + 1)^2`` entries per cell.
    """
    rows, cols = layer_axis_operators(shape, stride, offset, patch_size, out_stride, grid, origin, sampling)
    return scipy.sparse.kron(scipy.sparse.csr_matrix(rows), scipy.sparse.csr_matrix(cols),
                             format="csr").astype(np.float32)


@functools.lru_cache(maxsize=32)
def layer_axis_operators(
    shape: tuple[int, int],
    stride: int,
    offset: tuple[float, float],
    patch_size: int,
    out_stride: int,
    grid: tuple[int, int],
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> tuple[np.ndarray, np.ndarray]:
    """The row and column operators of :func:`layer_operator` (same arguments).

    Each is measured by pushing unit impulses along one axis through
    :func:`aggregate_reference`; a layer ``X`` ``(h, w)`` aggregates to ``rows @ X @ cols.T``
    (the exported graphs, :mod:`anomaly.export.graphs`, apply them so).

    Returns:
        ``(grid_h, h)`` and ``(grid_w, w)`` float32 arrays (read-only: cached).
    """
    h, w = shape

    def axis_operator(n: int, along_rows: bool) -> np.ndarray:
        impulses = torch.eye(n).reshape(n, 1, n, 1) if along_rows else torch.eye(n).reshape(n, 1, 1, n)
        with torch.inference_mode():
            response = aggregate_reference(
                [impulses], [stride], [offset],
                patch_size=patch_size, out_stride=out_stride,
                grid=(grid[0], 1) if along_rows else (1, grid[1]), origin=origin, sampling=sampling)
        # The local average counts the zero padding (divisor p * p everywhere), so a
        # one-pixel-wide impulse image also averages the other axis's two padded zeros:
        # its response is 1 / p of the axis operator.
        out = response.reshape(n, -1).numpy().T * patch_size  # (cells along the axis, n)
        out.flags.writeable = False
        return out

    return axis_operator(h, True), axis_operator(w, False)


def aggregate_reference(
    layers: Sequence[torch.Tensor],
    strides: Sequence[int],
    offsets: Sequence[tuple[float, float]],
    *,
    patch_size: int = 3,
    out_stride: int,
    grid: tuple[int, int],
    origin: tuple[float, float] = (0.0, 0.0),
    sampling: str = "linear",
) -> torch.Tensor:
    """:func:`aggregate` spelled out with torch's pooling and ``grid_sample`` (its definition).

    Returns:
        ``(N, sum C_l, h, w)`` float32 tensor.
    """
    out = []
    for feat, stride, offset in zip(layers, strides, offsets):
        if patch_size > 1:
            # Zero padding counted, as in PatchCore's own code (unfold with zero padding,
            # then an average): border patches stay distinct from interior ones, which
            # matters for image AUROC (see docs/methods.md).
            feat = F.avg_pool2d(feat, patch_size, stride=1, padding=patch_size // 2, count_include_pad=True)
        out.append(resample(feat, int(stride), offset, int(out_stride), grid, origin, sampling))
    return torch.cat(out, dim=1)
