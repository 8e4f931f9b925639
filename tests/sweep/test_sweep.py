"""Sweeps end to end on the smoke grid: MLflow contents, resume, failures, kill -9."""

import os
import subprocess
import sys

import pytest

from harness.cli import main
from harness.sweep import cache, grid, result, stages
from harness.sweep.tracking import TAG_HASH
from tests.sweep.runs import cell_runs, kill_once_working, metrics_by_hash


@pytest.mark.integration
def test_sweep_logs_every_cell_with_params_metrics_tags_artifacts(reference):
    metrics, run, artifacts, *_ = reference
    _, cells = grid.expand("smoke")
    assert set(metrics) == {c.hash for c in cells}
    assert run.data.params["prune.method"] == "wanda"
    assert "shapes_vqa/exact_match" in run.data.metrics
    assert {"sparsity/overall", "sparsity/nonzero", "time/prune", "time/evaluate"} \
        <= set(run.data.metrics)
    assert run.data.tags["vlmprune.status"] == "finished"
    assert len(run.data.tags["vlmprune.git_commit"]) >= 7
    assert "mlflow.parentRunId" in run.data.tags
    assert {"sparsity_report.json", "eval_samples.json"} <= artifacts
    for m in (k for k in run.data.metrics if k.startswith("shapes_vqa/")):  # 95%, bootstrap
        lo, hi = run.data.metrics[f"lo/{m}"], run.data.metrics[f"hi/{m}"]
        assert lo <= run.data.metrics[m] <= hi and (lo < hi or lo in (0.0, 1.0))
    pruned = [m for m in metrics.values() if m["sparsity/overall"] > 0]
    assert all(m["sparsity/overall"] == pytest.approx(0.5, abs=0.005) for m in pruned)


@pytest.mark.integration
def test_rerun_runs_nothing_and_same_cell_gives_identical_metrics(reference, results):
    assert main(["sweep", "smoke", "--where", "prune.pattern=2:4",
                 "--where", "recover.method=none"]) == 0
    client, runs = cell_runs(status="FINISHED")
    assert len(runs) == 1
    first = metrics_by_hash(runs)
    assert main(["sweep", "smoke", "--where", "prune.pattern=2:4",
                 "--where", "recover.method=none"]) == 0
    assert len(cell_runs(status="FINISHED")[1]) == 1  # finished cells are not run again
    (h, m), = first.items()
    assert m == reference[0][h]  # identical metrics from a different results folder
    _, cells = grid.expand("smoke", {"prune.pattern": "2:4", "recover.method": "none"})
    again = stages.evaluated(cells[0].spec, force=True)
    assert again.metrics == {k: v for k, v in m.items() if "/" in k and not
                             k.startswith(tuple(f"{p}/" for p in result.PREFIXES))}
    assert again.intervals == {k: (m[f"lo/{k}"], m[f"hi/{k}"]) for k in again.metrics}


@pytest.mark.integration
def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, results, capsys):
    p = tmp_path / "fail.yaml"
    p.write_text("""name: failing
base: {prune: null, eval: {suite: quick, limit: 4}}
axes: [{model.name: [shapes-llava, no-such-model]}]
""")
    assert main(["sweep", str(p)]) == 2  # refused before any work: the model is not here
    assert "field 'model.name': 'no-such-model'" in capsys.readouterr().err
    assert main(["sweep", str(p), "--keep-going"]) == 1  # the other cell runs
    client, runs = cell_runs("failing")
    by_status = {r.info.status: r for r in runs}
    assert set(by_status) == {"FINISHED", "FAILED"}
    reason = by_status["FAILED"].data.tags["vlmprune.failure"]
    assert "no-such-model" in reason and "not available offline" in reason


@pytest.mark.system
def test_kill_minus_9_then_resume_finishes_each_cell_exactly_once(reference, results):
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", "smoke"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    kill_once_working(proc, results, within=10)
    assert main(["sweep", "smoke"]) == 0
    _, runs = cell_runs(status="FINISHED")
    hashes = [r.data.tags[TAG_HASH] for r in runs]
    assert sorted(hashes) == sorted(set(hashes)) and len(hashes) == 4
    assert metrics_by_hash(runs) == reference[0]
    assert not list(cache.path("prune", "x").parent.parent.glob("*/.tmp-*"))
    _, stale = cell_runs(status="RUNNING")
    assert not stale
