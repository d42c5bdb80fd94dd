"""Dataset readers: a plain folder of good images, and the MVTec AD layout.

MVTec layout::

    <category>/train/good/*                         good images (the only training input)
    <category>/test/good/*                          good test images
    <category>/test/<defect_type>/*                 defective test images
    <category>/ground_truth/<defect_type>/<stem>_mask.png   0/255 masks, where given

Any image extension the loader reads is accepted. Paths are returned sorted, so every
run sees the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.errors import DatasetError
from anomaly.imageio import is_image_file, read_image


@dataclass(frozen=True)
class Sample:
    """One test image.

    Attributes:
        path: The image file.
        label: 0 good, 1 defective.
        defect_type: ``"good"`` or the defect folder's name.
        mask_path: The ground-truth mask, when the set has one for this image.
    """

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None

    def read_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The mask as a bool array of ``shape`` (all False for good images without masks).

        Returns ``None`` for a defective image without a mask.
        """
        if self.mask_path is None:
            return np.zeros(shape, dtype=bool) if self.label == 0 else None
        mask = read_image(self.mask_path)
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != tuple(shape):
            import cv2

            mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return mask > 0


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Sorted image files directly inside ``folder``.

    Raises:
        DatasetError: the folder does not exist or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DatasetError(f"no images (.png .jpg .jpeg .bmp .tif .tiff) in {root}")
    return files


def is_mvtec_category(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` has the MVTec ``train/good`` sub-folder."""
    return (Path(folder) / "train" / "good").is_dir()


def find_categories(root: str | os.PathLike) -> list[Path]:
    """Every MVTec-layout category at or below ``root`` (at most three levels down), sorted."""
    root = Path(root)
    if is_mvtec_category(root):
        return [root]
    found = []
    for depth in ("*", "*/*", "*/*/*"):
        for candidate in sorted(root.glob(depth)):
            if candidate.is_dir() and is_mvtec_category(candidate) and not any(
                parent in found for parent in candidate.parents
            ):
                found.append(candidate)
    return sorted(found)


class MVTecCategory:
    """One category in MVTec layout.

    Args:
        root: The category folder (holding ``train/`` and ``test/``).

    Raises:
        DatasetError: the layout is not there.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not is_mvtec_category(self.root):
            raise DatasetError(f"{self.root} is not in MVTec layout: no train/good folder")
        self.name = self.root.name

    def train_good(self) -> list[Path]:
        return list_images(self.root / "train" / "good")

    def defect_types(self) -> list[str]:
        test = self.root / "test"
        if not test.is_dir():
            return []
        return sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good")

    def test_samples(self) -> list[Sample]:
        """Good test images first, then each defect type, every list sorted by path."""
        test = self.root / "test"
        if not test.is_dir():
            raise DatasetError(f"{self.root} has no test folder")
        samples: list[Sample] = []
        if (test / "good").is_dir():
            samples += [Sample(p, 0, "good") for p in list_images(test / "good")]
        for defect in self.defect_types():
            masks = self.root / "ground_truth" / defect
            for path in list_images(test / defect):
                mask = masks / f"{path.stem}_mask.png"
                samples.append(Sample(path, 1, defect, mask if mask.is_file() else None))
        if not samples:
            raise DatasetError(f"{test} holds no test images")
        return samples

    def has_masks(self) -> bool:
        return any(s.mask_path is not None for s in self.test_samples() if s.label == 1)


def good_images(source: str | os.PathLike) -> list[Path]:
    """Training images from a plain folder, or from ``train/good`` of an MVTec category."""
    source = Path(source)
    if is_mvtec_category(source):
        return MVTecCategory(source).train_good()
    return list_images(source)
