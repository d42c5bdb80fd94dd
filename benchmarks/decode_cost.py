"""What decoding an image file costs, and for a PNG where that time goes.

The end-to-end latency of a scoring call starts with decoding the file, which no model
choice can shorten. This times it on one or more files, with OpenCV as ``anomaly`` decodes
(``anomaly.imageio``), and for a PNG splits it into its two halves: inflating the zlib
stream of the IDAT chunks (``zlib.decompress``) and the rest (undoing the per-row filters,
counted by type):

    python benchmarks/decode_cost.py ../shared/datasets/mvtec_ad_subset/grid/test/bent/000.png

Prints one line per file: size, median decode time, and for a PNG the inflate time and the
rows per filter type (None, Sub, Up, Average, Paeth). Medians over ``--repeat`` runs.

``--alternatives`` also times the other decoders a user could reach for, each where it is
installed (none is a dependency of ours; ``pip install imagecodecs pyspng``): Pillow,
imagecodecs' libpng, libspng and libjpeg-turbo bindings, pyspng, and OpenCV's reduced-size
decoding (``IMREAD_REDUCED_COLOR_2`` and ``_4``, which libjpeg can do while decoding).
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly.imageio import read_image  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTERS = ("none", "sub", "up", "average", "paeth")
#: Bytes per pixel of each PNG colour type at 8 bits (grey, -, RGB, palette, grey+alpha, -, RGBA).
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def png_parts(data: bytes) -> tuple[dict[str, int], bytes]:
    """The IHDR fields and the concatenated IDAT payload of a PNG file."""
    pos, header, idat = len(PNG_SIGNATURE), {}, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            header = {"width": w, "height": h, "depth": depth, "colour": colour, "interlace": interlace}
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    return header, b"".join(idat)


def alternatives(data: bytes) -> dict[str, Callable[[], object]]:
    """Other decoders of the file's bytes, by name; those not installed are left out."""
    import io

    import cv2

    buffer = np.frombuffer(data, np.uint8)
    out: dict[str, Callable[[], object]] = {
        "opencv reduced 1/2": lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_2),
        "opencv reduced 1/4": lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_4),
    }
    try:
        from PIL import Image

        out["pillow"] = lambda: np.asarray(Image.open(io.BytesIO(data)))
    except ImportError:
        pass
    try:
        import imagecodecs

        if data.startswith(PNG_SIGNATURE):
            out["imagecodecs libpng"] = lambda: imagecodecs.png_decode(data)
            out["imagecodecs libspng"] = lambda: imagecodecs.spng_decode(data)
        elif data[:2] == b"\xff\xd8":
            out["imagecodecs libjpeg-turbo"] = lambda: imagecodecs.jpeg8_decode(data)
    except ImportError:
        pass
    if data.startswith(PNG_SIGNATURE):
        try:
            import pyspng

            out["pyspng"] = lambda: pyspng.load(data)
        except ImportError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--alternatives", action="store_true", help="also time other decoders where installed")
    args = p.parse_args(argv)
    for path in args.files:
        data = path.read_bytes()
        decode = median_ms(lambda: read_image(data), args.repeat)
        line = f"{path}: {len(data) / 1e3:.0f} kB, decode {decode:.2f} ms"
        if data.startswith(PNG_SIGNATURE):
            header, stream = png_parts(data)
            inflate = median_ms(lambda: zlib.decompress(stream), args.repeat)
            raw = np.frombuffer(zlib.decompress(stream), np.uint8)
            if header.get("interlace") == 0 and header.get("depth") == 8 and header.get("colour") in CHANNELS:
                stride = 1 + header["width"] * CHANNELS[header["colour"]]
                kinds = np.bincount(raw.reshape(header["height"], stride)[:, 0], minlength=5)
                rows = ", ".join(f"{name} {int(n)}" for name, n in zip(FILTERS, kinds))
            else:
                rows = "rows not counted (interlaced or not 8-bit)"
            line += (f" ({header.get('width')} x {header.get('height')}); inflate {inflate:.2f} ms, "
                     f"the rest {decode - inflate:.2f} ms; row filters: {rows}")
        print(line, flush=True)
        if args.alternatives:
            for name, fn in alternatives(data).items():
                print(f"  {name}: {median_ms(fn, args.repeat):.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
