import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.sweep.tracking import tracking_uri
from tests.sweep.runs import cell_runs, metrics_by_hash


@pytest.fixture(scope="session", autouse=True)
def _outputs(tmp_path_factory):
    """Generated output (materialized task data, caches, stores, the reports sweeps write at
    their end) goes to session folders, never to the repo's results/ and reports/."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMPRUNE_RESULTS", str(tmp_path_factory.mktemp("results")))
    mp.setenv("VLMPRUNE_REPORTS", str(tmp_path_factory.mktemp("reports")))
    mp.setenv("VLMPRUNE_CACHE_HOME", str(tmp_path_factory.mktemp("cache-home")))
    yield
    mp.undo()


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A fresh results/ folder (MLflow store, caches) and reports/ folder for one test."""
    out = tmp_path / "results"
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(out))
    monkeypatch.setenv("VLMPRUNE_REPORTS", str(tmp_path / "reports"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The smoke grid swept once, uninterrupted, in its own results folder: (metrics by cell
    hash, one run, its artifact names, the folder, metrics with stage times, the folder
    holding the report the sweep wrote)."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("reference")
    reports = tmp_path_factory.mktemp("reference-reports")
    mp.setenv("VLMPRUNE_RESULTS", str(folder))
    mp.setenv("VLMPRUNE_REPORTS", str(reports))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sweep", "smoke"]) == 0
    _, runs = cell_runs(status="FINISHED")
    out = metrics_by_hash(runs)
    client = MlflowClient(tracking_uri())
    run = next(r for r in runs if r.data.params.get("prune.method") == "wanda")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    mp.undo()
    return out, run, artifacts, folder, metrics_by_hash(runs, times=True), reports
