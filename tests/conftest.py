import fcntl
import multiprocessing.process
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness import threads
from harness.cli import main
from harness.sweep.tracking import tracking_uri
from tests.sweep.runs import cell_runs, metrics_by_hash

# Before a test module imports torch (nothing above does): this process's idle OpenMP
# threads sleep instead of spinning, as the CLI's do (harness/threads.py). Spinning, the two
# processes of `make test` on two cores burnt each other's time slices.
threads.configure()

# Every test is in one tier (docs/decisions/022-test-tiers.md): `unit` (in process, no model
# or a tiny one), `integration` (in process, real components: the embedded model, MLflow,
# lmms-eval, sweeps through `main()`), `system` (other processes: the CLI as a subprocess,
# pool and Ray workers, servers, Chromium, pdflatex, kills). `make test-fast` runs the unit
# tier; `make test` all three. A tier is declared with `pytestmark` on a module whose tests
# share it, or on each function otherwise (never both: `-m unit` must select exactly).
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config, items):
    wrong, rank = [], {}  # rank: a file's highest tier, system first
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid} (has: {', '.join(sorted(tiers)) or 'none'})")
            continue
        file = item.nodeid.split("::")[0]
        rank[file] = min(rank.get(file, len(TIERS)), TIERS[::-1].index(tiers.pop()))
    if wrong:
        raise pytest.UsageError(f"{len(wrong)} tests need exactly one of {', '.join(TIERS)} "
                                f"(see tests/conftest.py): {'; '.join(wrong[:5])}")
    # files stay whole and in order within a tier: on several xdist processes the longest
    # files start first and the short ones fill the end
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


_SPAWNERS = ("chromium", "chromium-browser", "pdflatex", "pdftoppm", "java", "ray")


def _spawns_a_tier(args) -> bool:
    """Whether a command is what only system tests may start: a Python interpreter (the CLI,
    a worker, a server), a browser, LaTeX, or Java (COCO scoring in its own process)."""
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    words = os.fsdecode(argv[0]).split() if argv else []
    if not words:
        return False
    exe = Path(words[0]).name
    return exe.startswith("python") or exe in _SPAWNERS \
        or os.fsdecode(argv[0]) == sys.executable


@pytest.fixture(autouse=True)
def _tier_guard(request, monkeypatch):
    """Tests below `system` start no process that makes a test slow or machine-dependent: the
    tier a test declares is checked while it runs, not trusted."""
    if request.node.get_closest_marker("system"):
        yield
        return
    popen = subprocess.Popen

    class Guarded(popen):  # type: ignore[valid-type]
        def __init__(self, args, *a, **kw):
            if _spawns_a_tier(args):
                raise AssertionError(f"{request.node.nodeid} starts {args!r}: mark it system")
            super().__init__(args, *a, **kw)

    def start(self):
        raise AssertionError(f"{request.node.nodeid} starts a process ({type(self).__name__}):"
                             " mark it system")

    monkeypatch.setattr(subprocess, "Popen", Guarded)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    yield


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
    holding the report the sweep wrote). Swept once per test run: the processes of `make
    test` share it (the first to ask sweeps it, under a lock; the tests only read it)."""
    base = tmp_path_factory.getbasetemp()
    # one run's, shared by its workers (pytest-xdist gives each a folder in it)
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, reports = root / "reference" / "results", root / "reference" / "reports"
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMPRUNE_RESULTS", str(folder))
    mp.setenv("VLMPRUNE_REPORTS", str(reports))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    with open(root / "reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "reference" / "swept").exists():
            shutil.rmtree(root / "reference", ignore_errors=True)  # a worker's that failed
            assert main(["sweep", "smoke"]) == 0
            (root / "reference" / "swept").touch()
    _, runs = cell_runs(status="FINISHED")
    out = metrics_by_hash(runs)
    client = MlflowClient(tracking_uri())
    run = next(r for r in runs if r.data.params.get("prune.method") == "wanda")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    mp.undo()
    return out, run, artifacts, folder, metrics_by_hash(runs, times=True), reports


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty HF home for this test: the hub and datasets caches the readers use, and the
    datasets cache lmms-eval's task loader uses (read once per process: cleared here)."""
    import datasets
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(home / "datasets"))
    _forget_lmms_cache_dir()
    yield home
    _forget_lmms_cache_dir()


def _forget_lmms_cache_dir() -> None:
    task = sys.modules.get("lmms_eval.api.task")
    if task is not None:
        task._resolve_hf_datasets_cache_dir.cache_clear()
