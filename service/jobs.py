"""Background training: a new model version from uploaded good images.

A job is a row in ``training_jobs``; the worker that accepted the upload trains in a
thread of its own and writes the job's stage and progress to that row, so any worker can
answer a poll. The images were decoded once in the request (a bad image fails the
request, and no job is made); the job keeps their bytes in memory until it ends.

A job whose worker died is reported as failed the next time it is read on that host.

This is the fallback without a queue; with ``QUEUE_URL`` the jobs run in ``anomaly worker``
processes instead (:mod:`service.queue`), and web workers never train.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from anomaly.errors import AnomalyError
from anomaly.progress import Listener, listen
from anomaly.store import ModelStore
from anomaly.training import TrainingOptions
from service.db import Database, TrainingJobRecord, iso, new_id, utcnow
from service.errors import BadRequestError, NotFoundError, TooManyJobsError
from service.limits import check_room

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
#: The detector name that asks for onboarding: the job chooses the model (anomaly.onboarding).
AUTO = "auto"
#: The detector name that asks to teach an existing model more goods (anomaly.adding).
ADD = "add"
#: The detector name of a scoring job: judge and record parts with a stored version
#: (:func:`service.scoring.score_job_parts`), on the queue like training.
SCORE = "score"
#: Goods an onboarding job needs (each candidate is fitted on some and judged on the others).
ONBOARD_MIN_IMAGES = 4


def check_training(detector: str, params: dict[str, Any], n_images: int) -> None:
    """Refuse a training request before a job is queued: unknown detector or parameter, too few images.

    Raises:
        BadRequestError: what is wrong, in words.
    """
    from anomaly.detectors.registry import check_params
    from anomaly.errors import InvalidParameterError, UnknownDetectorError

    if detector == SCORE:
        extra = set(params) - {"version", "part_ids"}
        if extra:
            raise BadRequestError(f"a scoring job takes a version and part ids only, not {', '.join(sorted(extra))}")
        if n_images < 1:
            raise BadRequestError("a scoring job needs at least one image (fields 'images')")
        return
    if detector == AUTO:
        if params:
            raise BadRequestError("onboarding (detector 'auto') chooses the parameters itself; choose a detector "
                                  "to set them")
        if n_images < ONBOARD_MIN_IMAGES:
            raise BadRequestError(f"onboarding needs at least {ONBOARD_MIN_IMAGES} good images, got {n_images}")
        return
    if detector == ADD:
        if params:
            raise BadRequestError("adding goods (detector 'add') keeps the stored model's parameters")
        return
    try:
        check_params(detector, params)  # names and values, without building a backbone
    except (UnknownDetectorError, InvalidParameterError) as exc:
        raise BadRequestError(str(exc)) from None


@dataclass
class TrainingRequest:
    """What a job trains.

    Attributes:
        name: Model name (new or existing).
        detector: Registry name of the detector, :data:`AUTO` to onboard (the job chooses), or
            :data:`ADD` to teach the existing model these goods (a new version).
        params: Detector hyper-parameters.
        images: Encoded good images.
        options: Training and calibration options (as ``anomaly train`` takes them).
        promote: Put the new version in production when done (the first version of a
            model is not promoted unless asked: it is published from the onboard page).
        client: Who asked.
        extra_images: How many of ``images`` came from false-alarm feedback.
    """

    name: str
    detector: str
    params: dict[str, Any]
    images: list[bytes]
    options: TrainingOptions
    promote: bool
    client: str
    extra_images: int = 0


def _training_of(name: str) -> tuple[Any, Any]:
    """Clauses of the training jobs (not the scoring jobs) of model ``name``."""
    return TrainingJobRecord.model_name == name, TrainingJobRecord.detector != SCORE


def job_answer(job: TrainingJobRecord) -> dict[str, Any]:
    """The JSON form of a job."""
    return {
        "job_id": job.id, "model": job.model_name, "detector": job.detector, "params": job.params,
        "n_images": job.n_images, "promote": job.promote, "status": job.status, "stage": job.stage,
        "progress": round(job.progress, 3), "message": job.message, "error_code": job.error_code,
        "version": job.version, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "client": job.client,
    }


class TrainingJobs:
    """Runs training jobs in background threads of this worker.

    Args:
        db: Where job rows live.
        store: Where new versions go.
        max_workers: Jobs trained at once in this worker.
        max_active_per_model: Queued and running jobs allowed for one model, across workers.
        max_active_per_client: Queued and running jobs allowed for one client, across workers.
        onboard_budget_seconds: Search time of an onboarding job.
    """

    def __init__(self, db: Database, store: ModelStore, *, max_workers: int = 1, max_active_per_model: int = 1,
                 max_active_per_client: int = 3, onboard_budget_seconds: float = 600.0) -> None:
        self.db = db
        self.store = store
        self.max_active_per_model = int(max_active_per_model)
        self.max_active_per_client = int(max_active_per_client)
        self.onboard_budget_seconds = float(onboard_budget_seconds)
        #: The archive folder, where the promotion gate finds its regression set (set by the app).
        self.archive_root = "archive"
        #: The application a scoring job records through (set by the app).
        self.app = None
        self.host = socket.gethostname()[:255]
        self._executor = ThreadPoolExecutor(max_workers=max(1, int(max_workers)), thread_name_prefix="training")

    #: Whether jobs run in this process (here: in its threads).
    runs_here = True

    def submit(self, req: TrainingRequest) -> dict[str, Any]:
        """Record a queued job and start it; returns the job's JSON form.

        Raises:
            TooManyJobsError: the model or the client already has as many queued or running
                jobs as allowed (429; a fuzzing client once queued 345 jobs and 568 versions).
            StoreFullError: the model or the store has no room for another version (507).
        """
        if req.detector != SCORE:  # a scoring job writes no version and may run beside training
            check_room(req.name)
            if self._active(*_training_of(req.name)) >= self.max_active_per_model:
                raise TooManyJobsError(f"model {req.name!r} already has {self.max_active_per_model} training "
                                       "job(s) queued or running; wait for it to finish")
        if self._active(TrainingJobRecord.client == req.client) >= self.max_active_per_client:
            raise TooManyJobsError(f"{req.client!r} already has {self.max_active_per_client} training jobs queued "
                                   "or running; wait for one to finish")
        job = TrainingJobRecord(
            id=new_id(), model_name=req.name, detector=req.detector, params=req.params, n_images=len(req.images),
            promote=req.promote, status="queued", stage="queued", progress=0.0, created_at=utcnow(),
            # The process that runs it: this one, or (on the queue) none yet: pid 0 until a worker takes it.
            host=self.host, pid=os.getpid() if self.runs_here else 0, client=req.client,
            message=(f"{req.extra_images} image(s) from false-alarm feedback added" if req.extra_images else None),
        )
        with self.db.session() as s:
            s.add(job)
        self._start(job, req)
        return job_answer(job)

    def _start(self, job: TrainingJobRecord, req: TrainingRequest) -> None:
        """Run a recorded job: here, in a thread of this worker (:class:`service.queue.QueuedJobs`: on the queue)."""
        self._executor.submit(self._run, job.id, req)

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's JSON form.

        Raises:
            NotFoundError: no such job.
        """
        with self.db.session() as s:
            job = s.get(TrainingJobRecord, job_id[:36])
            if job is None:
                raise NotFoundError(f"no training job with id {job_id[:40]!r}")
            if job.status in ACTIVE and job.host == self.host and not _alive(job.pid):
                job.status, job.stage, job.finished_at = "failed", "failed", utcnow()
                job.error_code, job.message = "worker_exited", "the worker process running this job exited"
            return job_answer(job)

    def list(self, *, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest jobs first."""
        stmt = sa.select(TrainingJobRecord).order_by(TrainingJobRecord.created_at.desc()).limit(limit)
        if model:
            stmt = stmt.where(TrainingJobRecord.model_name == model)
        with self.db.session() as s:
            return [job_answer(j) for j in s.scalars(stmt).all()]

    def active_for(self, name: str) -> bool:
        """Whether a training job (not a scoring job) for ``name`` is queued or running."""
        return self._active(*_training_of(name)) > 0

    def _active(self, *where: Any) -> int:
        """Queued and running jobs (in any worker) that match the clauses ``where``."""
        with self.db.session() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(TrainingJobRecord).where(
                TrainingJobRecord.status.in_(ACTIVE), *where)) or 0)

    def shutdown(self, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)

    # -- the job itself ----------------------------------------------------------------------
    def _update(self, job_id: str, **fields: Any) -> None:
        with self.db.session() as s:
            s.execute(sa.update(TrainingJobRecord).where(TrainingJobRecord.id == job_id).values(**fields))

    def _listener(self, job_id: str, every: float = 0.5) -> Listener:
        """A progress listener writing the current step and its fraction to the job's row (at most every 0.5 s)."""
        last = [0.0]

        def report(step: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < every and done not in (0, total):
                return
            last[0] = now
            self._update(job_id, stage=(f"{step} {done}/{total}" if total else step)[:128],
                         progress=round(done / total, 3) if total else 0.0)

        return report

    @contextmanager
    def _ending(self, job_id: str, req: TrainingRequest, what: str) -> Iterator[None]:
        """Around a job's work: any error ends the job failed with its reason (never left "running"),
        and the uploaded images are let go either way."""
        try:
            yield
        except AnomalyError as exc:
            self._fail(job_id, exc.code, str(exc))
        except Exception:  # noqa: BLE001 - a job must end failed, never hang in "running"
            log.exception("%s job %s failed", what, job_id)
            self._fail(job_id, "internal_error", f"{what} failed unexpectedly; the server log has the details")
        finally:
            req.images.clear()

    def _run(self, job_id: str, req: TrainingRequest) -> None:
        from anomaly.training import train_into

        if req.detector == SCORE:
            return self._score(job_id, req)
        start = time.perf_counter()
        with self._ending(job_id, req, "training"):
            self._update(job_id, status="running", stage="fitting", progress=0.1, started_at=utcnow())
            notes = {"trained_by": "service", "job_id": job_id, "client": req.client,
                     "feedback_images": req.extra_images}
            # A first version goes into production as before; any other only through its gate.
            first = self.store.production(req.name) is None
            with listen(self._listener(job_id)):
                if req.detector == AUTO:
                    from anomaly.onboarding import onboard

                    done = onboard(self.store, req.name, req.images, target_frr=req.options.target_frr,
                                   seed=req.options.seed, budget_seconds=self.onboard_budget_seconds,
                                   promote=req.promote and first, notes=notes)
                    version = done.version.version
                elif req.detector == ADD:
                    from anomaly.adding import add_goods

                    version = add_goods(self.store, req.name, req.images, seed=req.options.seed,
                                        promote=req.promote and first, notes=notes).version.version
                else:
                    version = train_into(self.store, req.name, req.detector, req.images, req.options, notes,
                                         params=req.params, source="upload to the service",
                                         promote=req.promote and first).version
            refused = ""
            if req.promote and not first:
                from service.gates import GateFailedError

                try:
                    self._gated_promote(job_id, req, version)
                except GateFailedError as exc:  # trained and stored, not in production: the job says why
                    refused = f"; {exc}"
            seconds = time.perf_counter() - start
            self._update(job_id, status="succeeded", stage="done", progress=1.0, version=version,
                         finished_at=utcnow(), message=f"version {version} trained in {seconds:.1f} s{refused}"[:2000])
            log.info("training job %s: %s version %s in %.1f s", job_id, req.name, version, seconds)

    def _score(self, job_id: str, req: TrainingRequest) -> None:
        """A scoring job: every part judged and recorded under the job's id as batch id, then the counts."""
        from service.scoring import score_job_parts

        start = time.perf_counter()
        with self._ending(job_id, req, "scoring"):
            self._update(job_id, status="running", stage="scoring", progress=0.0, started_at=utcnow())
            if self.app is None:
                raise RuntimeError("a scoring job needs the application (set by create_app)")
            with self.app.app_context():
                version, counts = score_job_parts(self.app, req.name, req.params.get("version"), req.images,
                                                  part_ids=req.params.get("part_ids"), batch_id=job_id,
                                                  client=req.client, report=self._listener(job_id))
            judged = {k: v for k, v in counts.items() if v and k != "bad_image"}
            message = (f"{sum(judged.values())} part(s) judged and recorded in {time.perf_counter() - start:.1f} s ("
                       + ", ".join(f"{v} {k}" for k, v in judged.items()) + ")"
                       + (f"; {counts['bad_image']} bad image(s) skipped" if counts["bad_image"] else "")
                       + f"; the records: GET /api/v1/inspections?batch_id={job_id}")
            self._update(job_id, status="succeeded", stage="done", progress=1.0, version=version,
                         finished_at=utcnow(), message=message[:2000])
            log.info("scoring job %s: %s", job_id, message)

    def _gated_promote(self, job_id: str, req: TrainingRequest, version: int) -> None:
        """Promote a trained version through its gate (service.gates); a refusal fails the job with the reason."""
        from service.archive import Archive
        from service.gates import gated_promote

        self._update(job_id, stage="promotion gate", progress=0.95)
        gated_promote(self.db, Archive(self.archive_root, "all"), self.store, req.name, version,
                      self.store.load(req.name, version), force=False, by=req.client)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        try:
            self._update(job_id, status="failed", stage="failed", error_code=code, message=message,
                         finished_at=utcnow())
        except Exception:  # noqa: BLE001
            log.exception("could not record the failure of training job %s", job_id)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (0: a queued job no worker has taken yet)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def feedback_training_images(db: Database, archive_root: str, name: str) -> list[bytes]:
    """Archived images of this model's parts marked as false alarms (good parts, so trainable)."""
    from service.archive import Archive
    from service.db import FeedbackRecord, InspectionRecord

    archive = Archive(archive_root, "all")
    stmt = (sa.select(InspectionRecord.archive_path).join(FeedbackRecord)
            .where(InspectionRecord.model_name == name, FeedbackRecord.kind == "false_alarm",
                   InspectionRecord.archive_path.is_not(None)).distinct())
    out: list[bytes] = []
    with db.session() as s:
        for rel in s.scalars(stmt).all():
            path = archive.file(rel, "image")
            if path is not None:
                out.append(path.read_bytes())
    return out
