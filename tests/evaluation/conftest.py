import pytest


@pytest.fixture(scope="session", autouse=True)
def _results_dir(tmp_path_factory):
    """Materialized task data and caches go to a session folder, not the repo's results/."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMPRUNE_RESULTS", str(tmp_path_factory.mktemp("results")))
    yield
    mp.undo()
