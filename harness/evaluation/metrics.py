"""The evaluation's metrics as lmms-eval names them (`task/metric`, e.g.
`shapes_vqa/exact_match`), and which of them summarize a task: what a sweep's table, a
search's default objective and a report's paper-width tables show.

Each task's headline is the first metric of its own `metric_list` (recorded when it is
evaluated: `suite.headline`). Results stored before that was recorded carry none: for them
the overall exact match, CIDEr or accuracy of each task is taken, as it was then."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CAPTION_METRICS = ("cider", "bleu", "meteor", "rouge", "spice")


def is_caption(name: str) -> bool:
    """A caption score (CIDEr, BLEU, METEOR, ROUGE, SPICE), by the metric part of its name."""
    metric = name.split("/")[-1].lower()
    return any(c in metric for c in CAPTION_METRICS)


def headline(metrics: dict[str, float],
             listed: Sequence[str] = ()) -> list[tuple[str, float]]:
    """The metrics a summary shows: each task's headline (`listed`, those reported), else
    the overall score of each task (per-type scores such as `shapes_vqa/count_exact_match`
    left out); the first two when no name is known."""
    keep = [k for k in listed if k in metrics]
    if not keep:
        keep = [k for k in metrics if k.endswith(("/exact_match", "/cider", "/acc"))
                and "_exact_match" not in k.split("/")[-1]]
    return [(k, metrics[k]) for k in (keep or list(metrics)[:2])]


def ranked(names: Iterable[str], listed: Sequence[str] = ()) -> list[str]:
    """Headline metric names with accuracies before caption scores: the first is a
    search's default objective and the reports' y-axis."""
    keys = [k for k, _ in headline(dict.fromkeys(names, 0.0), listed)]
    return sorted(keys, key=is_caption)
