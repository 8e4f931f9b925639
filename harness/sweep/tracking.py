"""MLflow: one experiment per grid, a parent run per sweep, a child run per cell.

The store is SQLite at results/mlflow.db unless MLFLOW_TRACKING_URI names another (a file
store, a database, a tracking server). A cell counts as done when a FINISHED child run carries
its hash; a run left RUNNING by a killed sweep is marked KILLED on the next one, whose new run
for that cell is then the only FINISHED one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.paths import results_dir
from harness.sweep.cell import flat
from harness.sweep.grid import Cell

TAG_HASH = "vlmprune.cell_hash"
TAG_KIND = "vlmprune.kind"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = (results_dir() / "mlflow.db").resolve()
    if not db.exists():
        create_store(db)
    return f"sqlite:///{db}"


def create_store(db: Path) -> None:
    """Create the SQLite store whole or not at all. MLflow builds its schema in dozens of
    steps; a sweep killed among them would leave a database that no later run can open
    ("table ... already exists"). So the schema is built in a temporary file, which is then
    linked into place (no-clobber: a concurrent sweep's finished store wins)."""
    from mlflow.tracking import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{db.name}-", dir=db.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.unlink()  # sqlite creates it; MLflow wants a fresh database
        MlflowClient(f"sqlite:///{tmp}").search_experiments()  # builds the schema
        _dispose_engine(f"sqlite:///{tmp}")
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _dispose_engine(uri: str) -> None:
    """Close MLflow's cached connections to the temporary file before it is unlinked."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    def __init__(self, grid: str, description: str = "") -> None:
        import logging

        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri())
        exp = self.client.get_experiment_by_name(grid)
        artifacts = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # keep artifacts beside the database
            artifacts = (results_dir() / "mlartifacts").resolve().as_uri()
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            grid, artifact_location=artifacts, tags={"mlflow.note.content": description})
        self.commit = git_commit()

    def _cell_runs(self, status: str):
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_KIND}` = 'cell' and attributes.status = '{status}'",
            max_results=50000)

    def finished(self) -> set[str]:
        return {r.data.tags[TAG_HASH] for r in self._cell_runs("FINISHED")}

    def close_stale(self) -> int:
        """Mark runs a killed sweep left RUNNING as KILLED; returns how many."""
        runs = self._cell_runs("RUNNING") + list(self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'sweep' and "
            "attributes.status = 'RUNNING'"))
        for r in runs:
            self.client.set_terminated(r.info.run_id, "KILLED")
        return len(runs)

    def start_sweep(self, n_cells: int, where: dict[str, str] | None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"sweep {time.strftime('%F %T')}",
                                     tags={TAG_KIND: "sweep", "vlmprune.git_commit": self.commit,
                                           "vlmprune.where": str(where or {})})
        self.client.log_param(run.info.run_id, "cells", n_cells)
        return run.info.run_id

    def end_sweep(self, run_id: str, failed: int, done: int) -> None:
        self.client.log_metric(run_id, "cells_failed", failed)
        self.client.log_metric(run_id, "cells_finished", done)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_cell(self, parent: str, cell: Cell, result: dict[str, Any] | None,
                 failure: str | None = None) -> str:
        from mlflow.entities import Metric, Param

        tags = {"mlflow.parentRunId": parent, TAG_KIND: "cell", TAG_HASH: cell.hash,
                "vlmprune.git_commit": self.commit,
                "vlmprune.status": "failed" if failure else "finished"}
        if failure:
            tags["vlmprune.failure"] = failure[:5000]
        run_id = self.client.create_run(self.experiment_id, run_name=cell.label,
                                        tags=tags).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat(cell.spec.model_dump()).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        if result is not None:
            now = int(time.time() * 1000)
            values = dict(result["metrics"])
            values |= {f"sparsity/{k}": v for k, v in result["sparsity"].items()}
            values |= {f"time/{k}": v for k, v in result["seconds"].items()}
            metrics = [Metric(k, float(v), now, 0) for k, v in values.items()]
            for i in range(0, len(metrics), 500):
                self.client.log_batch(run_id, metrics=metrics[i:i + 500])
            self.client.log_dict(run_id, result["prune"], "sparsity_report.json")
            self.client.log_dict(run_id, {k: v for k, v in result["recover"].items()},
                                 "recovery_report.json")
            self.client.log_dict(run_id, result["samples"], "eval_samples.json")
        self.client.set_terminated(run_id, "FAILED" if failure else "FINISHED")
        return run_id
