"""The backbone's forward time in the plain (NCHW) and the channels-last (NHWC) memory layout.

The feature extractor runs its folded network channels-last
(:class:`anomaly.features.backbone.FeatureExtractor`); this measures what that buys, on
the same weights and inputs, alternating the two layouts call by call so that drift of
the machine hits both alike, and checks that the features agree:

    python benchmarks/backbone_layout.py [--backbone efficientnet_lite0] [--layers 2 3]
        [--size 256] [--batches 1 16] [--repeats 60]

Prints, per batch size, the median milliseconds of each layout and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly.features.backbone import FeatureExtractor  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=60, help="calls per layout for a batch of one (fewer for larger)")
    args = p.parse_args(argv)

    ext = FeatureExtractor(args.backbone, args.layers)
    layouts = {
        "channels_last": (ext.model, torch.channels_last),
        "plain": (copy.deepcopy(ext.model).to(memory_format=torch.contiguous_format), torch.contiguous_format),
    }

    def forward(layout: str, x: torch.Tensor) -> list[torch.Tensor]:
        model, memory_format = layouts[layout]
        with torch.inference_mode():
            return model.forward_intermediates(x.contiguous(memory_format=memory_format), indices=ext.layers,
                                               intermediates_only=True)

    generator = torch.Generator().manual_seed(0)
    print(f"{args.backbone} layers {ext.layers} at {args.size} px, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for batch in args.batches:
        x = torch.randn((batch, 3, args.size, args.size), generator=generator)
        same = [float((a - b).abs().max() / b.abs().max()) for a, b in
                zip(forward("channels_last", x), forward("plain", x))]
        repeats = max(3, args.repeats // batch)
        times: dict[str, list[float]] = {name: [] for name in layouts}
        for k in range(repeats + 2):
            for name in (layouts if k % 2 else reversed(list(layouts))):
                t0 = time.perf_counter()
                forward(name, x)
                if k >= 2:  # two warm-up rounds
                    times[name].append((time.perf_counter() - t0) * 1e3)
        plain, last = np.median(times["plain"]), np.median(times["channels_last"])
        print(f"  batch {batch:3d}: plain {plain:8.2f} ms, channels-last {last:8.2f} ms, ratio {last / plain:.2f}; "
              f"largest relative difference of the features {max(same):.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
