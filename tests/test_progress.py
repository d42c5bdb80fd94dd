"""Progress listeners: a training job in the service sees each step's name and count, in its own thread only."""

from __future__ import annotations

import threading

from anomaly.progress import listen, progress


def test_listener_hears_every_item_of_every_loop_in_its_thread():
    heard = []
    with listen(lambda step, done, total: heard.append((step, done, total))):
        assert list(progress(range(3), desc="features")) == [0, 1, 2]
        assert list(progress(iter("ab"), desc="scores", total=2)) == ["a", "b"]
        other = threading.Thread(target=lambda: list(progress(range(5), desc="elsewhere")))
        other.start()
        other.join()
    assert list(progress(range(2), desc="after")) == [0, 1]
    assert heard == [("features", 0, 3), ("features", 1, 3), ("features", 2, 3), ("features", 3, 3),
                     ("scores", 0, 2), ("scores", 1, 2), ("scores", 2, 2)]


def test_job_listener_writes_the_step_and_its_fraction(tmp_path):
    from anomaly.store import ModelStore
    from service.db import Database, TrainingJobRecord, utcnow
    from service.jobs import TrainingJobs

    db = Database(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    db.migrate()
    with db.session() as s:
        s.add(TrainingJobRecord(id="j1", model_name="m", detector="patchcore", n_images=3, status="running",
                                stage="fitting", progress=0.1, created_at=utcnow(), host="h", pid=1, client="c"))
    jobs = TrainingJobs(db, ModelStore(tmp_path / "store"))
    report = jobs._listener("j1", every=0.0)
    report("patchcore: out-of-fold scores", 3, 5)
    assert jobs.get("j1")["stage"] == "patchcore: out-of-fold scores 3/5" and jobs.get("j1")["progress"] == 0.6
    jobs.shutdown()
    db.dispose()
