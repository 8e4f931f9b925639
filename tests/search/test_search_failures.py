"""A trial that fails (here: its recovery diverges to NaN at step 2) is recorded FAIL with its
reason, logged as a FAILED MLflow run, and the search goes on to the next trial; a search
whose trials keep failing stops after a few and exits 1 instead of asking forever. Before,
every failed trial became an ImportError that killed the search with the trial RUNNING."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.cli import main
from harness.search.run import MAX_FAILED
from harness.search.study import info
from harness.sweep.tracking import TAG_KIND, tracking_uri

FAILING = {
    "name": "tiny_fail",
    "description": "every trial's recovery diverges",
    "base": {"model": {"name": "shapes-llava"},
             "prune": {"method": "wanda", "calibration": {"samples": 16, "batch_size": 16}},
             "recover": {"method": "lora", "lr": 1.0e8, "steps": 30, "warmup": 0,
                         "batch_size": 4},
             "eval": {"suite": "quick", "limit": 20}},
    "search": {"budget": 0.5, "trials": 2, "pruner": "none", "baselines": False,
               "roles": {"vision": {"low": 0.0, "high": 0.95},
                         "language": {"low": 0.0, "high": 0.95}}},
}


def check_failed(results, loops: int) -> None:
    study = optuna.load_study(study_name="tiny_fail",
                              storage=f"sqlite:///{results / 'optuna.db'}")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    # each trial loop went on after its first failures, then stopped
    assert MAX_FAILED <= len(failed) <= loops * MAX_FAILED
    for t in failed:
        assert info(t)["failure"].startswith("RecoveryFailed: loss is nan"), info(t)
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("tiny_fail-search")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'cell'")
    assert len(runs) == len(failed)
    assert all(r.info.status == "FAILED" and "RecoveryFailed" in r.data.tags["vlmprune.failure"]
               for r in runs)


@pytest.mark.parametrize("executor", [pytest.param("local", marks=pytest.mark.integration),
                                      pytest.param("pool", marks=pytest.mark.system)])
def test_failing_trials_are_recorded_and_the_search_stops(tmp_path, results, capsys, caplog,
                                                         executor):
    grid = tmp_path / "tiny_fail.yaml"
    grid.write_text(yaml.safe_dump(copy.deepcopy(FAILING), sort_keys=False))
    extra = ["--executor", "pool", "--workers", "2"] if executor == "pool" else []
    assert main(["search", str(grid), *extra]) == 1
    err = capsys.readouterr().err + caplog.text
    assert "ImportError" not in err and "Traceback" not in err, err[-3000:]
    assert "0 of 2 trials complete" in caplog.text, err[-3000:]
    check_failed(results, 2 if executor == "pool" else 1)
