"""Time of PatchCore's coreset selection, exact against streamed, on random features.

:class:`anomaly.coreset.StreamingCoreset` selects exactly over every patch while they fit
its budgets and merges and reduces chunk coresets beyond. This times both ways on the same
seeded random features (``(n, 152)`` float32, EfficientNet-Lite0's stages 2 and 3) for the
bench's matched case (102,400 patches at 1 %, no cap) and for PatchCore's default 2,048
cap at two sizes:

    python benchmarks/coreset_time.py [--dim 152] [--cases N:RATIO:CAP ...]

Prints one line per case: the seconds of each way (adding the patches in batches of 1,024
and selecting) and the bank size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly.coreset import StreamingCoreset  # noqa: E402

DEFAULT_CASES = ("102400:0.01:1000000000", "131072:0.1:2048", "229376:0.1:2048")


def timed_selection(x: np.ndarray, ratio: float, cap: int, exact: bool) -> tuple[float, int]:
    budgets = {} if exact else {"exact_max_mb": 0.0}
    stream = StreamingCoreset(ratio=ratio, max_size=cap, **budgets)
    start = time.perf_counter()
    for i in range(0, len(x), 1024):
        stream.add(x[i : i + 1024])
    if exact and not stream.exact:
        raise SystemExit(f"{len(x)} patches outgrow the exact selection's budgets")
    bank = stream.finalize()
    return time.perf_counter() - start, len(bank)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=152)
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="N:RATIO:CAP")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    for case in args.cases:
        n, ratio, cap = case.split(":")
        x = rng.standard_normal((int(n), args.dim), dtype=np.float32)
        exact_s, size = timed_selection(x, float(ratio), int(cap), exact=True)
        streamed_s, _ = timed_selection(x, float(ratio), int(cap), exact=False)
        print(f"{int(n):>8} patches, ratio {float(ratio):g}, cap {int(cap)}: bank {size}; "
              f"exact {exact_s:.2f} s, streamed {streamed_s:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
