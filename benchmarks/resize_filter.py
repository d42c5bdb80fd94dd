"""Image AUROC with anomalib's resize filter on our side, on the bench's sub-samples.

Our loader shrinks an image by area averaging (:func:`anomaly.geometry.resize_image`,
OpenCV ``INTER_AREA``); anomalib's pre-processor uses torchvision's ``Resize(antialias=True)``,
a bilinear (triangle) filter widened by the shrink factor, which blurs a little more. This
script swaps our resize for that filter (``torch.nn.functional.interpolate(mode="bilinear",
antialias=True)``, what torchvision's ``Resize`` calls on tensors) in both fitting and
scoring, then runs :mod:`benchmarks.option_auroc` with the same arguments:

    python benchmarks/resize_filter.py [--matched] [--param KEY=VALUE] CATEGORY_DIR ...

It answers whether the preprocessing filter, rather than the model, explains a difference
in image AUROC between the two systems; compare its lines with ``option_auroc.py``'s.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import anomaly.geometry  # noqa: E402


def antialiased_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """torchvision's antialiased bilinear resize of a uint8/uint16/float ``(H, W[, C])`` array.

    Returns:
        ``(height, width[, C])`` array of the input's dtype (integers rounded and clipped).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float()
    tensor = tensor[None, None] if image.ndim == 2 else tensor.permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    array = out[0, 0].numpy() if image.ndim == 2 else out[0].permute(1, 2, 0).numpy()
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(image.dtype)
    return array.astype(image.dtype)


def main() -> None:
    # The one caller (anomaly.geometry, fitting and scoring alike) looks the function up
    # in its module at call time, so one assignment swaps it everywhere.
    anomaly.geometry.resize_image = antialiased_bilinear
    print("resize: antialiased bilinear (anomalib's filter) in place of area averaging", flush=True)
    sys.argv = [str(REPO / "benchmarks/option_auroc.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
