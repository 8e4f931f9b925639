import pytest


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A fresh results/ folder (MLflow store, caches) for one test."""
    out = tmp_path / "results"
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(out))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return out
