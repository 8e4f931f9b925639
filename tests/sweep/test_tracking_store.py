import pytest
from mlflow.tracking import MlflowClient

from harness.sweep import tracking


def test_the_store_appears_whole_or_not_at_all(results, monkeypatch):
    """A run stopped while MLflow builds its schema leaves no database behind (a half-built
    one could never be opened again); the next run builds it afresh."""
    real = MlflowClient.search_experiments

    def built_then_stopped(self, *a, **k):
        real(self, *a, **k)  # the whole schema, in the temporary file
        raise KeyboardInterrupt  # stopped before it is linked into place

    monkeypatch.setattr(MlflowClient, "search_experiments", built_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        tracking.tracking_uri()
    assert not (results / "mlflow.db").exists()
    assert list(results.iterdir()) == []  # no temporary file left either
    monkeypatch.undo()
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = tracking.Tracker("g", "d")
    assert (results / "mlflow.db").is_file()
    assert MlflowClient(tracking.tracking_uri()).get_experiment(t.experiment_id).name == "g"
