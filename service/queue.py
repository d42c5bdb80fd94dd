"""Training, onboarding and adding goods on a Redis queue (RQ), run by ``anomaly worker`` processes.

With ``QUEUE_URL`` set (``redis://127.0.0.1:6379/0``), a web worker never trains: it
records the job's row, writes the uploaded images and the request to the job's spool
folder (``SPOOL_DIR``, default ``<instance>/jobs``; on storage every machine shares, like
the model store), and enqueues the job. Any ``anomaly worker`` process (on this machine or
another with the same database, store and spool) takes it, trains through the one training
spine (:meth:`service.jobs.TrainingJobs._run`), writes the stage and progress to the job's row
(so every web worker answers polls), and deletes the spool. A web worker restart loses
nothing: the job waits in Redis.

A worker killed mid-job leaves no version half-written (the store writes a version aside
and renames it into place; :func:`clean_staging` removes what a killed writer left aside)
and its job is marked failed with the reason: by the next worker that starts, and by any
poll that finds the job's worker process gone (:meth:`QueuedJobs.get`). Jobs are not
retried: a training that killed its worker would likely kill the next one.

Without ``QUEUE_URL`` the web workers train in their own threads, as before, and say so at
start (:class:`service.jobs.TrainingJobs`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.db import TrainingJobRecord
from service.errors import QueueUnavailableError
from service.jobs import ACTIVE, TrainingJobs, TrainingRequest

log = logging.getLogger(__name__)

QUEUE_NAME = "anomaly-training"
#: Seconds a job may run before RQ stops it (onboarding has its own budget well inside).
JOB_TIMEOUT = 6 * 3600

#: The application of this worker process (set by :func:`work`), which jobs run in.
_APP = None


def _connection(url: str):
    from redis import Redis

    return Redis.from_url(url)


def spool(folder: Path, req: TrainingRequest) -> None:
    """Write a request's images and everything else it holds to ``folder`` (created)."""
    folder.mkdir(parents=True)
    for i, data in enumerate(req.images):
        (folder / f"{i:05d}.img").write_bytes(data)
    meta = {k: v for k, v in asdict(req).items() if k not in ("images", "options")}
    meta["options"] = asdict(req.options)
    (folder / "request.json").write_text(json.dumps(meta))


def unspool(folder: Path) -> TrainingRequest:
    """The request :func:`spool` wrote."""
    from anomaly.training import TrainingOptions

    meta = json.loads((folder / "request.json").read_text())
    images = [p.read_bytes() for p in sorted(folder.glob("*.img"))]
    return TrainingRequest(**{**meta, "options": TrainingOptions(**meta["options"]), "images": images})


class QueuedJobs(TrainingJobs):
    """:class:`~service.jobs.TrainingJobs` whose jobs run in ``anomaly worker`` processes (see the module docstring).

    Args:
        db, store, max_active_per_model, max_active_per_client, onboard_budget_seconds: As
            for :class:`~service.jobs.TrainingJobs`.
        url: Redis URL of the queue.
        spool_dir: Folder of the jobs' spooled requests (shared by every machine).
    """

    runs_here = False

    def __init__(self, db, store, *, url: str, spool_dir: str | os.PathLike, **limits: Any) -> None:
        super().__init__(db, store, max_workers=1, **limits)
        self.url = url
        self.spool_dir = Path(spool_dir)
        self._executor.shutdown(wait=False)  # never used: web workers do not train

    def _start(self, job: TrainingJobRecord, req: TrainingRequest) -> None:
        from rq import Queue

        folder = self.spool_dir / job.id
        try:
            spool(folder, req)
            Queue(QUEUE_NAME, connection=_connection(self.url)).enqueue(
                run_queued, job.id, str(folder), job_id=job.id, job_timeout=JOB_TIMEOUT, result_ttl=86400,
                failure_ttl=7 * 86400)
        except Exception as exc:  # noqa: BLE001 - Redis or the spool away: the job fails at once, visibly
            shutil.rmtree(folder, ignore_errors=True)
            message = f"the job could not be queued: {type(exc).__name__}: {exc}"
            self._fail(job.id, "queue_unavailable", message)
            raise QueueUnavailableError(message + "; try again when the queue is back") from None
        finally:
            req.images.clear()

    def get(self, job_id: str) -> dict[str, Any]:
        answer = super().get(job_id)
        if answer["status"] in ACTIVE:
            reason = self._lost(job_id)
            if reason:
                self._fail(job_id, "worker_exited", reason)
                answer = super().get(job_id)
        return answer

    def _lost(self, job_id: str) -> str | None:
        """Why an active job will never finish (its RQ job failed or vanished), or None."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(job_id, connection=_connection(self.url))
        except NoSuchJobError:
            return "the job is no longer on the queue (Redis lost it, or it was removed)"
        except Exception:  # noqa: BLE001 - Redis away: nothing can be said now
            return None
        status = job.get_status(refresh=True)
        if status in ("failed", "stopped", "canceled"):
            result = job.latest_result()
            return f"the worker running this job stopped ({status}): {(result.exc_string if result else '')[-500:]}"
        return None


def run_queued(job_id: str, folder: str) -> None:
    """The RQ job: train the spooled request in this worker process's application."""
    app = _APP
    if app is None:
        raise RuntimeError("run_queued runs in `anomaly worker`, whose application is set by service.queue.work")
    jobs: TrainingJobs = app.extensions["anomaly_jobs"]
    with jobs.db.session() as session:  # where this job runs, for polls that check the process
        session.execute(sa.update(TrainingJobRecord).where(TrainingJobRecord.id == job_id)
                        .values(host=socket.gethostname()[:255], pid=os.getpid()))
    try:
        jobs._run(job_id, unspool(Path(folder)))  # marks the job succeeded or failed, with the reason
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fail_abandoned(app) -> int:
    """Mark failed the active jobs whose worker process on this host is gone; returns how many."""
    from service.jobs import _alive

    jobs: TrainingJobs = app.extensions["anomaly_jobs"]
    host = socket.gethostname()[:255]
    with jobs.db.session() as session:
        rows = session.scalars(sa.select(TrainingJobRecord).where(TrainingJobRecord.status == "running",
                                                                  TrainingJobRecord.host == host)).all()
        dead = [r.id for r in rows if not _alive(r.pid)]
    for job_id in dead:
        jobs._fail(job_id, "worker_exited", "the worker process running this job exited (found at worker start)")
    return len(dead)


def clean_staging(store) -> int:
    """Remove the staging folders of versions a killed writer left aside (never a version); returns how many."""
    removed = 0
    root = Path(store.root)
    if not root.is_dir():
        return 0
    for folder in root.glob("*/.new-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        from service.jobs import _alive

        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def work(app, *, burst: bool = False) -> int:
    """Run a worker in this process until stopped (or, with ``burst``, until the queue is empty).

    Args:
        app: This process's application (``create_app(preload=False)``): its database, store
            and settings are the jobs'.
        burst: Stop once the queue is empty.
    """
    global _APP
    from rq import Queue, SimpleWorker

    url = app.config.get("QUEUE_URL")
    if not url:
        raise RuntimeError("anomaly worker needs QUEUE_URL (e.g. ANOMALY_QUEUE_URL=redis://127.0.0.1:6379/0)")
    _APP = app
    failed, cleaned = fail_abandoned(app), clean_staging(app.extensions["anomaly_store"])
    log.info("worker on %s: %d abandoned job(s) marked failed, %d staging folder(s) removed", url, failed, cleaned)
    connection = _connection(url)
    # SimpleWorker: the job runs in this process (no fork per job), so killing the worker kills its job.
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection)
    worker.work(burst=burst, with_scheduler=False)
    return 0


__all__ = ["QUEUE_NAME", "QueuedJobs", "clean_staging", "fail_abandoned", "run_queued", "spool", "unspool", "work"]
