"""One measuring process per system, model and setting, driven over a pipe.

Each system (ours, anomalib) fits and scores in its own process, started fresh for every
(category, model, setting) and seed, so that its peak resident memory is its own (imports, fit and
scoring of that model alone) and the two never share an interpreter, allocator or thread
pool. The coordinator (:mod:`anomaly.bench.run`) sends one JSON request per line on the
worker's standard input and reads one JSON reply per line; every timing is taken inside
the worker, around the measured call only, so the pipe costs nothing that is reported.

Requests (``op``): ``hello``, ``fit``, ``warmup``, ``score``, ``finish``,
``backbone_check`` (anomalib only) and ``quit``. A failure is answered with
``{"error": ..., "error_type": ..., "typed": ...}`` (``typed``: one of our own typed errors,
:class:`anomaly.errors.AnomalyError`, such as a training set a detector refuses) and the
worker goes on. A test image that our detector cannot align to its template
(:class:`anomaly.errors.AlignmentError`) is not a failure: it is the verdict the service
gives such a part (``ALIGNMENT_FAILED``, the part is rejected), answered with
``"score": null`` and ``"refused"``, and ranked above every scored image in the image AUROC.

Run as ``python -m anomaly.bench.worker --system ours|anomalib``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from anomaly.datasets import Sample
from anomaly.errors import AlignmentError, AnomalyError


class BenchError(AnomalyError):
    """A benchmark worker failed or answered with an error."""

    code = "bench_failed"


class WorkerRequestError(BenchError):
    """A worker, still running, answered one request with an error.

    Attributes:
        system: ``"ours"`` or ``"anomalib"``.
        op: The request that failed.
        error: ``"ErrorType: message"`` as the worker gave it.
        error_type: The exception's class name.
        typed: Whether it is one of our own typed errors (:class:`AnomalyError`): a
            detector refusing its input (a training set it cannot align, images of mixed
            sizes), which the coordinator records for the case, against a bug or a crash,
            which stops the run.
    """

    def __init__(self, message: str, *, system: str, op: str, error: str, error_type: str | None,
                 typed: bool) -> None:
        super().__init__(message)
        self.system, self.op, self.error, self.error_type, self.typed = system, op, error, error_type, typed


class System(Protocol):
    """What the worker needs from a system under test."""

    name: str

    def versions(self) -> dict[str, str]: ...

    def fit(self, model: str, params: dict[str, Any], train: list[str], bundle_dir: Path) -> dict[str, Any]: ...

    def score(self, path: str) -> tuple[float, np.ndarray, dict[str, float | None]]: ...


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class AnonPeak:
    """Peak of the process's anonymous resident memory (``RssAnon``), sampled by a thread.

    ``ru_maxrss`` also counts the pages of shared libraries mapped in, which depends on how
    warm the page cache is (torch's CUDA libraries alone are hundreds of MB); ``RssAnon`` is
    the memory the program itself allocated. Sampled every ``interval`` seconds, so a spike
    shorter than that can be missed; ``peak_rss_mb`` stays the reference figure.
    """

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.peak_mb = self.read_mb() or 0.0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anon-peak", daemon=True)
        self._thread.start()

    @staticmethod
    def read_mb() -> float | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            value = self.read_mb()
            if value is None:
                return
            self.peak_mb = max(self.peak_mb, value)

    def sample(self) -> float:
        """The peak so far, including the current value."""
        value = self.read_mb()
        if value is not None:
            self.peak_mb = max(self.peak_mb, value)
        return round(self.peak_mb, 1)


class _Accumulator:
    """Scores, labels and compact maps of the scored test images, for the metrics.

    A system whose model gives no anomaly map (anomalib's GANomaly) passes ``None``: its
    pixel metrics are then ``None`` with a note saying why.
    """

    def __init__(self) -> None:
        self.scores: list[float | None] = []
        self.labels: list[int] = []
        self.types: list[str] = []
        self.stored: list[tuple[np.ndarray, np.ndarray | None, tuple[int, int]]] = []
        self.masks_available = True
        self.maps_available = True
        self.total_pixels = 0

    def add(self, sample: Sample, score: float | None, amap: np.ndarray | None) -> None:
        """One scored test image; ``score`` ``None``: refused (could not align), with no map."""
        self.scores.append(None if score is None else float(score))
        self.labels.append(int(sample.label))
        self.types.append(sample.defect_type)
        if score is None:
            return
        if amap is None:
            self.maps_available = False
            return
        mask = sample.read_mask(amap.shape)
        if mask is None:
            self.masks_available = False
        self.total_pixels += amap.size
        self.stored.append((amap.astype(np.float16), None if mask is None else np.packbits(mask), amap.shape))

    def metrics(self) -> dict[str, Any]:
        from anomaly.evaluate import _pixel_report
        from anomaly.metrics import image_auroc, rank_refused_above

        refused = [i for i, s in enumerate(self.scores) if s is None]
        # A refused part is rejected by the service (ALIGNMENT_FAILED): it ranks first.
        ranked = rank_refused_above(self.scores)
        out: dict[str, Any] = {"image_auroc": image_auroc(self.labels, ranked) if self.scores else None,
                               "n_refused": len(refused),
                               "n_refused_good": sum(1 for i in refused if self.labels[i] == 0)}
        if not self.maps_available:
            out.update({"pixel_auroc": None, "aupro": None, "pixel_metrics_note": "the model gives no anomaly map"})
        elif not self.stored:
            out.update({"pixel_auroc": None, "aupro": None, "pixel_metrics_note": "no image was scored"})
        else:
            out.update(_pixel_report(self.stored, self.masks_available, self.total_pixels))
            if refused:
                out["pixel_metrics_note"] += f"; over the {len(self.stored)} images scored, {len(refused)} refused"
        return out


def make_system(name: str) -> System:
    if name == "ours":
        from anomaly.bench.ours import OursSystem

        return OursSystem()
    if name == "anomalib":
        from anomaly.bench.peer_anomalib import AnomalibSystem

        return AnomalibSystem()
    raise BenchError(f"unknown system {name!r}; known: ours, anomalib")


def serve(system_name: str) -> int:
    """Answer requests on stdin until ``quit`` or end of input."""
    # Replies go to the original stdout; anything a library prints goes to stderr (the log).
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    anon = AnonPeak()
    system = make_system(system_name)
    import_rss = peak_rss_mb()
    import_anon = anon.sample()
    acc = _Accumulator()
    fit_rss: float | None = None
    fit_anon: float | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        try:
            if op == "hello":
                import torch

                reply: dict[str, Any] = {"system": system.name, "versions": system.versions(), "pid": os.getpid(),
                                         "torch_threads": torch.get_num_threads(), "import_rss_mb": round(import_rss, 1)}
            elif op == "fit":
                reply = system.fit(msg["model"], msg["params"], msg["train"], Path(msg["bundle_dir"]))
                fit_rss = peak_rss_mb()
                fit_anon = anon.sample()
                reply["fit_peak_rss_mb"] = round(fit_rss, 1)
            elif op == "warmup":
                try:
                    system.score(msg["path"])
                except AlignmentError:
                    pass  # a part refused warms up the same code up to the refusal
                reply = {"ok": True}
            elif op == "score":
                sample = Sample(Path(msg["path"]), int(msg["label"]), msg["defect_type"],
                                Path(msg["mask"]) if msg.get("mask") else None)
                start = time.perf_counter()
                try:
                    score, amap, timings = system.score(msg["path"])
                except AlignmentError as exc:  # the service's ALIGNMENT_FAILED verdict: rejected
                    acc.add(sample, None, None)
                    reply = {"score": None, "refused": f"{type(exc).__name__}: {exc}",
                             "e2e_ms": (time.perf_counter() - start) * 1e3}
                else:
                    acc.add(sample, score, amap)
                    reply = {"score": float(score), **timings}
            elif op == "finish":
                reply = acc.metrics()
                reply["peak_rss_mb"] = round(peak_rss_mb(), 1)
                reply["fit_peak_rss_mb"] = None if fit_rss is None else round(fit_rss, 1)
                reply["import_rss_mb"] = round(import_rss, 1)
                reply["peak_anon_mb"] = anon.sample()
                reply["fit_peak_anon_mb"] = fit_anon
                reply["import_anon_mb"] = import_anon
            elif op == "backbone_check":
                reply = system.backbone_check(msg["backbone"], msg["layers"], msg["path"], msg["image_size"])  # type: ignore[attr-defined]
            elif op == "quit":
                replies.write(json.dumps({"ok": True}) + "\n")
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 - reported to the coordinator, which decides
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__,
                     "typed": isinstance(exc, AnomalyError)}
        replies.write(json.dumps(reply, default=_json_default) + "\n")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


class WorkerClient:
    """The coordinator's handle on one worker process.

    Args:
        python: Interpreter to run the worker with (the peer may live in another venv).
        system: ``"ours"`` or ``"anomalib"``.
        log_path: File receiving the worker's standard error.
        code_root: Folder holding the ``anomaly`` package that the coordinator runs, put
            first on the worker's ``PYTHONPATH`` so both sides run the same code.
        greet: Wait for the worker's ``hello`` (its imports done) before returning. With
            ``False`` the process starts importing and :meth:`greet` waits for it later, so
            two workers can import at once (nothing is timed while they import).
    """

    def __init__(self, python: str, system: str, log_path: Path, code_root: Path, *, greet: bool = True) -> None:
        self.system = system
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(code_root)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("TQDM_DISABLE", "1")
        env.setdefault("PYTHONWARNINGS", "ignore")
        self._log = open(log_path, "ab")
        self._proc = subprocess.Popen(
            [python, "-m", "anomaly.bench.worker", "--system", system],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, bufsize=1,
        )
        self.hello: dict[str, Any] = {}
        if greet:
            self.greet()

    def greet(self) -> dict[str, Any]:
        """Wait for the worker's imports and keep its ``hello`` (system, versions, pid)."""
        if not self.hello:
            self.hello = self.call({"op": "hello"})
        return self.hello

    def send(self, msg: dict[str, Any]) -> None:
        """Send one request without waiting; :meth:`receive` reads its reply."""
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone: receive() says so, with its log

    def receive(self, op: str) -> dict[str, Any]:
        """Read the reply to the request ``op`` sent last.

        Raises:
            WorkerRequestError: the worker answered with an error.
            BenchError: the worker died.
        """
        try:
            line = self._proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            raise BenchError(f"{self.system} worker stopped during {op!r}; its log ends with:\n" + self._log_tail())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerRequestError(f"{self.system} worker failed on {op!r}: {reply['error']} (log: {self.log_path})",
                                     system=self.system, op=op, error=str(reply["error"]),
                                     error_type=reply.get("error_type"), typed=bool(reply.get("typed")))
        return reply

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply.

        Raises:
            WorkerRequestError: the worker answered with an error.
            BenchError: the worker died.
        """
        self.send(msg)
        return self.receive(str(msg.get("op")))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.call({"op": "quit"})
            except BenchError:
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._log.close()

    def _log_tail(self, n: int = 2000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anomaly.bench.worker", description=__doc__)
    parser.add_argument("--system", required=True, choices=["ours", "anomalib"])
    args = parser.parse_args(argv)
    return serve(args.system)


if __name__ == "__main__":
    sys.exit(main())
