"""MLflow: one experiment per grid, a parent run per sweep, a child run per cell.

The store is SQLite at results/mlflow.db unless MLFLOW_TRACKING_URI names another (a file
store, a database, a tracking server). A cell counts as done when a FINISHED child run carries
its hash; a run left RUNNING by a killed sweep is marked KILLED on the next one, whose new run
for that cell is then the only FINISHED one. What a cell's run holds (its metrics' names,
its artifacts) is result.py's (`CellResult.to_mlflow`, `from_mlflow`).

A store that cannot be read or written (a damaged or foreign `mlflow.db`, a read-only or full
results folder, an unreachable server) is the user's to fix: `store_errors()` turns it into
one line naming the file and what to do, exit 2. Nothing in the store is needed to recompute:
cells live in the stage cache, so a sweep pointed at a fresh store re-logs them unrecomputed.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

from harness.errors import UserError
from harness.integrity import digest
from harness.paths import new_file, results_dir, user_cache
from harness.sweep.cell import Cell, flat
from harness.sweep.result import CellResult

TAG_HASH = "vlmprune.cell_hash"
TAG_KIND = "vlmprune.kind"
TAG_HOST, TAG_PID = "vlmprune.host", "vlmprune.pid"  # the process that owns a sweep or search run


def owner_tags() -> dict[str, str]:
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


def tracking_uri(create: bool = True) -> str | None:
    """The tracking URI in force; the default SQLite store is created on first use, or with
    `create=False` (plan, dry runs: they write nothing) None is returned when it is absent."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = (results_dir() / "mlflow.db").resolve()
    if not db.exists():
        if not create:
            return None
        create_store(db)
    return f"sqlite:///{db}"


def store_name() -> str:
    """The store as a user would name it: the database file, or the URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri else str(results_dir() / "mlflow.db")


_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


class Store(NamedTuple):
    """A store as `store_problem` names it: the file (or URI), what it is, what a fresh one
    costs the user, and the setting that points at another one (`other`)."""

    name: str
    kind: str = "MLflow store"
    fresh: str = ("a fresh store re-logs the cells already in the stage cache without "
                  "recomputing them")
    other: str = "MLFLOW_TRACKING_URI"


def store_problem(e: BaseException, store: Store | None = None) -> str | None:
    """One line for a failure of the results folder or of a store, or None when `e` is
    something else. Looks through the exception's causes (MLflow wraps SQLAlchemy, which
    wraps sqlite3). `store`: the one being used (default: the MLflow store in force)."""
    seen: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in seen and len(seen) < 10:
        seen.append(x)
        x = x.__cause__ or x.__context__
    text = " | ".join(str(x).lower() for x in seen)
    st = store or Store(store_name())
    for x in seen:
        if isinstance(x, OSError) and x.errno in _FULL + _DENIED:
            where = x.filename or results_dir()
            return _full(where, st) if x.errno in _FULL else _denied(where, st)
    db = st.name
    if "disk is full" in text or "no space left" in text:
        return _full(db, st)
    if "readonly database" in text or "read-only" in text or "unable to open database" in text:
        return _denied(db, st)
    names = {type(x).__name__ for x in seen}
    if names & {"DatabaseError", "OperationalError", "IntegrityError", "ProgrammingError"} \
            or "not a database" in text or "malformed" in text:
        first = next((str(x).splitlines()[0] for x in reversed(seen) if str(x)), "unreadable")
        return (f"{db}: not a readable {st.kind} ({first[:120]}); move it aside "
                f"(mv {db} {db}.bad) and run again: {st.fresh}; or point {st.other} at "
                "another one")
    if store is None and "connection" in text \
            and os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"):
        return (f"{store_name()}: the MLflow tracking server does not answer; start it "
                "(`vlmprune server`), or unset MLFLOW_TRACKING_URI")
    return None


def _full(where: object, store: Store) -> str:
    return (f"{where}: no space left on the device; free some, or set VLMPRUNE_RESULTS to a "
            f"folder on another disk ({store.other} for the {store.kind} alone)")


def _denied(where: object, store: Store) -> str:
    return (f"{where}: cannot write there (read-only); make it writable, or set "
            f"VLMPRUNE_RESULTS to a writable folder ({store.other} for the {store.kind} alone)")


@contextmanager
def store_errors() -> Iterator[None]:
    """Failures of the results folder or the store become one-line `UserError`s."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        msg = store_problem(e)
        if msg is None:
            raise
        raise UserError(msg) from None


def create_store(db: Path) -> None:
    """Create the SQLite store whole or not at all. MLflow builds its schema in dozens of
    steps; a sweep killed among them would leave a database that no later run can open
    ("table ... already exists"). So the store is made in a temporary file, which is then
    linked into place (no-clobber: a concurrent sweep's finished store wins). Building the
    schema takes MLflow ~3 s; it is done once per MLflow version into a template under the
    user's cache (`empty_store`), which each new results folder copies."""
    def fill(tmp: Path) -> None:
        template = empty_store()
        if template is not None:
            shutil.copyfile(template, tmp)
        else:  # no writable cache: build the schema here
            tmp.unlink()
            _build_schema(tmp)

    new_file(db, fill)


def _build_schema(file: Path) -> None:
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{file}").search_experiments()  # builds the schema
    _dispose_engine(f"sqlite:///{file}")


def empty_store() -> Path | None:
    """A pristine MLflow SQLite store of the installed MLflow version, kept under
    $VLMPRUNE_CACHE_HOME (default ~/.cache/vlmprune) with its SHA-256 beside it; rebuilt
    when missing or damaged; None when that folder cannot be written."""
    home = user_cache()
    template = home / f"mlflow-{version('mlflow')}-empty.db"
    stamp = template.with_suffix(".sha256")
    try:
        if template.is_file() and stamp.is_file() and digest(template) == stamp.read_text():
            return template
        home.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-mlflow-", dir=home)
        os.close(fd)
        tmp = Path(name)
        try:
            tmp.unlink()
            _build_schema(tmp)
            stamp_tmp = tmp.with_suffix(".sha256")
            stamp_tmp.write_text(digest(tmp))
            os.replace(tmp, template)
            os.replace(stamp_tmp, stamp)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".sha256").unlink(missing_ok=True)
        return template
    except OSError:
        return None


def _dispose_engine(uri: str) -> None:
    """Close MLflow's cached connections to the temporary file before it is unlinked."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def finished_readonly(grid: str) -> dict[str, CellResult]:
    """`Tracker(grid).finished()` without creating anything: an absent store or experiment
    has finished nothing (plan and dry runs write no file)."""
    uri = tracking_uri(create=False)
    if uri is None:
        return {}
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(grid)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'cell' "
                              "and attributes.status = 'FINISHED'", max_results=50000)
    return {r.data.tags[TAG_HASH]: CellResult.from_run(r) for r in runs}


# eval fields added later, not logged while unset: a run's params are as they were before
UNSET: dict[str, object] = {"eval.tasks": None, "eval.race": None, "eval.offset": 0}


def quiet_mlflow() -> None:
    """No INFO lines from MLflow or its migrations, and no logged traceback of a database
    error that `store_errors` reports in one line anyway."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def versions() -> dict[str, str]:
    """Tags for what produced a run: the libraries whose behaviour shapes its numbers."""
    out = {}
    for tag, dist in (("torch", "torch"), ("transformers", "transformers"),
                      ("lmms_eval", "lmms_eval"), ("peft", "peft")):
        try:
            out[f"vlmprune.version.{tag}"] = version(dist)
        except PackageNotFoundError:
            out[f"vlmprune.version.{tag}"] = "absent"
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    def __init__(self, grid: str, description: str = "") -> None:
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri())
        exp = self.client.get_experiment_by_name(grid)
        artifacts = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # keep artifacts beside the database
            artifacts = (results_dir() / "mlartifacts").resolve().as_uri()
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    grid, artifact_location=artifacts, tags={"mlflow.note.content": description})
            except Exception:
                # another process made it since we looked (a parallel search's workers
                # start together; two sweeps of one grid): theirs is ours
                exp = self.client.get_experiment_by_name(grid)
                if exp is None:
                    raise
        if exp is not None:
            self.experiment_id = exp.experiment_id
        self.commit = git_commit()

    def _cell_runs(self, status: str):
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_KIND}` = 'cell' and attributes.status = '{status}'",
            max_results=50000)

    def finished(self) -> dict[str, CellResult]:
        """hash -> what the FINISHED run of that cell logged (`CellResult.from_mlflow`)."""
        return {r.data.tags[TAG_HASH]: CellResult.from_run(r)
                for r in self._cell_runs("FINISHED")}

    def close_stale(self) -> int:
        """Mark runs a killed sweep left RUNNING as KILLED; returns how many. (One sweep of
        a grid runs at a time on a results folder: runner.locked.)"""
        runs = self._cell_runs("RUNNING") + list(self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'sweep' and "
            "attributes.status = 'RUNNING'"))
        for r in runs:
            self.client.set_terminated(r.info.run_id, "KILLED")
        return len(runs)

    def close_orphans(self, kind: str, alive: Callable[[int], bool]) -> int:
        """Mark KILLED the runs of `kind` left RUNNING by a process of this host that is gone
        (and their child runs still RUNNING); returns how many. Runs of live processes (a
        second search sharing the study, a pool's worker), of other hosts, and without an
        owner are left as they are."""
        me = socket.gethostname()
        runs = self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.`{TAG_KIND}` = '{kind}' and attributes.status = 'RUNNING' and "
            f"tags.`{TAG_HOST}` = '{me}'"), max_results=50000)
        gone = [r for r in runs if r.data.tags.get(TAG_PID, "").isdigit()
                and not alive(int(r.data.tags[TAG_PID]))]
        for r in gone:
            self.end(r.info.run_id, "KILLED")
        return len(gone)

    def end(self, run_id: str, status: str) -> None:
        """End a run, and any of its child runs still RUNNING, with `status` (KILLED: the
        sweep or search was stopped)."""
        for child in self.client.search_runs([self.experiment_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'")):
            self.client.set_terminated(child.info.run_id, status)
        self.client.set_terminated(run_id, status)

    def start_sweep(self, n_cells: int, where: dict[str, str] | None,
                    executor: str = "local") -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"sweep {time.strftime('%F %T')}",
                                     tags={TAG_KIND: "sweep", "vlmprune.git_commit": self.commit,
                                           "vlmprune.where": str(where or {}),
                                           "vlmprune.executor": executor, **owner_tags()})
        self.client.log_param(run.info.run_id, "cells", n_cells)
        return run.info.run_id

    def end_sweep(self, run_id: str, failed: int, done: int) -> None:
        self.client.log_metric(run_id, "cells_failed", failed)
        self.client.log_metric(run_id, "cells_finished", done)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_cell(self, parent: str, cell: Cell, result: CellResult | None,
                 failure: str | None = None, artifacts: bool = True,
                 extra: dict[str, str] | None = None) -> str:
        """The cell's run; `extra`: more tags (how it left a race)."""
        from mlflow.entities import Metric, Param

        tags = {"mlflow.parentRunId": parent, TAG_KIND: "cell", TAG_HASH: cell.hash,
                "vlmprune.git_commit": self.commit,
                "vlmprune.status": "failed" if failure else "finished", **versions()}
        if failure:
            tags["vlmprune.failure"] = failure[:5000]
        if result is not None:
            tags |= result.tags()
        tags |= extra or {}
        run_id = self.client.create_run(self.experiment_id, run_name=cell.label,
                                        tags=tags).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat(cell.spec.model_dump()).items()
                  if not (k in UNSET and v == UNSET[k])]  # runs before these fields: unchanged
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        if result is not None:
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, 0) for k, v in result.to_mlflow().items()]
            for i in range(0, len(metrics), 500):
                self.client.log_batch(run_id, metrics=metrics[i:i + 500])
        if result is not None and artifacts:
            for name, content in result.artifacts().items():
                self.client.log_dict(run_id, content, name)
        self.client.set_terminated(run_id, "FAILED" if failure else "FINISHED")
        return run_id
