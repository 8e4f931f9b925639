"""A search's stores: a damaged, emptied or unreachable Optuna storage is one line naming
that storage (never the MLflow store beside it); a killed search's MLflow run is KILLED by
the next one, the runs of live searches sharing the study are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.search.run import _open_tracking
from harness.sweep import grid
from harness.sweep.tracking import TAG_KIND, Tracker, tracking_uri
from tests.search.test_search import TINY, write

pytestmark = pytest.mark.system


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vlmprune: error: "), err
    return err


def a_study(db) -> None:
    """A healthy study of a few trials, beside a healthy MLflow store."""
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="tiny_search")
    for _ in range(6):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        t.set_user_attr("note", "x" * 200)
        study.tell(t, 0.5)


@pytest.mark.parametrize("how", ["truncated", "text"])
def test_damaged_optuna_db_is_named_and_mlflow_db_is_not(tmp_path, results, capsys, how):
    results.mkdir(parents=True)
    db = results / "optuna.db"
    a_study(db)
    tracking_uri()  # results/mlflow.db, healthy
    store = (results / "mlflow.db").read_bytes()
    if how == "truncated":
        os.truncate(db, db.stat().st_size // 3)
    else:
        db.write_text("these are not the trials you are looking for\n" * 100)
    assert main(["search", str(write(tmp_path, TINY))]) == 2
    err = one_line(capsys)
    assert f"{db}: not a readable Optuna storage" in err and f"mv {db} {db}.bad" in err, err
    assert "mlflow.db" not in err and "MLFLOW_TRACKING_URI" not in err, err
    assert (results / "mlflow.db").read_bytes() == store


def test_emptied_optuna_db_is_refused_not_started_again(tmp_path, results, capsys):
    results.mkdir(parents=True)
    db = results / "optuna.db"
    db.touch()  # 0 bytes: what truncation (or `: > optuna.db`) leaves of a study
    assert main(["search", str(write(tmp_path, TINY)), "--trials", "1"]) == 2
    err = one_line(capsys)
    assert f"{db}: empty" in err and f"mv {db}" in err, err
    assert db.stat().st_size == 0  # nothing written into it
    assert not (results / "mlflow.db").exists()  # and no trial ran


def test_a_new_storage_file_is_made_whole(tmp_path, results):
    """vlmprune never leaves a 0-byte storage itself: a new SQLite file is built aside and
    linked into place, so a search killed as it starts cannot be mistaken for damage."""
    from harness.search import study as st
    from harness.search.spec import load

    db = tmp_path / "new" / "o.db"
    db.parent.mkdir()
    spec = load(TINY["search"], "tiny")
    st.open_study(spec, "s", f"sqlite:///{db}")
    assert db.stat().st_size > 0 and sorted(p.name for p in db.parent.iterdir()) == ["o.db"]
    st.open_study(spec, "s", f"sqlite:///{db}")  # opened again, not refused


def test_storage_in_a_missing_folder_says_so(tmp_path, results, capsys):
    missing = tmp_path / "nonexistent" / "dir"
    assert main(["search", str(write(tmp_path, TINY)), "--storage",
                 f"sqlite:///{missing}/x.db"]) == 2
    err = one_line(capsys)
    assert f"{missing}: no such folder" in err and "--storage" in err, err
    assert "mlflow.db" not in err and "read-only" not in err, err
    assert not missing.exists()


def search_run(tracker: Tracker, host: str | None, pid: int | None, status="RUNNING") -> str:
    tags = {TAG_KIND: "search", "vlmprune.study": "tiny_search"}
    if host is not None:
        tags |= {"vlmprune.host": host, "vlmprune.pid": str(pid)}
    run_id = tracker.client.create_run(tracker.experiment_id, tags=tags).info.run_id
    if status != "RUNNING":
        tracker.client.set_terminated(run_id, status)
    return run_id


def test_killed_searches_runs_are_killed_live_ones_stay(tmp_path, results):
    """A search's MLflow run (one per process: a search, a second process on the study, a
    pool's worker) is KILLED by the next search once its process is gone; runs of live
    processes, of other hosts and without an owner stay as they are."""
    g = grid.read(str(write(tmp_path, TINY)))
    tracker = Tracker("tiny_search-search")
    here = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        killed = search_run(tracker, here, gone.pid)
        child = tracker.client.create_run(tracker.experiment_id, tags={
            TAG_KIND: "cell", "mlflow.parentRunId": killed}).info.run_id
        running = search_run(tracker, here, live.pid)
        elsewhere = search_run(tracker, "another-host", gone.pid)
        legacy = search_run(tracker, None, None)
        done = search_run(tracker, here, gone.pid, status="FINISHED")
        _, parent = _open_tracking(g, "tiny_search")
    finally:
        live.kill()
        live.wait()
    client = MlflowClient(tracking_uri())
    status = {name: client.get_run(run).info.status for name, run in (
        ("killed", killed), ("child", child), ("running", running), ("elsewhere", elsewhere),
        ("legacy", legacy), ("done", done), ("new", parent))}
    assert status == {"killed": "KILLED", "child": "KILLED", "running": "RUNNING",
                      "elsewhere": "RUNNING", "legacy": "RUNNING", "done": "FINISHED",
                      "new": "RUNNING"}
    tags = client.get_run(parent).data.tags
    assert (tags["vlmprune.host"], tags["vlmprune.pid"]) == (here, str(os.getpid()))


def test_killed_search_s_run_is_killed_by_the_resume(tmp_path, results):
    """The reported case, end to end: SIGKILL a search once its MLflow run exists; the
    resumed search marks that run KILLED and finishes its own."""
    import signal
    import time

    from tests.search.test_search import search_process

    g = write(tmp_path, TINY)
    proc = search_process(g, results, 2)
    deadline = time.monotonic() + 600
    mine = f"tags.`{TAG_KIND}` = 'search' and tags.`vlmprune.pid` = '{proc.pid}'"
    killed = None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        uri = tracking_uri(create=False)
        if uri is None:  # not made yet (an empty URI would be MLflow's default store)
            continue
        try:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("tiny_search-search")
            runs = client.search_runs([exp.experiment_id], mine) if exp else []
        except Exception:  # noqa: BLE001 - the store is being created
            continue
        killed = runs[0].info.run_id if runs else None
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed is not None, proc.stderr.read()[-2000:] if proc.stderr else ""
    assert MlflowClient(tracking_uri()).get_run(killed).info.status == "RUNNING"
    assert main(["search", str(g), "--trials", "2"]) == 0
    client = MlflowClient(tracking_uri())
    assert client.get_run(killed).info.status == "KILLED"
    exp = client.get_experiment_by_name("tiny_search-search")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
