"""What a report says about spread: each setting's 95% interval over documents and, per
metric, the group of pruned settings not significantly different from the best one.

Read from every finished run's per-document scores (its `eval_samples.json` artifact) and
grouped as `data.aggregate` groups the runs into settings (`paired.py` does the
statistics). `annotate` adds, per metric `m`, the columns `m.lo` / `m.hi` (the interval)
and `m.best` (in the best group) to the aggregated frame; the tables and figures read them.
Runs stored before per-document scores were kept give no interval; when any pruned setting
lacks them, `m.best` falls back to the top mean alone (as reports did before).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from harness.evaluation import paired
from harness.evaluation.intervals import metric_of
from harness.evaluation.paired import Rows
from harness.report.data import DENSE, Report
from harness.sweep.result import ARTIFACTS

RUNS = "runs"  # the aggregated frame's column of each setting's run ids


def samples(uri: str, run_ids: list[str]) -> dict[str, dict[str, Rows]]:
    """Each run's per-document rows by task, from its samples artifact (runs without one
    left out)."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one per run
    client, out = MlflowClient(uri), {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            try:
                path = client.download_artifacts(run_id, ARTIFACTS["samples"], tmp)
            except Exception:  # noqa: BLE001 - a run logged without samples
                continue
            out[run_id] = json.loads(Path(path).read_text())
    return out


def annotate(report: Report, agg: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    """`agg` with `m.lo`, `m.hi` and `m.best` for each metric in `metrics`."""
    uri = report.meta.get("uri")
    runs = agg[RUNS].to_list() if RUNS in agg.columns and uri else [[] for _ in range(agg.height)]
    rows = samples(uri, [r for rs in runs for r in rs]) if uri else {}
    dense = agg[DENSE].to_list() if DENSE in agg.columns else [False] * agg.height
    columns = []
    for m in metrics:
        lo, hi, best = _metric(m, agg, runs, rows, dense)
        columns += [pl.Series(f"{m}.lo", lo, dtype=pl.Float64),
                    pl.Series(f"{m}.hi", hi, dtype=pl.Float64),
                    pl.Series(f"{m}.best", best, dtype=pl.Boolean)]
    return agg.with_columns(columns) if columns else agg


def _metric(key: str, agg: pl.DataFrame, runs: list[list[str]],
            rows: dict[str, dict[str, Rows]], dense: list[bool]
            ) -> tuple[list[float | None], list[float | None], list[bool]]:
    task = key.partition("/")[0]
    metric = metric_of(key)
    per: dict[int, list[Rows]] = {}
    for i, rs in enumerate(runs):
        got = [rows[r][task] for r in rs if task in rows.get(r, {})]
        if got and len(got) == len(rs):
            per[i] = got
    pruned = {i: v for i, v in per.items() if not dense[i]}
    want = [i for i in range(agg.height) if not dense[i] and agg[key][i] is not None]
    ranking = paired.best_group(pruned, metric) if metric and pruned else None
    scores: dict[Any, Any] = dict(ranking.scores) if ranking else {}
    if metric:
        for i, v in per.items():
            if i not in scores:  # the dense reference, or a setting on other documents
                scores[i] = paired.score(v, metric, paired.common_docs(v))
    bounds = [scores[i].interval() if scores.get(i) is not None else None
              for i in range(agg.height)]
    if ranking and set(want) <= set(ranking.scores):
        best = ranking.best
    else:  # some setting has no per-document scores: the top mean alone
        sign = 1 if metric is None or metric.higher_is_better else -1
        top = max((sign * agg[key][i] for i in want), default=None)
        best = {i for i in want if sign * agg[key][i] == top}
    return ([b[0] if b else None for b in bounds], [b[1] if b else None for b in bounds],
            [i in best for i in range(agg.height)])
