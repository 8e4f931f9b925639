import pytest
from mlflow.tracking import MlflowClient

from harness.sweep import tracking

pytestmark = pytest.mark.integration


def test_the_store_appears_whole_or_not_at_all(results, monkeypatch, tmp_path):
    """A run stopped while MLflow builds its schema leaves no database behind (a half-built
    one could never be opened again), nor a half-built template; the next run builds it
    afresh."""
    cache_home = tmp_path / "cache-home"
    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(cache_home))  # no template yet
    real = MlflowClient.search_experiments

    def built_then_stopped(self, *a, **k):
        real(self, *a, **k)  # the whole schema, in the temporary file
        raise KeyboardInterrupt  # stopped before it is linked into place

    monkeypatch.setattr(MlflowClient, "search_experiments", built_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        tracking.tracking_uri()
    assert not (results / "mlflow.db").exists()
    assert list(results.iterdir()) == []  # no temporary file left either
    assert list(cache_home.iterdir()) == []  # nor a template
    monkeypatch.undo()
    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(cache_home))
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = tracking.Tracker("g", "d")
    assert (results / "mlflow.db").is_file()
    assert MlflowClient(tracking.tracking_uri()).get_experiment(t.experiment_id).name == "g"


def test_new_stores_copy_a_verified_template(results, monkeypatch, tmp_path):
    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(tmp_path / "cache-home"))
    template = tracking.empty_store()
    assert template is not None and template.is_file()
    template.write_bytes(b"\0" * 4096)  # damaged: rebuilt, never copied
    assert tracking.empty_store() == template and template.read_bytes()[:6] == b"SQLite"
    tracking.tracking_uri()
    t = tracking.Tracker("g", "d")
    assert MlflowClient(tracking.tracking_uri()).get_experiment(t.experiment_id).name == "g"
