"""Turn a folder of good images into an MVTec-layout test set with synthetic defects.

The good images are split once, by a seeded shuffle: most go to ``train/good`` untouched;
the held-out rest go to ``test/good`` untouched and are the bases (and the ``cutpaste`` /
``poisson`` donors) of the defective images, so a detector is never measured on a defect
painted into an image it was trained on. Layout of ``out_dir``::

    train/good/NNNN<ext>                                  copies of the training goods
    test/good/NNNN<ext>                                   copies of the held-out goods
    test/<kind>/s<size>_c<contrast>_NNN.png               one defect each
    ground_truth/<kind>/s<size>_c<contrast>_NNN_mask.png  uint8 0/255 masks
    synthesis.json                                        what was made, and from what

``synthesis.json`` records for every image its kind, size, contrast, base image, donor
image and the integer seed that :func:`~anomaly.synthesis.defects.make_defect` was given,
so any single image can be made again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from anomaly import __version__
from anomaly.errors import DatasetError, InvalidParameterError
from anomaly.imageio import read_image, write_png
from anomaly.progress import progress
from anomaly.synthesis.defects import KINDS, MAX_CONTRAST, MIN_CONTRAST, MIN_SIZE, DefectSpec, make_defect

#: Version of the ``synthesis.json`` layout.
FORMAT_VERSION = 1


def synthesize_dataset(
    good_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    kinds: Sequence[str] = KINDS,
    sizes: Sequence[float] = (16.0, 32.0),
    contrasts: Sequence[float] = (0.1, 0.3),
    n_per: int = 2,
    test_fraction: float = 0.25,
    random_state: int = 0,
) -> Path:
    """Write an MVTec-layout set of good and synthetically defective images.

    Every combination of kind, size and contrast gets ``n_per`` images, each made from
    the next held-out good image in turn.

    Args:
        good_paths: Good images (any format :func:`anomaly.imageio.read_image` reads); at
            least two, since one is held out for testing.
        out_dir: The category folder to write. Its ``train``, ``test`` and
            ``ground_truth`` folders and ``synthesis.json`` are replaced when present;
            nothing else in it is touched.
        kinds: Defect kinds, each one of :data:`~anomaly.synthesis.defects.KINDS`.
        sizes: Defect sizes (longest extent) in pixels.
        contrasts: Defect contrasts in ``[0.01, 1]``.
        n_per: Images per (kind, size, contrast).
        test_fraction: Share of the good images held out for ``test/good`` and as bases
            of the defects (at least one image, at most all but one).
        random_state: Seed of the split and of every defect.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidParameterError: an unknown kind, or a size, contrast, count or fraction out
            of range (checked before anything is written); a size too large for an image.
        DatasetError: fewer than two good images.
        InvalidImageError: a held-out good image cannot be read or is too small.
    """
    kinds, sizes, contrasts = _check_grid(kinds, sizes, contrasts)
    if isinstance(n_per, bool) or int(n_per) != n_per or n_per < 1:
        raise InvalidParameterError(f"n_per must be a positive integer, got {n_per!r}")
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise InvalidParameterError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
    goods = [Path(p) for p in good_paths]
    if len(goods) < 2:
        raise DatasetError(f"need at least two good images (one is held out for testing), got {len(goods)}")

    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(goods))
    n_test = min(max(1, round(test_fraction * len(goods))), len(goods) - 1)
    held_out = [goods[i] for i in sorted(order[:n_test])]
    train = [goods[i] for i in sorted(order[n_test:])]
    _check_sizes_fit(held_out, max(sizes))
    jobs = [(kind, size, contrast, r) for kind in kinds for size in sizes for contrast in contrasts
            for r in range(int(n_per))]
    seeds = rng.integers(0, 2**31, size=len(jobs))

    root = Path(out_dir)
    for part in ("train", "test", "ground_truth"):
        shutil.rmtree(root / part, ignore_errors=True)
    (root / "synthesis.json").unlink(missing_ok=True)
    record = {
        "format_version": FORMAT_VERSION,
        "generator": f"anomaly.synthesis {__version__}",
        "random_state": int(random_state),
        "kinds": list(kinds),
        "sizes": list(sizes),
        "contrasts": list(contrasts),
        "n_per": int(n_per),
        "test_fraction": float(test_fraction),
        "train": _copy_all(train, root / "train" / "good"),
        "test_good": _copy_all(held_out, root / "test" / "good"),
        "defects": [],
    }
    base_names = [entry["file"] for entry in record["test_good"]]

    cache: dict[int, np.ndarray] = {}
    steps = progress(list(enumerate(zip(jobs, seeds))), desc="synth", total=len(jobs))
    for index, ((kind, size, contrast, r), seed) in steps:
        base = index % n_test
        # The next held-out image gives cutpaste and poisson a foreign patch.
        donor = (base + 1) % n_test
        image = _read_cached(cache, held_out, base)
        source = None if donor == base else _read_cached(cache, held_out, donor)
        defective, mask = make_defect(image, DefectSpec(kind, size, contrast), random_state=int(seed),
                                      source=source)
        stem = f"s{size:g}_c{contrast:g}_{r:03d}"
        image_path = root / "test" / kind / f"{stem}.png"
        mask_path = root / "ground_truth" / kind / f"{stem}_mask.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        write_png(image_path, defective)
        write_png(mask_path, mask.astype(np.uint8) * 255)
        record["defects"].append({
            "file": image_path.relative_to(root).as_posix(),
            "mask": mask_path.relative_to(root).as_posix(),
            "kind": kind,
            "size": size,
            "contrast": contrast,
            "seed": int(seed),
            "base": base_names[base],
            "donor": base_names[donor],
            "defect_pixels": int(mask.sum()),
        })
    (root / "synthesis.json").write_text(json.dumps(record, indent=2) + "\n")
    return root


def _check_grid(
    kinds: Sequence[str], sizes: Sequence[float], contrasts: Sequence[float]
) -> tuple[list[str], list[float], list[float]]:
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise InvalidParameterError(
            f"unknown defect kind(s) {unknown or kinds!r}; expected one or more of {', '.join(KINDS)}"
        )
    if len(set(kinds)) != len(kinds):
        raise InvalidParameterError(f"defect kinds repeat: {kinds!r}")
    try:
        sizes = [float(s) for s in sizes]
        contrasts = [float(c) for c in contrasts]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"sizes and contrasts must be numbers, got {sizes!r} and {contrasts!r}") from None
    if not sizes or not all(math.isfinite(s) and s >= MIN_SIZE for s in sizes):
        raise InvalidParameterError(f"sizes must be at least {MIN_SIZE:g} px, got {sizes!r}")
    if not contrasts or not all(math.isfinite(c) and MIN_CONTRAST <= c <= MAX_CONTRAST for c in contrasts):
        raise InvalidParameterError(
            f"contrasts must be between {MIN_CONTRAST:g} and {MAX_CONTRAST:g}, got {contrasts!r}"
        )
    # File names carry size and contrast; repeated values would overwrite each other.
    if len(set(sizes)) != len(sizes) or len(set(contrasts)) != len(contrasts):
        raise InvalidParameterError(f"sizes and contrasts must not repeat, got {sizes!r} and {contrasts!r}")
    return kinds, sizes, contrasts


def _check_sizes_fit(paths: list[Path], size: float) -> None:
    """Refuse, before anything is written, a defect size larger than half an image's shorter side."""
    for path in paths:
        try:
            with Image.open(path) as probe:  # reads the header only
                width, height = probe.size
        except (OSError, ValueError):
            continue  # unreadable: read_image raises its own typed error later
        if size > min(width, height) / 2:
            raise InvalidParameterError(
                f"size {size:g} px is larger than half the shorter side of {path} ({width} x {height}); "
                f"use sizes up to {min(width, height) / 2:g}"
            )


def _copy_all(paths: list[Path], folder: Path) -> list[dict[str, str]]:
    """Byte-for-byte copies named by position (sources may share names), and where each came from."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, path in enumerate(paths):
        target = folder / f"{i:04d}{path.suffix.lower()}"
        shutil.copyfile(path, target)
        entries.append({"file": target.relative_to(folder.parent.parent).as_posix(), "source": str(path)})
    return entries


def _read_cached(cache: dict[int, np.ndarray], paths: list[Path], index: int) -> np.ndarray:
    # Bases are used in turn; keep the few most recent decoded instead of all of them.
    if index not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[index] = read_image(paths[index])
    return cache[index]
