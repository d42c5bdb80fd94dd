"""What the demo products share: per-image seeding, exact masks and the MVTec-layout writer.

A product module supplies two renderers (a good image from a generator; a defective
image and its mask from a defect type and a generator); :func:`write_set` validates the
counts, lays out the folders and writes every image from its own generator, so a set is
identical on every run and changing one count does not change the other images.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from anomaly.errors import InvalidParameterError
from anomaly.imageio import write_png
from anomaly.progress import progress

#: A pixel belongs to a defect's mask when the defect changes it by at least this many
#: grey levels (of 255) before noise and quantisation.
MASK_LEVEL = 2.0

_SPLIT_CODES = {"train": 0, "test_good": 1, "test_defect": 2}

RenderGood = Callable[[np.random.Generator], np.ndarray]
RenderDefective = Callable[[str, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def image_rng(seed: int, split: str, *index: int) -> np.random.Generator:
    """The generator of one image: seeded by the set's seed, the split and the image's indices."""
    return np.random.default_rng([int(seed), _SPLIT_CODES[split], *map(int, index)])


def exact_defect(good: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose a defective image from two renderings of the same draws, and its exact mask.

    Args:
        good: ``(H, W, 3)`` float32 rendering without the defect, values in ``[0, 1]``.
        bad: The same with the defect.

    Returns:
        ``(image, mask)``: ``bad`` inside the mask and ``good`` outside it, ``(H, W, 3)``
        float32; and the ``(H, W)`` bool mask, where the defect changes a channel by at
        least :data:`MASK_LEVEL` grey levels (holes filled). Below that level the
        defect's fading rim is not annotated, so it is not drawn either.
    """
    change = np.abs(bad - good).max(axis=2) * 255.0
    mask = ndimage.binary_fill_holes(change >= MASK_LEVEL)
    return np.where(mask[:, :, None], bad, good), mask


def write_set(
    out_dir: str | Path,
    *,
    category: str,
    defect_types: Sequence[str],
    n_train: int,
    n_test_good: int,
    n_test_per_defect: int,
    seed: int,
    render_good: RenderGood,
    render_defective: RenderDefective,
    desc: str,
) -> Path:
    """Write a generated product in MVTec layout.

    Layout under ``<out_dir>/<category>``: ``train/good/NNN.png``, ``test/good/NNN.png``,
    ``test/<type>/NNN.png`` for each of ``defect_types``, and
    ``ground_truth/<type>/NNN_mask.png`` (uint8 0/255, one channel). Existing ``train``,
    ``test`` and ``ground_truth`` folders of the category are replaced, so a re-run leaves
    no stale files. Image ``i`` of a split is drawn from ``image_rng(seed, split, i)``, of
    defect type ``k`` from ``image_rng(seed, "test_defect", k, i)``.

    Args:
        out_dir: Folder that receives the category folder.
        category: Name of the category folder.
        defect_types: Defect folders of the test split, in the order they are written.
        n_train: Good training images.
        n_test_good: Good test images.
        n_test_per_defect: Test images per defect type.
        seed: Seed of the whole set.
        render_good: Renders a good ``(H, W, 3)`` uint8 RGB image from a generator.
        render_defective: Renders a defective image and its ``(H, W)`` bool mask from a
            defect type and a generator.
        desc: Label of the progress bar.

    Returns:
        The category folder ``<out_dir>/<category>``.

    Raises:
        InvalidParameterError: a count is negative or the category name is not a plain
            folder name.
    """
    for name, value in (("n_train", n_train), ("n_test_good", n_test_good),
                        ("n_test_per_defect", n_test_per_defect)):
        if not is_int(value) or value < 0:
            raise InvalidParameterError(f"{name} must be a non-negative integer, got {value!r}")
    if not category or Path(category).name != category or category in (".", ".."):
        raise InvalidParameterError(f"category must be a plain folder name, got {category!r}")

    root = Path(out_dir) / category
    for part in ("train", "test", "ground_truth"):
        shutil.rmtree(root / part, ignore_errors=True)
    good_folders = {"train": root / "train" / "good", "test_good": root / "test" / "good"}
    for folder in good_folders.values():
        folder.mkdir(parents=True)
    for kind in defect_types:
        (root / "test" / kind).mkdir(parents=True)
        (root / "ground_truth" / kind).mkdir(parents=True)

    jobs = [("train", None, i) for i in range(n_train)] + [("test_good", None, i) for i in range(n_test_good)]
    jobs += [("test_defect", k, i) for k in range(len(defect_types)) for i in range(n_test_per_defect)]
    for split, k, i in progress(jobs, desc=desc, total=len(jobs)):
        if k is None:
            write_png(good_folders[split] / f"{i:03d}.png", render_good(image_rng(seed, split, i)))
            continue
        kind = defect_types[k]
        image, mask = render_defective(kind, image_rng(seed, split, k, i))
        write_png(root / "test" / kind / f"{i:03d}.png", image)
        write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


def add_set_options(parser: argparse.ArgumentParser, *, category: str, n_train: int, n_test_good: int) -> None:
    """The options of a product's ``python -m`` command line (out_dir, seed, category, size, counts)."""
    parser.add_argument("out_dir", type=Path, help="folder that receives the category folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole set (default 0)")
    parser.add_argument("--category", default=category, help=f"category folder name (default {category})")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--n-train", type=int, default=n_train, help=f"good training images (default {n_train})")
    parser.add_argument("--n-test-good", type=int, default=n_test_good,
                        help=f"good test images (default {n_test_good})")
    parser.add_argument("--n-test-per-defect", type=int, default=5, help="images per defect type (default 5)")
