"""Archive of judged parts on disk, for review and retraining.

Layout: ``<root>/<model>/<YYYY-MM-DD>/<inspection id>/`` holding ``image.<ext>`` (the bytes
as received; the extension comes from the image's own header, never from a client's file
name) and ``map.npy`` (the anomaly map, float16, read back with ``allow_pickle=False``).
``map.png`` (8-bit, linear between the ``vmin``/``vmax`` stored in the record's map
statistics) and ``overlay.png`` are rendered from those the first time someone asks for
them, so that archiving costs a scoring request two plain file writes and no encoding.
Only paths built here from record ids are ever opened.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"))
FILES = ("image", "map", "overlay", "thumbnail")
#: Long side of a gallery thumbnail, in pixels (a page of full-size overlays weighed 43 MB).
THUMBNAIL_SIDE = 256
_STORED = {"image": "image.*", "map": "map.npy", "overlay": "overlay.png", "map_png": "map.png",
           "thumbnail": "thumbnail.jpg"}


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their magic number."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "bin"


def map_to_png(amap: np.ndarray, vmin: float, vmax: float) -> bytes:
    """An ``(H, W)`` float map as 8-bit gray PNG, linear from ``vmin`` (0) to ``vmax`` (255).

    Written with the fastest zlib level: a client asking for the map waits for it.
    """
    span = max(float(vmax) - float(vmin), 1e-12)
    gray = np.clip((amap.astype(np.float32) - vmin) * np.float32(255.0 / span), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode a map of shape {amap.shape} as PNG")
    return buf.tobytes()


class Archive:
    """Where judged parts are kept.

    Args:
        root: Archive folder.
        mode: ``none``, ``rejected`` (REVIEW, NG, ALIGNMENT_FAILED) or ``all``.
    """

    def __init__(self, root: str | Path, mode: str) -> None:
        self.root = Path(root)
        self.mode = mode

    def wants(self, verdict: str) -> bool:
        return self.mode == "all" or (self.mode == "rejected" and verdict != "GOOD")

    def write(self, record_id: str, model: str, created_at: datetime, image: bytes, amap: np.ndarray | None) -> str:
        """Write one part's image and map; returns the folder relative to the root."""
        rel = f"{model}/{created_at:%Y-%m-%d}/{record_id}"
        folder = self.root / rel
        folder.mkdir(parents=True, exist_ok=False)
        (folder / f"image.{image_extension(image)}").write_bytes(image)
        if amap is not None:
            np.save(folder / "map.npy", np.asarray(amap, dtype=np.float16))
        return rel

    def remove(self, rel: str) -> None:
        """Delete a part's folder (when its record could not be stored)."""
        folder = self._folder(rel)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def load_map(self, rel: str | None) -> np.ndarray | None:
        """The archived ``(H, W)`` float32 map, or None."""
        path = self._stored(rel, "map")
        if path is None:
            return None
        return np.load(path, allow_pickle=False).astype(np.float32)

    def file(self, rel: str | None, kind: str, *, vmin: float = 0.0, vmax: float = 1.0,
             pixel_threshold: float | None = None, label: str = "") -> Path | None:
        """An archived ``image``, or the ``map`` / ``overlay`` PNG (rendered and kept on first use).

        Args:
            rel: The record's archive folder.
            kind: ``image``, ``map``, ``overlay`` or ``thumbnail`` (the overlay, or the image, as a small JPEG).
            vmin, vmax: Map values shown as black/coldest and white/hottest.
            pixel_threshold: Outline of the overlay.
            label: Text of the overlay.

        Returns:
            The file, or None when the record has no such archived data.
        """
        if kind not in FILES:
            return None
        if kind == "image":
            return self._stored(rel, "image")
        if kind == "thumbnail":
            return self._thumbnail(rel, vmin=vmin, vmax=vmax, pixel_threshold=pixel_threshold, label=label)
        cached = self._stored(rel, "map_png" if kind == "map" else "overlay")
        if cached is not None:
            return cached
        amap = self.load_map(rel)
        if amap is None:
            return None
        if kind == "map":
            return self._keep(rel, "map.png", map_to_png(amap, vmin, vmax))
        from anomaly.imageio import decode_image, encode_png
        from anomaly.overlay import overlay

        image_path = self._stored(rel, "image")
        if image_path is None:
            return None
        image = decode_image(image_path.read_bytes())
        if image.shape[:2] != amap.shape:
            return None
        rendered = overlay(image, amap, vmin=vmin, vmax=vmax, contour_at=pixel_threshold, label=label)
        return self._keep(rel, "overlay.png", encode_png(rendered))

    def _thumbnail(self, rel: str | None, **overlay_args: object) -> Path | None:
        """The overlay (or, without a map, the image) shrunk to :data:`THUMBNAIL_SIDE`, as JPEG, kept."""
        cached = self._stored(rel, "thumbnail")
        if cached is not None:
            return cached
        source = self.file(rel, "overlay", **overlay_args) or self._stored(rel, "image")  # type: ignore[arg-type]
        if source is None:
            return None
        from anomaly.imageio import decode_image, to_uint8_rgb

        image = to_uint8_rgb(decode_image(source.read_bytes()))
        scale = THUMBNAIL_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        return self._keep(rel, "thumbnail.jpg", jpeg.tobytes()) if ok else None

    def _keep(self, rel: str | None, name: str, payload: bytes) -> Path | None:
        folder = self._folder(rel or "")
        if folder is None:
            return None
        target = folder / name
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(payload)
        tmp.replace(target)  # atomic: a concurrent reader sees the whole file or none
        return target

    def _stored(self, rel: str | None, kind: str) -> Path | None:
        if not rel:
            return None
        folder = self._folder(rel)
        if folder is None or not folder.is_dir():
            return None
        found = sorted(folder.glob(_STORED[kind]))
        return found[0] if found and found[0].is_file() else None

    def _folder(self, rel: str) -> Path | None:
        root = self.root.resolve()
        folder = (root / rel).resolve()
        return folder if root in folder.parents else None
