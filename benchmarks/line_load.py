"""The line loop under load and faults: web workers, job workers, PostgreSQL, Redis and Mosquitto together.

What it does, in order (everything on 127.0.0.1; PostgreSQL in a schema of its own, Redis in
a database of its own, a topic of its own, all removed at the end):

1. trains a PatchCore on the demo product's goods (``data/bracket``) into a fresh store;
2. starts ``anomaly serve --workers 3`` with the records in PostgreSQL, the training queue
   on Redis (``QUEUE_URL``) and verdicts to Mosquitto (``MQTT_HOST``), two ``anomaly
   worker`` processes, and an MQTT subscriber counting every verdict message;
3. queues an onboarding job (12 goods, ``detector=auto``) and runs ``--clients`` clients
   scoring the demo product's test parts (good and defective in turn) for ``--seconds``;
4. with ``--faults``: at 15 % of the run kills the job worker running the onboarding job
   with SIGKILL, starts a replacement and queues a second onboarding job;
   ``--redis-after`` seconds later restarts Redis (which keeps nothing on disk here) while
   that job trains; at 70 % stops Mosquitto for ``--broker-outage`` seconds under load;
5. waits for the outbox to drain and the jobs to end, then counts: successful answers,
   records in the database, MQTT messages (distinct inspection ids, and duplicates), errors
   by status; p50/p99 latency; each job's final state.

Writes ``benchmarks/results/line_load/line_load.json`` and ``summary.md`` and refreshes the
report::

    .venv/bin/python benchmarks/line_load.py --seconds 600 --clients 8 --faults
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from report import save_result  # noqa: E402
from service_load import Client, free_port, percentile  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "line_load"
POSTGRES = os.environ.get("ANOMALY_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
REDIS_DB = 7


def _pid(name: str) -> int | None:
    """The live process called ``name`` (a stopped one can linger as a zombie of its parent)."""
    for pid in subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return int(pid)
    return None


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _listening(port) != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still {'closed' if up else 'open'} after {timeout:.0f} s")
        time.sleep(0.1)


def stop_service(name: str, port: int) -> int:
    """Stop a loopback service for real (SIGTERM to its process); returns the pid it had.

    (Debian's init scripts did not stop the instances this machine started: their pid files
    did not match.)
    """
    pid = _pid(name)
    if pid is None:
        raise RuntimeError(f"no {name} process to stop")
    os.kill(pid, signal.SIGTERM)
    _wait_port(port, up=False)
    return pid


def start_service(command: list[str], name: str, port: int) -> int:
    """Start a service again with the command line it was started with; returns its new pid."""
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, up=True)
    return _pid(name)


REDIS_START = ["redis-server", "/etc/redis/redis.conf", "--save", "", "--appendonly", "no"]  # as the running one: nothing on disk
MOSQUITTO_START = ["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"]


class Subscriber:
    """Counts the verdict and alarm messages of one line."""

    def __init__(self, line: str) -> None:
        import paho.mqtt.client as mqtt

        self.ids: set[str] = set()
        self.total = 0
        self.alarms = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)  # a persistent session: QoS 1 messages wait while it is away
        self.client.on_connect = lambda c, *a: c.subscribe(f"anomaly/{line}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        body = json.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/alarm"):
                self.alarms += 1
                return
            self.total += 1
            self.ids.add(body["inspection_id"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> int:  # noqa: C901 - one run, step by step
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--job-workers", type=int, default=2)
    p.add_argument("--faults", action="store_true")
    p.add_argument("--broker-outage", type=float, default=60.0)
    p.add_argument("--redis-after", type=float, default=40.0,
                   help="seconds after the second onboarding job is queued to restart Redis (mid-job)")
    p.add_argument("--onboard-budget", type=float, default=120.0, help="seconds each onboarding job may search")
    p.add_argument("--out", type=Path, default=OUT / "line_load.json")
    args = p.parse_args()

    import sqlalchemy as sa
    from redis import Redis

    from anomaly.datasets import MVTecCategory
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into
    from service.db import InspectionRecord, OutboxMessage, TrainingJobRecord, normalize_url

    work = Path(tempfile.mkdtemp(prefix="line-load-"))
    schema = f"lineload_{uuid.uuid4().hex[:8]}"
    line = f"load-{uuid.uuid4().hex[:8]}"
    queue_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    Redis.from_url(queue_url).flushdb()
    category = MVTecCategory(REPO / "data" / "bracket")
    goods = category.train_good()
    parts = [s.path.read_bytes() for s in category.test_samples()]
    store = work / "store"
    train_into(ModelStore(store), "bracket", "patchcore", goods, TrainingOptions(detection=False), promote=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    env.update(ANOMALY_LOG_LEVEL="WARNING", ANOMALY_QUEUE_URL=queue_url, ANOMALY_MQTT_HOST="127.0.0.1",
               ANOMALY_LINE=line, ANOMALY_STATION="load", ANOMALY_SPOOL_DIR=str(work / "spool"),
               ANOMALY_ONBOARD_BUDGET_SECONDS=str(args.onboard_budget), ANOMALY_SECRET_KEY=uuid.uuid4().hex)
    common = ["--store", str(store), "--db-url", POSTGRES, "--db-schema", schema, "--instance", str(work / "inst")]
    port = free_port()
    logs = []

    def spawn(command: list[str], name: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "wb")
        logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "anomaly.cli.main", *command], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)

    server = spawn(["serve", "--port", str(port), "--workers", str(args.workers), *common], "server")
    deadline = time.monotonic() + 600
    ready = 0
    while ready < 2 * args.workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start: {(work / 'server.log').read_text()[-3000:]}")
        try:
            c = Client(port)
            ready = ready + 1 if c.get("/readyz")[0] == 200 else 0
            c.close()
        except OSError:
            time.sleep(0.5)
    workers = [spawn(["worker", *common], f"worker{i}") for i in range(args.job_workers)]
    engine = sa.create_engine(normalize_url(POSTGRES), connect_args={"options": f"-csearch_path={schema}"})
    subscriber = Subscriber(line)

    def onboard() -> str:
        import urllib.request

        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for i, path in enumerate(goods[:12]):
            body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"g{i}.png\"\r\n"
                       f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"detector\"\r\n\r\nauto\r\n"
                   f"--{boundary}--\r\n".encode())
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/models/onboarded-{uuid.uuid4().hex[:6]}"
                                         "/versions", data=body.getvalue(), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["job_id"]

    jobs = [onboard()]
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic()

    def client_loop(k: int) -> None:
        client, n = Client(port), 0
        while not stop.is_set():
            data = parts[(k * 7 + n) % len(parts)]
            t0 = time.perf_counter()
            try:
                status, body = client.score("bracket", data, f"c{k}-{n}")
            except OSError as exc:
                status, body = 0, {"code": type(exc).__name__}
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                results.append((status, elapsed, body.get("inspection_id") if status == 200 else body.get("code")))
            n += 1
        client.close()

    events: list[dict] = []

    def note(what: str) -> None:
        events.append({"at_s": round(time.monotonic() - start, 1), "event": what})

    def faults() -> None:
        if stop.wait(0.15 * args.seconds):
            return
        with engine.connect() as conn:
            row = conn.execute(sa.select(TrainingJobRecord.pid, TrainingJobRecord.status)
                               .where(TrainingJobRecord.id == jobs[0])).first()
        victim = next((w for w in workers if row is not None and w.pid == row.pid), None)
        if victim is None:
            note(f"onboarding job not running in a worker at 15 % (status {row and row.status}); no worker killed")
        else:
            os.killpg(victim.pid, signal.SIGKILL)
            note(f"SIGKILL to job worker pid {victim.pid} running the first onboarding job")
            workers.append(spawn(["worker", *common], "worker-replacement"))
            note("replacement worker started")
        jobs.append(onboard())
        note("second onboarding job queued")
        if stop.wait(args.redis_after):  # while the second job trains
            return
        with engine.connect() as conn:
            second = conn.execute(sa.select(TrainingJobRecord.status).where(TrainingJobRecord.id == jobs[1])).scalar()
        old = stop_service("redis-server", 6379)
        new = start_service(REDIS_START, "redis-server", 6379)
        note(f"Redis restarted (pid {old} -> {new}; it keeps nothing on disk) while the second job was {second}")
        if stop.wait(max(0.0, 0.70 * args.seconds - (time.monotonic() - start))):
            return
        old = stop_service("mosquitto", 1883)
        note(f"Mosquitto stopped (pid {old}) for {args.broker_outage:.0f} s")
        stop.wait(args.broker_outage)
        new = start_service(MOSQUITTO_START, "mosquitto", 1883)
        note(f"Mosquitto started again (pid {new})")

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(args.clients)]
    fault_thread = threading.Thread(target=faults) if args.faults else None
    for t in threads + ([fault_thread] if fault_thread else []):
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    if fault_thread:
        fault_thread.join()
        if not _listening(1883):  # never leave the machine without its broker
            start_service(MOSQUITTO_START, "mosquitto", 1883)
        if not _listening(6379):
            start_service(REDIS_START, "redis-server", 6379)
    load_seconds = time.monotonic() - start

    def job_states() -> list[dict]:
        """Each job as the API answers a poll (a poll is also what notices a job the queue lost)."""
        out = []
        for job_id in jobs:
            c = Client(port)
            status, raw = c.get(f"/api/v1/jobs/{job_id}")
            c.close()
            body = json.loads(raw) if status == 200 else {}
            out.append({k: body.get(k) for k in ("job_id", "status", "error_code", "message", "version")})
        return out

    # Drain: the outbox empties and the jobs end.
    drained_at = None
    until = time.monotonic() + 400
    while time.monotonic() < until:
        with engine.connect() as conn:
            pending = conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.sent_at.is_(None)))
        if pending == 0 and drained_at is None:
            drained_at = time.monotonic() - start
        if pending == 0 and all(j["status"] not in ("queued", "running") for j in job_states()):
            break
        time.sleep(2.0)
    time.sleep(3.0)  # the last acknowledged messages reach the subscriber
    final_jobs = job_states()
    with engine.connect() as conn:
        records = conn.scalar(sa.select(sa.func.count()).select_from(InspectionRecord)
                              .where(InspectionRecord.model_name == "bracket"))
        sent = conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)
                           .where(OutboxMessage.sent_at.is_not(None), OutboxMessage.topic.like("%/verdict")))
        unsent = conn.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)
                             .where(OutboxMessage.sent_at.is_(None)))
    subscriber.close()
    for proc in [server, *workers]:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in [server, *workers]:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for log in logs:
        log.close()
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
    Redis.from_url(queue_url).flushdb()

    ok = [r for r in results if r[0] == 200]
    answered_ids = {r[2] for r in ok}
    errors: dict[str, int] = {}
    for status, _, code in results:
        if status != 200:
            errors[f"{status} {code}"] = errors.get(f"{status} {code}", 0) + 1
    latencies = [r[1] for r in ok]
    doc = {
        "what": "line loop under load" + (" and faults" if args.faults else ""),
        "command": "python benchmarks/line_load.py " + " ".join(sys.argv[1:]),
        "settings": {"seconds": args.seconds, "clients": args.clients, "web_workers": args.workers,
                     "job_workers": args.job_workers, "faults": args.faults, "broker_outage_s": args.broker_outage,
                     "onboard_budget_s": args.onboard_budget, "database": "PostgreSQL", "queue": "Redis (RQ)",
                     "broker": "Mosquitto"},
        "requests": len(results), "answers_200": len(ok), "errors": errors,
        "throughput_per_s": round(len(ok) / load_seconds, 2),
        "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
        "records": records, "mqtt_messages_received": subscriber.total, "mqtt_distinct_inspections": len(subscriber.ids),
        "mqtt_duplicates": subscriber.total - len(subscriber.ids),
        "answers_without_message": len(answered_ids - subscriber.ids), "outbox_sent": sent, "outbox_unsent": unsent,
        "outbox_drained_at_s": None if drained_at is None else round(drained_at, 1), "drift_alarms": subscriber.alarms,
        "jobs": final_jobs, "events": events, "load_seconds": round(load_seconds, 1),
        "provenance": {**run_provenance(), "commit": git_commit(REPO)},
    }
    save_result(doc, args.out)
    print(json.dumps({k: v for k, v in doc.items() if k != "provenance"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
