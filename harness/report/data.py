"""A grid's cells as a polars DataFrame, read from MLflow only (any tracking URI in force).

One row per cell (per cell hash: its FINISHED run if it has one, else its latest run, so a
failed, killed or still running cell shows with its status). Columns:
- `hash`, `cell` (the sweep's label), `status` (finished / failed / running / killed),
  `failure` (the reason of a failed cell), `race` and `race_note` (how a raced cell left the
  race: survived / stopped, and why), `commit` and library versions (tags);
- `p.<param>` for every cell parameter (`p.prune.method`, `p.prune.sparsity.vision`, ...);
- `target.<role>` and `sparsity.<role>` (target and achieved sparsity by role, and
  `sparsity.overall` over the pruned roles), `time.<stage>` (seconds);
- one column per task metric (`shapes_vqa/exact_match`, ...);
- `dense`: whether the cell is the dense reference (not pruned: its `prune` is null). It is
  no parameter (never one of the grid's axes) and no table prints it.

`aggregate()` folds cells that differ only by seed (the cell, calibration, pruning seeds)
into one row with mean, std and n per metric, so a table shows `0.912 ± 0.004 (n=3)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from harness.errors import UserError, unknown
from harness.fields import check_name
from harness.paths import results_dir
from harness.sweep import race_spec, result
from harness.sweep.tracking import TAG_HASH, TAG_KIND, quiet_mlflow, store_errors, tracking_uri

DENSE = "dense"  # the column saying a cell is the dense reference
PARTS = tuple(f"{p}." for p in result.PREFIXES)  # columns of a result's parts (`sparsity.vision`)
SEED_PARAMS = ("p.seed", "p.prune.calibration.seed", "p.prune.seed", "p.recover.seed")
STATUS = {"FINISHED": "finished", "FAILED": "failed", "RUNNING": "running", "KILLED": "killed",
          "SCHEDULED": "running"}
_RANK = {"finished": 0, "running": 1, "failed": 2, "killed": 3}


@dataclass
class Report:
    """What a report is made of: the grid's cells and what MLflow says about the grid."""

    grid: str
    description: str
    cells: pl.DataFrame  # one row per cell
    metrics: list[str]  # task metric columns, in first-seen order
    params: list[str]  # parameter columns that vary between cells (the grid's axes)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> pl.DataFrame:
        return self.cells.filter(pl.col("status") == "finished")


def load(grid: str, experiment: str | None = None, source: str | None = None) -> Report:
    """The grid's cells from the tracking store (read-only: nothing is created); `source`
    is the grid file when it is not found by name."""
    with store_errors():
        return _load(grid, experiment or grid, source or grid)


def _load(grid: str, experiment: str, source: str) -> Report:
    uri = tracking_uri(create=False)
    if uri is None:
        raise UserError(f"no MLflow store at {results_dir() / 'mlflow.db'}: run "
                        f"`vlmprune sweep {grid}` first, or set "
                        "MLFLOW_TRACKING_URI to the store that holds it")
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:  # the names one could ask for (any other is refused: fields.check_name)
        known = sorted(e.name for e in client.search_experiments() if _legal(e.name))

        raise unknown(f"experiment in {uri}", experiment, known)
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'cell'",
                              max_results=50000)
    rows = _rows(runs)
    current = _current(source) if experiment == grid else None
    outdated = 0
    if current is not None:
        kept = [r for r in rows if r["hash"] in current]
        outdated, rows = len(rows) - len(kept), kept
    if not rows:
        raise UserError(f"experiment '{experiment}' holds no cells of the grid as it is now "
                        f"yet: run `vlmprune sweep {grid}` first")
    report = frame(grid, exp.tags.get("mlflow.note.content", ""), rows, current)
    report.meta["outdated"] = outdated
    report.meta["uri"] = uri
    shown = {r["run_id"] for r in rows}
    heads = {h for r in runs if r.info.run_id in shown for h in result.headlines(r.data.tags)}
    report.meta["headline"] = [m for m in report.metrics if m in heads]  # the table's order
    return report


def _legal(name: str) -> bool:
    try:
        return bool(check_name(name))
    except ValueError:
        return False


def _current(grid: str) -> dict[str, int] | None:
    """The cell hashes of the grid as its file defines it now, each with its place in the
    grid's order, or None when it has no file (an experiment kept after its grid was
    deleted). Runs of cells the grid no longer has (an axis value removed, a default
    changed) stay in MLflow but leave the report."""
    from harness.sweep import grid as grids

    try:
        return {c.hash: i for i, c in enumerate(grids.expand(grid)[1])}
    except UserError:
        return None


def _rows(runs) -> list[dict[str, Any]]:
    best: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
    for r in runs:
        tags, data = r.data.tags, r.data
        status = STATUS.get(r.info.status, r.info.status.lower())
        row: dict[str, Any] = {
            "hash": tags.get(TAG_HASH, r.info.run_id), "cell": r.info.run_name or "",
            "status": status, "failure": tags.get("vlmprune.failure", ""),
            "race": tags.get(race_spec.TAG, ""), "race_note": tags.get(race_spec.TAG_NOTE, ""),
            "commit": tags.get("vlmprune.git_commit", "unknown"),
            "versions": ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sorted(tags.items())
                                  if k.startswith("vlmprune.version.")),
            "run_id": r.info.run_id}
        row |= {f"p.{k}": v for k, v in data.params.items()}
        row |= result.columns(data.metrics)
        rank = (_RANK.get(status, 9), -(r.info.start_time or 0))
        if row["hash"] not in best or rank < best[row["hash"]][0]:
            best[row["hash"]] = (rank, row)
    return [row for _, row in best.values()]


def frame(grid: str, description: str, rows: list[dict[str, Any]],
          order: dict[str, int] | None = None) -> Report:
    """A Report from row dicts (as `_rows` makes them), in the grid's own order (`order`:
    each cell hash's place; the order its axes list their values in, so a table reads as
    the grid is written), else sorted by the varying parameters."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    data = {k: [row.get(k) for row in rows] for k in keys}
    for k in keys:
        if k.startswith(PARTS) or "/" in k:
            data[k] = [None if v is None else float(v) for v in data[k]]
        elif k.startswith("p."):
            data[k] = [None if v is None else str(v) for v in data[k]]
    cells = pl.DataFrame(data)
    # a dense cell's `prune` is null, which MLflow holds as the string "None"
    dense = pl.col("p.prune").eq_missing("None") if "p.prune" in cells.columns else pl.lit(False)
    cells = cells.with_columns(dense.alias(DENSE))
    metrics = [k for k in keys if "/" in k and not k.startswith(PARTS)]
    params = _grid_order([k for k in keys if k.startswith("p.") and k not in SEED_PARAMS
                          and k != "p.prune" and _varies(cells, k)], cells)
    if order is not None:
        place = pl.col("hash").replace_strict(order, default=len(order), return_dtype=pl.Int64)
        cells = cells.with_columns(place.alias("_place")).sort("_place", "cell").drop("_place")
    elif params:
        cells = cells.sort([*params, "cell"], nulls_last=False)
    else:
        cells = cells.sort("cell")
    return Report(grid, description, cells, metrics, params)


def _varies(cells: pl.DataFrame, key: str) -> bool:
    """A parameter is one of the grid's axes if it takes two values among the cells where it
    has an effect: pruned cells for `prune.*`, training cells for `recover.*`."""
    values = cells
    if key.startswith("p.recover.") and key != "p.recover.method" \
            and "p.recover.method" in cells.columns:
        values = cells.filter(pl.col("p.recover.method") != "none")
    return values[key].drop_nulls().n_unique() > 1


def takes_effect(row: dict, key: str) -> bool:
    """Whether a parameter means anything for this row (see `_varies`)."""
    if key.startswith("p.recover.") and key != "p.recover.method":
        return row.get("p.recover.method") not in ("none", None)
    return row.get(key) is not None


def _grid_order(params: list[str], cells: pl.DataFrame) -> list[str]:
    """The parameters in the order the grid's axes give them (a cell's label lists its
    overrides in that order; the fullest label decides), not in the order runs happen to be
    read, which follows their hashes."""
    labels = [str(x) for x in cells["cell"].to_list()] if "cell" in cells.columns else []
    fullest = max(labels, key=lambda la: la.count("="), default="")
    order = [part.split("=", 1)[0] for part in fullest.split(", ")]
    rank = {f"p.{k}": i for i, k in enumerate(order)}
    return sorted(params, key=lambda k: (rank.get(k, len(rank)), params.index(k)))


def setting_columns(report: Report) -> list[str]:
    """Every parameter but the seeds: cells equal in these are repeats of one setting."""
    return [c for c in report.cells.columns if c.startswith("p.") and c not in SEED_PARAMS]


def aggregate(report: Report) -> pl.DataFrame:
    """Finished cells folded over seeds: per setting, `<metric>`, `<metric>.std`, `n`, and
    `runs` (its run ids); the sparsity and time columns averaged too (they differ only
    through recovery)."""
    done = report.finished
    if done.is_empty():
        return done.with_columns(pl.lit(0).alias("n"))
    keys = [c for c in setting_columns(report) if c in done.columns]
    numeric = [c for c in done.columns if c in report.metrics
               or c.startswith(PARTS)]
    aggs = [pl.len().alias("n"), pl.col("cell").first(), pl.col("hash").first(),
            pl.col(DENSE).first()]  # one value per setting: `prune` is a setting's
    if "run_id" in done.columns:  # the setting's runs (significance.py reads their samples)
        aggs.append(pl.col("run_id").alias("runs"))
    aggs += [pl.col(c).first() for c in ("race", "race_note") if c in done.columns]
    aggs += [pl.col(c).mean() for c in numeric]
    aggs += [pl.col(c).std(ddof=1).alias(f"{c}.std") for c in report.metrics]
    seeds = [c for c in SEED_PARAMS if c in done.columns]
    aggs += [pl.col(c).unique().sort().str.join(",").alias(c) for c in seeds]
    out = done.group_by(keys, maintain_order=True).agg(aggs)
    return out.with_columns(pl.col("cell").map_elements(_without_seed, return_dtype=pl.String))


def _without_seed(label: str) -> str:
    return ", ".join(p for p in label.split(", ") if not p.startswith("seed=")) or "base"
