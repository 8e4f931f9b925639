"""Bootstrap intervals over documents: how far a score could move on another draw of the
same number of documents.

A cell's evaluation keeps every document's own score (lmms-eval's `process_results` output,
in its samples). Resampling the documents with replacement, `RESAMPLES` times from a fixed
seed, gives each metric a distribution; its 2.5th and 97.5th percentiles are the 95%
interval. The resamples are a function of the document count alone (`weights`), so two cells
scored on the same documents are resampled identically: their differences pair document by
document (`paired.py`).

- A metric aggregated by its mean (exact match, accuracy) is resampled exactly as a mean,
  over the documents that report it (a per-type score counts the documents of its type).
- A corpus-level metric is recomputed on every resample: the shapes tasks' CIDEr-D and
  BLEU-4 through `scoring.cider_resampled` / `bleu4_resampled` (`_fast`; all resamples at once,
  exactly pycocoevalcap's score of each resampled corpus); any other aggregation (a hub
  task's) is called on each of the first `FALLBACK` resamples' documents, since it may cost
  seconds a call.
- 2000 resamples put a bound's Monte Carlo error near 0.1 point for an accuracy over 1000
  documents (the benchmark `benchmarks/intervals.py` measures it by reseeding).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from loguru import logger

from harness.evaluation.scoring import bleu4_resampled, cider_resampled
from harness.evaluation.suite import TASKS_DIR, is_local, task_manager

if TYPE_CHECKING:
    import numpy as np

RESAMPLES, FALLBACK, SEED, LEVEL = 2000, 200, 20261203, 0.95
SHAPES_TASKS = (TASKS_DIR / "shapes").resolve()


@dataclass(frozen=True)
class Metric:
    """How a task aggregates one metric: its name, its aggregation (lmms-eval's name such
    as "mean", or the function a task YAML names) and its direction."""

    name: str
    aggregation: str | Callable[[list], float]
    higher_is_better: bool = True


def task_metrics(config: dict[str, Any]) -> list[Metric]:
    """A task's metrics from its config as lmms-eval loads it (`!function` resolved)."""
    out = []
    for m in config.get("metric_list") or []:
        if isinstance(m, dict) and m.get("metric"):
            out.append(Metric(str(m["metric"]), m.get("aggregation") or "mean",
                              bool(m.get("higher_is_better", True))))
    return out


def metric_of(key: str) -> Metric | None:
    """A `task/metric` name's definition (aggregation, direction), from its task's config
    as lmms-eval loads it; None when the task or metric is unknown here."""
    task, _, name = key.partition("/")
    return metrics_of(task).get(name)


@functools.cache
def metrics_of(task: str) -> dict[str, Metric]:
    """A task's metrics by name (empty for a task this install does not have). A shipped
    task's from its own YAML, its `!function`s imported only when called (a report or a
    race reads them without loading lmms-eval); any other task's from lmms-eval."""
    try:
        config = _local(task) if is_local(task) else task_manager(True)._get_config(task)
    except Exception as e:  # noqa: BLE001 - a task this install does not have: no intervals
        logger.debug(f"no metric definitions for {task}: {type(e).__name__}: {e}")
        return {}
    return {m.name: m for m in task_metrics(config)}


@functools.lru_cache(maxsize=8)
def weights(n_docs: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """resamples x documents: how often each document is drawn in each resample."""
    import numpy as np

    rng = np.random.default_rng([seed, n_docs])
    idx = rng.integers(0, n_docs, size=(resamples, n_docs))
    w = np.zeros((resamples, n_docs))
    np.add.at(w, (np.arange(resamples)[:, None], idx), 1.0)
    w.flags.writeable = False
    return w


def ordered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task's sample rows by document id: the order `weights` indexes."""
    return sorted(rows, key=lambda r: r["doc_id"])


def is_mean(agg: str | Callable) -> bool:
    return agg == "mean" or getattr(agg, "__name__", "") == "mean"


def resampled(rows: Sequence[dict[str, Any]], metric: Metric,
              w: np.ndarray | None = None) -> np.ndarray | None:
    """The metric on each resample of `rows` (sorted by document id); None when the rows do
    not hold the metric's per-document values (results stored before they were kept)."""
    import numpy as np

    w = weights(len(rows)) if w is None else w
    items = [r.get(metric.name) for r in rows]
    has = np.array([i is not None for i in items])
    if not has.any():
        return None
    if is_mean(metric.aggregation):
        try:
            x = np.array([float(i) if i is not None else 0.0 for i in items])
        except (TypeError, ValueError):
            return None
        count = w @ has
        return np.divide(w @ x, count, out=np.full(len(w), np.nan), where=count > 0)
    agg = metric.aggregation
    if isinstance(agg, str):
        from lmms_eval.api.registry import get_aggregation

        agg = get_aggregation(agg)
    fast = _fast(agg)
    if fast is not None and has.all():
        return np.asarray(fast(items, w), dtype=np.float64)
    keep = [i for i, h in zip(items, has, strict=True) if h]
    try:
        return np.array([float(agg([keep[j] for j in np.repeat(np.arange(len(keep)),
                                                                 row.astype(int))]))
                         for row in w[:FALLBACK][:, has]])
    except Exception as e:  # noqa: BLE001 - an aggregation that needs more than its items
        logger.debug(f"no interval for {metric.name}: its aggregation failed on a "
                     f"resample ({type(e).__name__}: {e})")
        return None


@dataclass(frozen=True)
class Named:
    """A shipped task file's `!function utils.name`: the function in that file, imported
    when first called."""

    file: str  # the task file's folder and module, as a path
    name: str

    def __call__(self, items: list) -> float:
        return getattr(_task_module(self.file), self.name)(items)


@functools.cache
def _task_module(file: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"vlmprune_task_{Path(file).stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _local(task: str) -> dict[str, Any]:
    """A shipped task's YAML, each `!function module.name` as a `Named`."""
    file = next(TASKS_DIR.rglob(f"{task}.yaml"))

    class Loader(yaml.SafeLoader):
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> Named:
        module, _, name = str(loader.construct_scalar(node)).rpartition(".")
        return Named(str(file.parent / f"{module}.py"), name)

    Loader.add_constructor("!function", function)
    return yaml.load(file.read_text(), Loader=Loader) or {}  # noqa: S506 - SafeLoader's


def _fast(agg: Callable) -> Callable | None:
    """The all-resamples-at-once version of a shapes task's corpus aggregation (its
    `tasks/shapes/utils.py` function, as lmms-eval loaded it or as `Named`). Kept here,
    not in the task file: that file's content is part of every eval stage's key."""
    if isinstance(agg, Named):
        where, name = Path(agg.file).resolve().parent, agg.name
    else:
        code = getattr(agg, "__code__", None)
        if code is None:
            return None
        where, name = Path(code.co_filename).resolve().parent, code.co_name
    if where != SHAPES_TASKS:
        return None
    scorer = {"cider_aggregation": cider_resampled,
              "bleu4_aggregation": bleu4_resampled}.get(name)
    if scorer is None:
        return None
    return lambda items, w: scorer([i["pred"] for i in items], [i["ref"] for i in items], w)


def bounds(values: np.ndarray | None, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval of resampled values."""
    import numpy as np

    if values is None:
        return None
    v = values[~np.isnan(values)]
    if not len(v):
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def of_samples(samples: dict[str, list[dict[str, Any]]],
               metrics_of: Callable[[str], list[Metric]],
               reported: Container[str]) -> dict[str, tuple[float, float]]:
    """`task/metric` -> its 95% interval, for every metric the evaluation `reported` as a
    number whose per-document values the samples hold (`metrics_of(task)` names each task's
    metrics)."""
    out = {}
    for task, rows in samples.items():
        rows = ordered(rows)
        for m in metrics_of(task):
            if f"{task}/{m.name}" not in reported:
                continue
            b = bounds(resampled(rows, m))
            if b is not None:
                out[f"{task}/{m.name}"] = b
    return out
