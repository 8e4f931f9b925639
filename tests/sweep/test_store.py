"""A store or results folder that cannot be used is one line and exit 2, never a traceback;
a dry run writes nothing. Run as a user would: the `vlmprune` command in a subprocess, so
MLflow's own log handlers are seen too."""

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.sweep.tracking import Store, store_problem

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


def vlmprune(*args: str, results: Path, user: int | None = None, home: Path | None = None):
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "harness.cli", *args]
    if user is not None:
        env["HOME"] = str(home)
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def one_line_error(p, *words: str) -> str:
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr + p.stdout and "ERROR" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlmprune: error: "), p.stderr[-2000:]
    for w in words:
        assert w in lines[0]
    return lines[0]


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_damaged_mlflow_db_is_one_line_naming_it(reference, tmp_path, how):
    results = tmp_path / "results"
    shutil.copytree(reference[3], results)
    db = results / "mlflow.db"
    if how == "truncated":
        os.truncate(db, db.stat().st_size // 3)
    else:
        db.write_bytes(os.urandom(db.stat().st_size))
    for args in (["plan", "smoke"], ["sweep", "smoke"]):
        line = one_line_error(vlmprune(*args, results=results), str(db), "move it aside",
                              "MLFLOW_TRACKING_URI")
        assert "re-logs" in line


def test_dry_run_of_a_fresh_folder_writes_nothing_and_prints_no_mlflow_line(tmp_path):
    results = tmp_path / "fresh"
    before = sorted(p.name for p in ROOT.iterdir())
    for args in (["plan", "smoke"], ["sweep", "smoke", "--dry-run"]):
        p = vlmprune(*args, results=results)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "smoke: 4 cells" in p.stdout
        assert "INFO" not in p.stdout + p.stderr and "mlflow" not in p.stderr.lower()
        assert not results.exists()
    assert sorted(p.name for p in ROOT.iterdir()) == before


@pytest.fixture
def shared_tmp():
    """A folder another user can reach (pytest's own are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="vlmprune-ro-"))
    d.chmod(0o755)
    yield d
    subprocess.run(["chmod", "-R", "u+w", str(d)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def read_only_user(home: Path) -> int | None:
    """Run as `nobody` when root (root writes anywhere); as oneself otherwise."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot make a folder read-only for the test")
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    return 65534


@pytest.mark.parametrize("holds", ["results", "nothing"])
def test_read_only_results_folder_is_one_line(reference, shared_tmp, holds):
    results = shared_tmp / "results"
    if holds == "results":
        shutil.copytree(reference[3], results)
    else:
        results.mkdir()
    subprocess.run(["chmod", "-R", "a+rX,a-w", str(results)], check=True)
    user = read_only_user(shared_tmp / "home")
    p = vlmprune("sweep", "smoke", results=results, user=user, home=shared_tmp / "home")
    one_line_error(p, str(results), "read-only", "VLMPRUNE_RESULTS")


def test_full_disk_and_read_only_database_are_named(tmp_path):
    with pytest.raises(OSError) as full:
        with open("/dev/full", "w") as f:
            f.write("x" * 10000)
            f.flush()
    assert full.value.errno == errno.ENOSPC
    assert "no space left" in store_problem(full.value)
    db = tmp_path / "m.db"
    sqlite3.connect(db).execute("create table t (x)").connection.commit()
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        ro.execute("insert into t values (1)")
    assert "read-only" in store_problem(e.value)
    assert store_problem(ValueError("a cell's own bug")) is None


def test_a_store_other_than_mlflow_s_is_named_with_its_own_way_out(tmp_path):
    """store_problem names the store it is given (a search's Optuna storage), never the
    MLflow store, and points at the setting that chooses another one."""
    db = tmp_path / "o.db"
    db.write_text("not a database\n" * 100)
    optuna = Store(str(db), "Optuna storage", "the study starts afresh", "--storage")
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(db).execute("select * from sqlite_master").fetchall()
    line = store_problem(damaged.value, optuna)
    assert line is not None and line.startswith(f"{db}: not a readable Optuna storage")
    assert f"mv {db} {db}.bad" in line and "--storage" in line
    assert "mlflow.db" not in line and "MLFLOW_TRACKING_URI" not in line
    with pytest.raises(sqlite3.OperationalError) as unopened:
        sqlite3.connect(f"file:{tmp_path / 'missing.db'}?mode=ro", uri=True)
    line = store_problem(unopened.value, optuna)
    assert line is not None and line.startswith(f"{db}: cannot write there")
    assert "--storage for the Optuna storage alone" in line
