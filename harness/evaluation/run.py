"""Score an in-memory model on a named suite through lmms-eval's `simple_evaluate`.

`evaluate(adapter, "shapes", run_hash=...)` returns the per-task metrics
(`{"shapes_vqa/exact_match": 0.71, ...}`) and per-sample predictions, ready for tracking.
Suites live in suites.yaml; the shapes tasks ship in tasks/ and are found through
lmms-eval's TaskManager include path.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from loguru import logger
from pydantic import BaseModel, ConfigDict

from harness.errors import unknown
from harness.evaluation import meteor, task_index
from harness.evaluation.hub_data import offline, override, task_sources
from harness.paths import results_dir

if TYPE_CHECKING:
    from harness.models.adapter import Adapter

SUITES_FILE = Path(__file__).with_name("suites.yaml")
TASKS_DIR = Path(__file__).parent / "tasks"


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    tasks: list[str]
    limit: int | None = None
    builtin: bool = False  # lmms-eval's own tasks (hub datasets, checked offline first)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "task/metric"
    samples: dict[str, list[dict[str, Any]]]  # task -> [{doc_id, target, prediction, ...}]
    seconds: float = 0.0


def suites() -> dict[str, Suite]:
    data = yaml.safe_load(SUITES_FILE.read_text())
    return {name: Suite(**body) for name, body in data.items()}


def get_suite(name: str) -> Suite:
    known = suites()
    if name not in known:
        raise unknown("evaluation suite", name, known)
    return known[name]


@functools.cache
def task_manager(include_defaults: bool):
    """lmms-eval's TaskManager with the shapes tasks on its include path (indexing lmms-eval's
    hundreds of built-in task folders only when a suite needs them, from the user cache when
    it is current: harness/evaluation/task_index.py). lmms-eval logs through
    loguru, whose default prints DEBUG lines while the index is built: warnings only."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    return task_index.manager(str(TASKS_DIR), include_defaults)


def check_offline(tasks: list[str], tm) -> dict[str, list]:
    """Where each built-in task's data lies on this machine (`hub_data.locate`): a one-line
    `UserError` naming the task, the dataset and a working remedy when any is missing."""
    found = {}
    for task in tasks:
        if task not in tm.all_tasks:
            raise unknown("lmms-eval task", task, tm.all_tasks)
        found[task] = task_sources(task, tm._get_config(task))
    return found


CAPTION_METRICS = ("cider", "bleu", "meteor", "rouge", "spice")


def task_kind(config: dict) -> str:
    """"caption" when the task scores its answers with caption metrics (CIDEr, BLEU, METEOR,
    ROUGE, SPICE: its own `metric_list` says so), else "vqa"."""
    names = [str(m.get("metric", "")).lower() for m in config.get("metric_list") or []
             if isinstance(m, dict)]
    return "caption" if any(c in n for n in names for c in CAPTION_METRICS) else "vqa"


def output_dir(run_hash: str) -> Path:
    """Where lmms-eval writes a run's files (its tasks' `submissions/`): under results/."""
    name = re.sub(r"[^\w.-]+", "_", run_hash).strip("_")[:100] or "eval"
    return results_dir() / "lmms-eval" / name


def evaluate(adapter: Adapter | None, suite: str = "shapes", run_hash: str = "",
             limit: int | None = None, batch_size: int = 32, response_cache: Path | None = None,
             lm=None, progress: bool = True) -> EvalResult:
    """Run a suite on a model in memory (or on a ready `VlmpruneLM` passed as `lm`)."""
    offline()
    from lmms_eval.evaluator import simple_evaluate

    from harness.evaluation.lmms_model import VlmpruneLM

    s = get_suite(suite)
    if s.builtin:  # its caption tasks score METEOR
        meteor.make_lazy()
    tm = task_manager(s.builtin)
    found = check_offline(s.tasks, tm) if s.builtin else {}
    if lm is None:
        lm = VlmpruneLM(adapter=adapter, run_hash=run_hash, batch_size=batch_size,
                        progress=progress)
    bare = not lm.adapter.prompts.instructions
    tasks = [override(t, tm._get_config(t), found[t], bare) if s.builtin else t
             for t in s.tasks]
    lm.task_kinds.update({t: task_kind(tm._get_config(t)) for t in s.tasks})
    t0 = time.perf_counter()
    out = simple_evaluate(
        model=lm, tasks=tasks, task_manager=tm,
        limit=limit if limit is not None else s.limit, log_samples=True, bootstrap_iters=0,
        use_cache=str(response_cache) if response_cache is not None else None,
        verbosity="WARNING", process_docs_parallel=1,
        cli_args=argparse.Namespace(output_path=str(output_dir(run_hash)),
                                    process_with_media=True),
    )
    seconds = time.perf_counter() - t0
    return EvalResult(metrics(out), samples(out), seconds)


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


def samples(out: dict) -> dict[str, list[dict[str, Any]]]:
    res = {}
    for task, rows in out.get("samples", {}).items():
        res[task] = [{"doc_id": r["doc_id"], "target": r.get("target"),
                      "prediction": _first(r.get("filtered_resps")),
                      **{k: v for k, v in r.items()
                         if isinstance(v, int | float) and not isinstance(v, bool)
                         and k != "doc_id"}}
                     for r in rows]
    return res


def _first(x: Any) -> Any:
    while isinstance(x, list | tuple) and x:
        x = x[0]
    return x
