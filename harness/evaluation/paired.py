"""Paired comparisons of settings scored on the same documents.

Every cell of a grid answers the same documents, so two settings differ document by
document: the strongest comparison there is. A setting is one run, or several that differ
only by seed; its score is the mean of its runs' scores, and on each bootstrap resample
(`intervals.weights`, the same draws for every setting) the mean of its runs' resampled
scores. Documents are those every run of both settings answered.

- `compare(a, b, metric)`: B − A with the 95% interval of the resampled differences and a
  two-sided p-value: exact McNemar when both settings are one run and the metric is a mean
  of 0/1 scores (exact match, accuracy), else the paired bootstrap's (how often a resampled
  difference lies as far from the observed one as the observed one lies from 0).
- `best_group`: the settings not significantly different from the top one, Holm-corrected
  over the comparisons with it: what a report marks as best instead of a single cell.

Where a setting has seeds, its interval is over documents with the seeds held fixed (the
spread a reader would see scoring the same models on other documents); the seed spread is
the std over its runs, shown beside it. Both are shown, not merged: with few seeds an
estimate of the seed variance is itself too noisy to fold into one interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.evaluation import intervals
from harness.evaluation.intervals import Metric

if TYPE_CHECKING:
    import numpy as np

Rows = list[dict[str, Any]]  # one run's documents of one task
ALPHA = 0.05


@dataclass(frozen=True)
class Score:
    """A setting's score on given documents: the point, and one value per resample."""

    value: float
    resampled: np.ndarray
    docs: int
    runs: int

    def interval(self, level: float = intervals.LEVEL) -> tuple[float, float] | None:
        return intervals.bounds(self.resampled, level)


@dataclass(frozen=True)
class Difference:
    """B − A on the documents both answered."""

    a: float
    b: float
    delta: float
    lo: float
    hi: float
    p: float
    test: str  # "mcnemar" or "bootstrap"
    docs: int


def common_docs(*settings: Sequence[Rows]) -> list[Any]:
    """The document ids every run of every setting answered, sorted."""
    ids = None
    for runs in settings:
        for rows in runs:
            have = {r["doc_id"] for r in rows}
            ids = have if ids is None else ids & have
    return sorted(ids or ())


def _on(rows: Rows, docs: list[Any]) -> Rows:
    by_id = {r["doc_id"]: r for r in rows}
    return [by_id[d] for d in docs]


def score(runs: Sequence[Rows], metric: Metric, docs: list[Any]) -> Score | None:
    """A setting's score on `docs` (sorted ids): the mean over its runs, point and
    resampled; None when a run lacks the metric's per-document values."""
    import numpy as np

    ones = np.ones((1, len(docs)))
    points, vectors = [], []
    for rows in runs:
        on = _on(rows, docs)
        point, vec = intervals.resampled(on, metric, ones), intervals.resampled(on, metric)
        if point is None or vec is None:
            return None
        points.append(float(point[0]))
        vectors.append(vec)
    size = min(len(v) for v in vectors)
    return Score(float(np.mean(points)), np.mean([v[:size] for v in vectors], axis=0),
                 len(docs), len(runs))


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def binary(runs: Sequence[Rows], metric: Metric, docs: list[Any]) -> list[Any] | None:
    """The one run's 0/1 values on `docs` (None for a document without one), when McNemar
    applies: one run, a mean of 0/1 scores; else None."""
    if len(runs) != 1 or not intervals.is_mean(metric.aggregation):
        return None
    values = [r.get(metric.name) for r in _on(runs[0], docs)]
    if any(v not in (0, 1, 0.0, 1.0, True, False, None) for v in values):
        return None
    return values


def difference(sa: Score, sb: Score, xa: list | None = None,
               xb: list | None = None) -> Difference:
    """B − A from two settings' scores on the same documents; `xa`, `xb` their 0/1
    per-document values where McNemar applies (`binary`)."""
    import numpy as np

    size = min(len(sa.resampled), len(sb.resampled))
    diff = sb.resampled[:size] - sa.resampled[:size]
    delta = sb.value - sa.value
    lo, hi = intervals.bounds(diff) or (delta, delta)
    if xa is not None and xb is not None:
        pairs = [(x, y) for x, y in zip(xa, xb, strict=True) if x is not None and y is not None]
        p, test = mcnemar(sum(x > y for x, y in pairs), sum(y > x for x, y in pairs)), "mcnemar"
    else:
        d = diff[~np.isnan(diff)]
        far = int(np.sum(np.abs(d - delta) >= abs(delta))) if len(d) else 0
        p, test = min(1.0, (far + 1) / (len(d) + 1)), "bootstrap"
    return Difference(sa.value, sb.value, delta, lo, hi, p, test, sa.docs)


def compare(a: Sequence[Rows], b: Sequence[Rows], metric: Metric) -> Difference | None:
    """B − A on the documents every run of both answered (see the module's doc)."""
    docs = common_docs(a, b)
    sa, sb = score(a, metric, docs), score(b, metric, docs)
    if not docs or sa is None or sb is None:
        return None
    return difference(sa, sb, binary(a, metric, docs), binary(b, metric, docs))


def holm(ps: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


@dataclass
class Ranking:
    """A metric over settings: each one's score on the documents all of them answered, the
    best group, and each setting's difference from the top (setting − top)."""

    scores: dict[Any, Score]
    best: set[Any]
    diffs: dict[Any, Difference]


def best_group(settings: Mapping[Any, Sequence[Rows]], metric: Metric,
               alpha: float = ALPHA) -> Ranking:
    """The top setting (by its mean, in the metric's direction) and every setting not
    significantly different from it (Holm over the comparisons with it). Settings without
    per-document values are left out."""
    docs = common_docs(*settings.values())
    scores = {k: s for k, runs in settings.items() if (s := score(runs, metric, docs))}
    if not scores:
        return Ranking({}, set(), {})
    sign = 1 if metric.higher_is_better else -1
    top = max(scores, key=lambda k: sign * scores[k].value)
    xs = {k: binary(settings[k], metric, docs) for k in scores}
    diffs = {k: difference(scores[top], scores[k], xs[top], xs[k]) for k in scores if k != top}
    keys = list(diffs)
    adjusted = holm([diffs[k].p for k in keys])
    best = {top} | {k for k, p in zip(keys, adjusted, strict=True) if p >= alpha}
    return Ranking(scores, best, diffs)
