"""Score an in-memory model on a suite through lmms-eval's `simple_evaluate`.

`evaluate(adapter, "shapes", run_hash=...)` returns the per-task metrics
(`{"shapes_vqa/exact_match": 0.71, ...}`), each task's headline metric and the per-sample
predictions, ready for tracking. A suite is a name (suites.yaml) or a resolved `Suite`
(suite.py: a task list, a user's suite); the shapes tasks ship in tasks/ and are found
through lmms-eval's TaskManager include path.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.evaluation import intervals, meteor
from harness.evaluation.hub_data import offline, override
from harness.evaluation.suite import (
    Suite,
    check,
    get_suite,
    headline,
    is_local,
    task_kind,
    task_manager,
)
from harness.paths import results_dir

if TYPE_CHECKING:
    from harness.models.adapter import Adapter


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "task/metric"
    samples: dict[str, list[dict[str, Any]]]  # task -> [{doc_id, target, prediction, ...}]
    seconds: float = 0.0
    headline: list[str] = field(default_factory=list)  # each task's first listed metric
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95%, bootstrap


def output_dir(run_hash: str) -> Path:
    """Where lmms-eval writes a run's files (its tasks' `submissions/`): under results/."""
    name = re.sub(r"[^\w.-]+", "_", run_hash).strip("_")[:100] or "eval"
    return results_dir() / "lmms-eval" / name


def evaluate(adapter: Adapter | None, suite: str | Suite = "shapes", run_hash: str = "",
             limit: int | None = None, batch_size: int = 32, response_cache: Path | None = None,
             lm=None, progress: bool = True, offset: int = 0) -> EvalResult:
    """Run a suite (a shipped suite's name, or a resolved `Suite`) on a model in memory (or
    on a ready `VlmpruneLM` passed as `lm`); each task's documents from the `offset`-th
    (document ids stay the task's own)."""
    offline()
    from lmms_eval.evaluator import simple_evaluate

    from harness.evaluation.lmms_model import VlmpruneLM

    s = get_suite(suite) if isinstance(suite, str) else suite
    if s.builtin:  # its caption tasks score METEOR
        meteor.make_lazy()
    found = check(s)  # one line for an unknown task or missing data, before any work
    tm = task_manager(s.builtin)
    if lm is None:
        lm = VlmpruneLM(adapter=adapter, run_hash=run_hash, batch_size=batch_size,
                        progress=progress)
    bare = not lm.adapter.prompts.instructions
    configs = {t: tm._get_config(t) for t in s.tasks}
    tasks = [t if is_local(t) else override(t, configs[t], found[t], bare) for t in s.tasks]
    lm.task_kinds.update({t: task_kind(configs[t]) for t in s.tasks})
    t0 = time.perf_counter()
    out = simple_evaluate(
        model=lm, tasks=tasks, task_manager=tm,
        limit=limit if limit is not None else s.limit, offset=offset, log_samples=True,
        bootstrap_iters=0,
        use_cache=str(response_cache) if response_cache is not None else None,
        verbosity="WARNING", process_docs_parallel=1,
        cli_args=argparse.Namespace(output_path=str(output_dir(run_hash)),
                                    process_with_media=True),
    )
    seconds = time.perf_counter() - t0
    scores = metrics(out)
    heads = [h for t in s.tasks if (h := headline(t, configs[t], scores)) is not None]
    kinds = {t: intervals.task_metrics(tm._get_config(t)) for t in s.tasks}  # functions
    kept = samples(out, {t: [m.name for m in ms] for t, ms in kinds.items()})
    spread = intervals.of_samples(kept, lambda t: kinds.get(t, []), scores)
    return EvalResult(scores, kept, seconds, heads, spread)


def metrics(out: dict) -> dict[str, float]:
    """`task/metric` for every numeric metric lmms-eval reports (filter suffix dropped)."""
    res = {}
    for task, vals in out.get("results", {}).items():
        for key, v in vals.items():
            name = key.split(",")[0]
            if "_stderr" in name or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            res[f"{task}/{name}"] = float(v)
    return res


def samples(out: dict, metric_items: dict[str, list[str]] | None = None
            ) -> dict[str, list[dict[str, Any]]]:
    """Each task's documents: id, target, prediction, every number the task's scoring gave
    it, and the per-document value of each metric its metric list names (a corpus metric's
    item, such as CIDEr's prediction and reference: what a resample recomputes it from)."""
    res = {}
    for task, rows in out.get("samples", {}).items():
        named = set((metric_items or {}).get(task, []))
        res[task] = [{"doc_id": r["doc_id"], "target": r.get("target"),
                      "prediction": _first(r.get("filtered_resps")),
                      **{k: v for k, v in r.items()
                         if k != "doc_id" and (k in named and _plain(v) or isinstance(
                             v, int | float) and not isinstance(v, bool))}}
                     for r in rows]
    return res


def _plain(v: Any) -> bool:
    """JSON data (what samples.json and the MLflow artifact can hold as it is)."""
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, list | tuple):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, str | int | float | bool)


def _first(x: Any) -> Any:
    while isinstance(x, list | tuple) and x:
        x = x[0]
    return x
