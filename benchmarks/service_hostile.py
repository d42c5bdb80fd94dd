"""The service under heavy and slow input: large NG frames, a good part meanwhile, slow clients.

    python benchmarks/service_hostile.py [--side 1800] [--train 12] [--repeats 10] [--slow-seconds 60]
                                         [--json benchmarks/results/service_hostile/hostile.json]

A model is trained on the demo product's good parts scaled to ``side`` x ``side`` px, then served by
``anomaly serve`` (2 workers, its default threads) on a free loopback port:

1. **Large NG frame**: the scratched demo part at that size, sent ``repeats`` times (p50, max).
2. **A good part meanwhile**: a good part alone (p50), then while another client sends the NG
   frame back to back (p50); the ratio is the cost of sharing the service with heavy parts.
3. **Slow clients**: 2 connections that send one header line every 5 s for ``slow-seconds``
   while ``/healthz`` is asked every 0.5 s (p50, max).

Bounded: every loop stops by count or time; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.bench.provenance import run_provenance  # noqa: E402
from anomaly.imageio import encode_png, read_image  # noqa: E402
from service_load import free_port  # noqa: E402
from report import save_result  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

ANOMALY = [sys.executable, "-m", "anomaly.cli.main"]
DEMO = REPO / "data" / "bracket"


def _scaled(path: Path, side: int) -> bytes:
    return encode_png(cv2.resize(read_image(path), (side, side), interpolation=cv2.INTER_CUBIC))


def _post(url: str, body: bytes, timeout: float = 120) -> tuple[int, float, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            payload, status = json.loads(reply.read()), reply.status
    except urllib.error.HTTPError as exc:
        payload, status = json.loads(exc.read() or b"{}"), exc.code
    return status, (time.perf_counter() - start) * 1000, payload


def _get_ms(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
    return (time.perf_counter() - start) * 1000


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1), "max_ms": round(max(values), 1)}


def _slow_client(port: int, seconds: float, stop: threading.Event) -> None:
    """Open a request and send one header line every 5 s, never finishing it (slowloris)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end and not stop.wait(5):
            try:
                sock.sendall(f"X-Slow-{i}: {'a' * 10}\r\n".encode())
            except OSError:
                return  # the server closed it: that is a defence, not a failure
            i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=1800)
    parser.add_argument("--train", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--slow-seconds", type=float, default=60)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "service_hostile" / "hostile.json")
    args = parser.parse_args()
    doc: dict = {"command": ("python benchmarks/service_hostile.py " + " ".join(sys.argv[1:])).strip(),
                 "provenance": run_provenance(), "side": args.side}
    with tempfile.TemporaryDirectory(prefix="anomaly-hostile-") as tmp:
        good_dir = Path(tmp) / "good"
        good_dir.mkdir()
        for path in sorted((DEMO / "train" / "good").glob("*.png"))[: args.train]:
            (good_dir / path.name).write_bytes(_scaled(path, args.side))
        store = Path(tmp) / "store"
        subprocess.run([*ANOMALY, "train", str(good_dir), "--name", "big", "--store", str(store), "--quiet",
                        "--no-detection-estimate"], check=True, stdout=subprocess.DEVNULL)
        ng = _scaled(DEMO / "test" / "scratch" / "000.png", args.side)
        good = _scaled(DEMO / "test" / "good" / "000.png", args.side)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*ANOMALY, "serve", "--store", str(store), "--port", str(port),
                                   "--instance", str(Path(tmp) / "instance")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(120):
                try:
                    if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(1)
            score = base + "/api/v1/models/big/score"
            _post(score, ng), _post(score, good)  # warm both workers' first calls
            ng_runs = [_post(score, ng) for _ in range(args.repeats)]
            doc["ng_frame"] = {**_summary([ms for _, ms, _ in ng_runs]),
                               "verdicts": sorted({p.get("verdict", str(s)) for s, _, p in ng_runs})}
            doc["good_alone"] = _summary([_post(score, good)[1] for _ in range(args.repeats)])
            stop = threading.Event()

            def hammer() -> None:
                while not stop.is_set():
                    _post(score, ng)

            heavy = threading.Thread(target=hammer, daemon=True)
            heavy.start()
            time.sleep(0.5)
            meanwhile = [_post(score, good) for _ in range(args.repeats)]
            stop.set()
            heavy.join(timeout=120)
            doc["good_meanwhile"] = {**_summary([ms for _, ms, _ in meanwhile]),
                                     "statuses": sorted({s for s, _, _ in meanwhile})}
            doc["good_meanwhile_over_alone"] = round(doc["good_meanwhile"]["p50_ms"] / doc["good_alone"]["p50_ms"], 2)

            stop = threading.Event()
            slow = [threading.Thread(target=_slow_client, args=(port, args.slow_seconds, stop), daemon=True)
                    for _ in range(2)]
            for t in slow:
                t.start()
            health, end = [], time.monotonic() + args.slow_seconds
            while time.monotonic() < end:
                health.append(_get_ms(base + "/healthz"))
                time.sleep(0.5)
            stop.set()
            doc["healthz_under_2_slow_clients"] = {**_summary(health), "seconds": args.slow_seconds}
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps({k: v for k, v in doc.items() if k != "provenance"}, indent=2))
    save_result(doc, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
