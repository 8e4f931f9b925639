"""The evaluation's metrics as lmms-eval names them (`task/metric`, e.g.
`shapes_vqa/exact_match`), and which of them summarize a task: what a sweep's table, a
search's default objective and a report's paper-width tables show."""

from __future__ import annotations

from collections.abc import Iterable


def headline(metrics: dict[str, float]) -> list[tuple[str, float]]:
    """The metrics a summary shows: the overall score of each task (per-type scores such as
    `shapes_vqa/count_exact_match` left out); the first two when no name is known."""
    keep = [k for k in metrics if k.endswith(("/exact_match", "/cider", "/acc"))
            and "_exact_match" not in k.split("/")[-1]]
    return [(k, metrics[k]) for k in (keep or list(metrics)[:2])]


def ranked(names: Iterable[str]) -> list[str]:
    """Headline metric names with accuracies (exact match, acc) before caption scores
    (CIDEr): the first is a search's default objective and the reports' y-axis."""
    keys = [k for k, _ in headline(dict.fromkeys(names, 0.0))]
    return sorted(keys, key=lambda k: k.endswith("/cider"))
