"""Bounded load test of ``anomaly serve`` on loopback: throughput, latency, errors, records, overhead.

What it does, in order:

1. Finds a model: ``--store``/``--model`` if given; else the demo store ``runs/demo/models``
   (or ``runs/service-load/models``, made here by ``anomaly demo`` when ``data/`` holds the
   demo product); else a small PatchCore trained here on generated parts.
2. Starts the in-process scorer: ``decode_image`` + ``anomaly.inspect.inspect`` in a separate
   process with the same thread settings as one worker (``OMP_NUM_THREADS``).
3. Starts ``anomaly serve`` (gunicorn, ``--workers``) on a free loopback port with a fresh
   SQLite records database, and waits for ``/readyz``.
4. Sequential phase: one client, ``--sequential`` requests, each right after the same image
   was scored in-process (so both see the same machine load): the HTTP + storage overhead
   at p50 is (HTTP p50 - in-process p50) / in-process p50.
5. Load phase: ``--clients`` clients (keep-alive connections) for ``--seconds`` seconds: throughput,
   p50/p99 latency, errors.
   Half the parts are defective (the demo product's test images, good and defective in turn);
   every ``--retry-every``-th part is sent again with the same ``Idempotency-Key``, which must
   replay the first answer. Latency is reported per verdict too.
6. Counts the records in the database and compares them with the requests answered 200
   (replays are not answers of their own: they add no record).

Every loop is bounded in count and time and talks only to 127.0.0.1. Prints the figures and,
with ``--out``, writes them as JSON::

    .venv/bin/python benchmarks/service_load.py --clients 8 --seconds 60 --workers 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO))
from anomaly.bench.provenance import run_provenance  # noqa: E402
from report import save_result  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def find_model(args: argparse.Namespace, work: Path) -> tuple[Path, str, list[bytes]]:
    """(store, model name, encoded test images)."""
    from anomaly.datasets import MVTecCategory, find_categories

    data = REPO / "data"
    categories = find_categories(data) if data.is_dir() else []
    images: list[bytes] = []
    if categories:
        # Half NG parts, as the load asks: good and defective test images taken in turn.
        samples = MVTecCategory(categories[0]).test_samples()
        good = [s.path.read_bytes() for s in samples if s.defect_type == "good"]
        bad = [s.path.read_bytes() for s in samples if s.defect_type != "good"]
        images = [image for pair in zip(bad, good * (len(bad) // max(1, len(good)) + 1)) for image in pair]
    store = args.store
    name = args.model
    if store is None:
        demo_store = REPO / "runs" / "demo" / "models"
        own_store = REPO / "runs" / "service-load" / "models"
        if categories and not demo_store.is_dir() and not own_store.is_dir():
            print("training the demo model with `anomaly demo` (once, into runs/service-load) ...", flush=True)
            subprocess.run([sys.executable, "-m", "anomaly.cli.main", "demo", "--out", str(own_store.parent),
                            "--quiet"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        if demo_store.is_dir() or own_store.is_dir():
            store = demo_store if demo_store.is_dir() else own_store
        else:
            from service.testing import build_store, make_part

            print("no demo product: training a small PatchCore on generated parts ...", flush=True)
            rng = np.random.default_rng(0)
            store = work / "store"
            build_store(store, "tiny", [make_part(rng, size=256) for _ in range(12)], image_size=256)
    if name is None:
        from anomaly.store import ModelStore

        names = [n for n in ModelStore(store).names() if ModelStore(store).production(n) is not None]
        if not names:
            raise SystemExit(f"no model in production in {store}")
        name = names[0]
    if not images:
        from anomaly.imageio import encode_png
        from service.testing import make_part

        rng = np.random.default_rng(1)
        images = [encode_png(make_part(rng, size=256)) for _ in range(16)]
    return Path(store), name, images


class InProcess:
    """decode + inspect in a separate process whose threads are set as a worker's.

    Driven one call at a time over a pipe, so the in-process and the HTTP measurements can
    alternate request by request and see the same machine load.
    """

    def __init__(self, store: Path, name: str, threads: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, __file__, "--in-process-only", "--store", str(store),
                                      "--model", name], env=env, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the in-process scorer did not start")

    def score_ms(self, index: int) -> float:
        self.proc.stdin.write(f"{index}\n")
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _serve_in_process(store: Path, name: str, images: list[bytes]) -> None:
    from anomaly.imageio import decode_image
    from anomaly.inspect import inspect
    from anomaly.store import ModelStore

    bundle = ModelStore(store).load(name)
    for data in images[:3]:
        inspect(bundle, [decode_image(data)])  # warm up
    print("ready", flush=True)
    for line in sys.stdin:
        data = images[int(line) % len(images)]
        start = time.perf_counter()
        inspect(bundle, [decode_image(data)])
        print(f"{(time.perf_counter() - start) * 1000:.4f}", flush=True)


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def score(self, name: str, data: bytes, part_id: str, key: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "image/png", **({"Idempotency-Key": key} if key else {})}
        for attempt in range(2):
            try:
                self.conn.request("POST", f"/api/v1/models/{name}/score?part_id={part_id}", body=data,
                                  headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                return response.status, json.loads(body) if body else {}
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # a keep-alive connection the server closed between requests: reconnect once
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def start_server(store: Path, port: int, workers: int, work: Path) -> tuple[subprocess.Popen, Path]:
    log = work / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env["ANOMALY_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "anomaly.cli.main", "serve", "--port", str(port), "--workers", str(workers),
         "--store", str(store), "--db-url", f"sqlite:///{work / 'records.sqlite'}", "--instance", str(work / "inst")],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 600
    ready = 0
    while ready < 2 * workers:  # several answers in a row: every worker has loaded its models
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"server not ready after 600 s: {log.read_text()[-3000:]}")
        try:
            client = Client(port)
            status, _ = client.get("/readyz")
            client.close()
            ready = ready + 1 if status == 200 else 0
        except OSError:
            ready = 0
            time.sleep(0.5)
    return proc, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="model store (default: the demo store)")
    parser.add_argument("--model", help="model name (default: the first in production)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=60, help="requests of the one-client phase")
    parser.add_argument("--retry-every", type=int, default=10,
                        help="send every N-th part of the load twice with one Idempotency-Key (0: never)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--in-process-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="anomaly-load-"))
    store, name, images = find_model(args, work)
    if args.in_process_only:
        shutil.rmtree(work, ignore_errors=True)
        _serve_in_process(store, name, images)
        return 0
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    print(f"model {name!r} from {store}; {len(images)} test images; {args.workers} workers x {threads} thread(s)",
          flush=True)
    scorer = InProcess(store, name, threads)
    port = free_port()
    proc, log = start_server(store, port, args.workers, work)
    answered = 0
    errors: list[str] = []
    try:
        # -- one client: overhead, alternating with the in-process scorer -------------------------
        client = Client(port)
        seq_ms, server_total, server_work, inproc = [], [], [], []
        for i in range(3):  # warm the connection and the workers
            client.score(name, images[i % len(images)], f"warm-{i}")
            answered += 1
        for i in range(args.sequential):
            data = images[i % len(images)]
            inproc.append(scorer.score_ms(i))
            start = time.perf_counter()
            status, body = client.score(name, data, f"seq-{i}")
            seq_ms.append((time.perf_counter() - start) * 1000)
            if status == 200:
                answered += 1
                timings = body["timings_ms"]
                server_total.append(timings["total"])
                server_work.append(timings["decode"] + timings["inference"])
            else:
                errors.append(f"{status} {body.get('code')}")
        client.close()
        scorer.close()

        # -- N clients for T seconds -----------------------------------------------------------
        lock = threading.Lock()
        latencies: list[float] = []
        by_verdict: dict[str, list[float]] = {}
        load_answered = [0]
        retries = {"sent": 0, "replayed_same_record": 0, "other": 0}
        stop_at = time.monotonic() + args.seconds

        def worker(k: int) -> None:
            c = Client(port)
            i = 0
            try:
                while time.monotonic() < stop_at:
                    data = images[(k * 7 + i) % len(images)]
                    # Every --retry-every-th part is sent twice with one Idempotency-Key, as a PLC that
                    # lost the first answer would: the second must replay the first, not add a record.
                    key = f"load-{k}-{i}" if args.retry_every and i % args.retry_every == 0 else None
                    start = time.perf_counter()
                    try:
                        status, body = c.score(name, data, f"load-{k}-{i}", key)
                        elapsed = (time.perf_counter() - start) * 1000
                        if key is not None and status == 200:
                            again_status, again = c.score(name, data, f"load-{k}-{i}", key)
                            same = again_status == 200 and again.get("replayed") and \
                                again.get("inspection_id") == body.get("inspection_id")
                            with lock:
                                retries["sent"] += 1
                                retries["replayed_same_record" if same else "other"] += 1
                    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    finally:
                        i += 1
                    with lock:
                        if status == 200:
                            latencies.append(elapsed)
                            by_verdict.setdefault(body.get("verdict", "?"), []).append(elapsed)
                            load_answered[0] += 1
                        else:
                            errors.append(f"{status} {body.get('code')}")
            finally:
                c.close()

        started = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - started
        answered += load_answered[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{work / 'records.sqlite'}")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM inspections")).scalar()
    engine.dispose()

    in_p50 = percentile(inproc, 50)
    seq_p50 = percentile(seq_ms, 50)
    figures = {
        "model": name, "workers": args.workers, "threads_per_worker": threads, "clients": args.clients,
        "seconds": round(wall, 1), "in_process_p50_ms": round(in_p50, 2),
        "in_process_p99_ms": round(percentile(inproc, 99), 2),
        "sequential_http_p50_ms": round(seq_p50, 2), "sequential_http_p99_ms": round(percentile(seq_ms, 99), 2),
        "overhead_pct_p50": round((seq_p50 - in_p50) / in_p50 * 100, 2),
        "paired_overhead_pct_p50": round(percentile([(h - p) / p * 100 for h, p in zip(seq_ms, inproc)], 50), 2),
        "server_side_overhead_ms_p50": round(percentile([t - w for t, w in zip(server_total, server_work)], 50), 2),
        "server_side_overhead_pct_p50": round(percentile([(t - w) / w * 100 for t, w in zip(server_total, server_work)],
                                                         50), 2),
        "load_requests": load_answered[0], "throughput_rps": round(load_answered[0] / wall, 2),
        "load_p50_ms": round(percentile(latencies, 50), 1), "load_p99_ms": round(percentile(latencies, 99), 1),
        "load_by_verdict": {v: {"n": len(ms), "p50_ms": round(percentile(ms, 50), 1),
                                "p99_ms": round(percentile(ms, 99), 1)} for v, ms in sorted(by_verdict.items())},
        "idempotent_retries": retries,
        "errors": len(errors), "error_samples": errors[:5],
        "requests_answered": answered, "records_stored": stored,
    }
    print(f"""
sequential (1 client, {args.sequential} requests): HTTP p50 {seq_p50:.1f} ms vs in-process p50 {in_p50:.1f} ms
  -> HTTP + storage overhead at p50: {figures['overhead_pct_p50']:.1f} % (target <= 15 %); median of the
     request-by-request overhead: {figures['paired_overhead_pct_p50']:.1f} %
     server-side (answer total - decode - inference) p50: {figures['server_side_overhead_ms_p50']:.2f} ms
     = {figures['server_side_overhead_pct_p50']:.1f} % of decode + inference
load ({args.clients} clients x {wall:.0f} s, {args.workers} workers): {load_answered[0]} requests,
  throughput {figures['throughput_rps']:.2f} req/s, p50 {figures['load_p50_ms']:.0f} ms, \
p99 {figures['load_p99_ms']:.0f} ms
  by verdict: {', '.join(f"{v} n={f['n']} p50 {f['p50_ms']:.0f} p99 {f['p99_ms']:.0f} ms" for v, f in figures['load_by_verdict'].items())}
retries with the same Idempotency-Key: {retries['sent']} sent, {retries['replayed_same_record']} replayed the first answer
errors: {len(errors)}{' ' + str(errors[:3]) if errors else ''}
records stored {stored} / requests answered {answered}: {'OK' if stored == answered else 'MISMATCH'}""")
    if args.out:
        figures["provenance"] = run_provenance()
        figures["command"] = ("python benchmarks/service_load.py " + " ".join(sys.argv[1:])).strip()
        save_result(figures, args.out)
    shutil.rmtree(work, ignore_errors=True)
    ok = not errors and stored == answered and retries["other"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
