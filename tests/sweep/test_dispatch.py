"""Pool and Ray executors: the smoke grid gives local's cells and metrics; a worker SIGKILLed
mid-cell costs that cell one attempt (retried once, then recorded failed), nothing lost,
nothing logged twice; the next sweep resumes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from harness.cli import main
from harness.sweep import dispatch, grid
from harness.sweep.cell import Cell
from harness.sweep.tracking import TAG_HASH
from harness.testing import faults
from tests.sweep import serve
from tests.sweep.runs import cell_runs, metrics_by_hash

pytestmark = pytest.mark.system


def smoke_cell(**where) -> Cell:
    _, cells = grid.expand("smoke", {k.replace("_", "."): v for k, v in where.items()})
    (cell,) = cells
    return cell


def runs_by_hash(status: str | None = None):
    _, runs = cell_runs(status=status)
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags[TAG_HASH], []).append(r)
    return out


def seed_cache(reference, results) -> None:
    """The reference sweep's prune and recovery stages, not its evaluations: every cell
    then reaches its evaluation quickly, which is where the injected kill strikes."""
    results.mkdir(parents=True)
    src = reference[3] / "cache"
    for stage in ("prune", "recover", "data"):
        if (src / stage).exists():
            shutil.copytree(src / stage, results / "cache" / stage)


def test_pool_matches_local(reference, results):
    assert main(["sweep", "smoke", "--executor", "pool", "--workers", "2", "--no-report"]) == 0
    runs = runs_by_hash()
    assert all(len(v) == 1 and v[0].info.status == "FINISHED" for v in runs.values())
    _, finished = cell_runs(status="FINISHED")
    assert metrics_by_hash(finished) == reference[0]  # bit-identical, computed afresh
    logs = [p.read_text() for p in (results / "logs").glob("smoke-*-worker*.log")]
    assert len(logs) == 2 and all("ready in" in text for text in logs)  # warmed up first
    done = [line for text in logs for line in text.splitlines() if ": done in " in line]
    assert len(done) == len(reference[0])  # each cell ran once, in one of the two workers


def kill_plan() -> tuple[Cell, Cell, str]:
    once = smoke_cell(prune_pattern="unstructured", recover_method="none")
    twice = smoke_cell(prune_pattern="2:4", recover_method="sparselora")
    return once, twice, f"{once.hash[:12]}:1,{twice.hash[:12]}:2"


def check_killed_sweep(reference, code: int) -> None:
    once, twice, _ = kill_plan()
    assert code == 1  # one cell failed
    runs = runs_by_hash()
    assert set(runs) == set(reference[0])  # every cell recorded, none twice
    assert all(len(v) == 1 for v in runs.values())
    failed = runs[twice.hash][0]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["vlmprune.failure"].startswith("WorkerDied")
    assert "attempts" in failed.data.tags["vlmprune.failure"]
    done = {h: v[0] for h, v in runs.items() if h != twice.hash}
    assert all(r.info.status == "FINISHED" for r in done.values())
    assert metrics_by_hash(done.values()) == {h: m for h, m in reference[0].items()
                                              if h != twice.hash}
    assert once.hash in done  # killed once, then finished on its second attempt


def resume_after_kill(reference, monkeypatch, argv: list[str]) -> None:
    monkeypatch.delenv(faults.ENV)
    assert main(argv) == 0
    _, finished = cell_runs(status="FINISHED")
    assert metrics_by_hash(finished) == reference[0]
    assert len(finished) == len(reference[0])  # only the failed cell ran again


def test_pool_worker_killed_mid_cell(reference, results, monkeypatch, caplog):
    seed_cache(reference, results)
    monkeypatch.setenv(faults.ENV, kill_plan()[2])
    argv = ["sweep", "smoke", "--executor", "pool", "--workers", "2", "--no-report"]
    check_killed_sweep(reference, main(argv))
    assert "worker process killed by SIGKILL" in caplog.text  # each retry is announced
    resume_after_kill(reference, monkeypatch, argv)


def test_pool_worker_dying_idle_is_retired(results, caplog):
    """A worker with no cell left that dies (the OOM killer, a stray kill) is retired; the
    sweep's other cells are not disturbed."""
    from harness.sweep.pool import Pool

    cell = smoke_cell(prune_pattern="unstructured", recover_method="none")
    pool = Pool(2, 1, log_tag="idle")
    outcomes = []

    def started(c) -> None:  # cell 1 went to worker 0; worker 1 has nothing: kill it
        pool._ready()
        os.kill(pool.procs[1].pid, signal.SIGKILL)

    try:
        dispatch.run([cell], pool, started, lambda c, o: outcomes.append((c, o)))
    finally:
        pool.close()
    assert [(c.hash, o.kind) for c, o in outcomes] == [(cell.hash, "done")]
    assert "worker 1 died while idle (worker process killed by SIGKILL)" in caplog.text
    assert pool.procs[1] is None


def test_the_sweep_process_of_a_pool_does_not_import_torch():
    """A pool's sweep only hands out cells and logs them: torch (~2.5 s to import, on a core
    its workers need) stays in the workers. The modules it runs, imported in a fresh process."""
    code = ("import sys; from harness import cli, threads; "
            "from harness.sweep import runner, pool, tracking, dispatch; "
            "from harness.pruning.report import by_block; import mlflow.entities; "
            "threads.count(None); print(sorted(m for m in ('torch', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_executor_flags_are_checked(results, capsys):
    for argv, words in ((["--executor", "slurm"], "use one of local, pool, ray"),
                        (["--workers", "0", "--executor", "pool"], "give 1 or more"),
                        (["--workers", "2"], "only with --executor pool or ray"),
                        (["--ray-address", "auto"], "only with --executor ray")):
        assert main(["sweep", "smoke", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
    assert not results.exists()  # refused before anything was written


def test_groups_share_prune_stages_and_go_longest_first():
    _, cells = grid.expand("smoke")
    groups = dispatch.groups(cells)
    assert sorted(len(g.cells) for g in groups) == [1, 1, 2]  # 2:4 with and without LoRA
    assert [g.cost for g in groups] == sorted((g.cost for g in groups), reverse=True)
    assert groups[-1].key.startswith("dense:")  # one stage to run, not two or three


# --- Ray ---------------------------------------------------------------------------------

ray = pytest.importorskip("ray", reason="Ray cannot be installed here (pip install -e .[ray])")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`vlmprune server` on 127.0.0.1, over its own results folder (ready when it answers:
    serve.READY_S is a generous deadline, for a busy machine)."""
    folder = tmp_path_factory.mktemp("server") / "results"
    with serve.running(folder) as uri:
        yield uri, folder


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 2**20)
    yield
    ray.shutdown()


def test_ray_worker_killed_mid_cell_then_resumed_matches_local_on_a_tracking_server(
        reference, results, ray_cluster, tracking_server, monkeypatch):
    """Logging through `vlmprune server` as a cluster's sweep does: a Ray worker SIGKILLed
    mid-cell costs that cell one attempt, and the resume gives local's metrics, every run in
    the server's store and none in a local one. (One sweep and its resume: a Ray sweep costs
    a cluster's start-up on top of the cells.)"""
    uri, server_folder = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seed_cache(reference, results)
    monkeypatch.setenv(faults.ENV, kill_plan()[2])
    argv = ["sweep", "smoke", "--executor", "ray", "--no-report"]
    check_killed_sweep(reference, main(argv))
    resume_after_kill(reference, monkeypatch, argv)  # read back through the server
    assert (server_folder / "mlflow.db").stat().st_size > 0  # the server's store holds them
    assert not (results / "mlflow.db").exists()  # nothing went to a local store


def test_ray_runs_a_search_s_trials(tmp_path, results, ray_cluster):
    """`vlmprune search --executor ray`: two actors run trial loops on one study."""
    from harness.search.study import info
    from tests.search.test_search import TINY, check_parallel_study, write

    assert main(["search", str(write(tmp_path, TINY)), "--executor", "ray",
                 "--workers", "2"]) == 0
    done = check_parallel_study(results, 4)
    assert len({info(t)["pid"] for t in done}) == 2  # both actors ran trials
