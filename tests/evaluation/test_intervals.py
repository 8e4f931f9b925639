"""Bootstrap intervals over documents: every resample's score is the metric's own
aggregation of that resample's documents (pycocoevalcap's CIDEr-D and BLEU-4 recomputed,
means over the documents that report a metric, any other aggregation called), drawn from a
seed fixed by the document count; and a cell's intervals travel to MLflow and back."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from harness.evaluation import intervals
from harness.evaluation.intervals import Metric
from harness.evaluation.scoring import bleu4, bleu4_resampled, cider, cider_resampled
from harness.sweep.result import CellResult

pytestmark = pytest.mark.unit

WORDS = "a red blue green small big circle square triangle and two three left of right".split()


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS, rng.integers(2, 10)))

    refs = [sentence() for _ in range(n)]
    preds = [r if rng.random() < 0.4 else sentence() for r in refs]
    preds[1] = ""  # an empty answer is scored as pycocoevalcap's "empty"
    return preds, refs


def drawn(items: list, row: np.ndarray) -> list:
    """A resample's documents, as a list (document i `row[i]` times)."""
    return [items[i] for i in np.repeat(np.arange(len(items)), row.astype(int))]


def test_weights_are_resamples_of_the_documents_fixed_by_their_count():
    w = intervals.weights(50)
    assert w.shape == (intervals.RESAMPLES, 50) and (w.sum(1) == 50).all()
    assert (intervals.weights(50) == w).all()  # the same documents resample the same way
    assert not (intervals.weights(51)[:, :50] == w).all()
    assert w.std(0).mean() == pytest.approx(1.0, abs=0.05)  # multinomial(n, 1/n): var ≈ 1


def test_caption_scores_are_recomputed_on_every_resample():
    preds, refs = corpus(60)
    w = intervals.weights(60)[:5]
    assert cider_resampled(preds, refs, np.ones((1, 60)))[0] == pytest.approx(
        cider(preds, refs), abs=1e-9)
    assert bleu4_resampled(preds, refs, np.ones((1, 60)))[0] == pytest.approx(
        bleu4(preds, refs), abs=1e-12)
    fast_c, fast_b = cider_resampled(preds, refs, w), bleu4_resampled(preds, refs, w)
    for row, c, b in zip(w, fast_c, fast_b, strict=True):
        assert c == pytest.approx(cider(drawn(preds, row), drawn(refs, row)), abs=1e-9)
        assert b == pytest.approx(bleu4(drawn(preds, row), drawn(refs, row)), abs=1e-12)
    assert len(set(np.round(fast_c, 9))) == 5  # each resample its own corpus
    # the shapes task's own aggregations take that path: every resample, not the fallback's
    from harness.evaluation.tasks.shapes import utils

    items = [{"doc_id": i, "cider": {"pred": p, "ref": r}}
             for i, (p, r) in enumerate(zip(preds, refs, strict=True))]
    got = intervals.resampled(items, Metric("cider", utils.cider_aggregation))
    assert len(got) == intervals.RESAMPLES and got[0] == pytest.approx(
        cider(drawn(preds, intervals.weights(60)[0]), drawn(refs, intervals.weights(60)[0])))


def test_a_mean_counts_the_documents_that_report_it():
    rng = np.random.default_rng(1)
    rows = [{"doc_id": i, "exact_match": float(rng.random() < 0.6),
             **({"color_exact_match": float(rng.random() < 0.3)} if i % 3 == 0 else {})}
            for i in range(40)]
    w = intervals.weights(40)[:20]
    got = intervals.resampled(rows, Metric("color_exact_match", "mean"), w)
    for row, g in zip(w, got, strict=True):
        picked = [r["color_exact_match"] for r in drawn(rows, row) if "color_exact_match" in r]
        assert g == pytest.approx(statistics.fmean(picked))
    everything = intervals.resampled(rows, Metric("exact_match", "mean"), w)
    assert everything[0] == pytest.approx(statistics.fmean(
        r["exact_match"] for r in drawn(rows, w[0])))


def test_any_other_aggregation_is_called_on_each_resample():
    rows = [{"doc_id": i, "score": float(i % 7)} for i in range(30)]
    got = intervals.resampled(rows, Metric("score", statistics.median))
    w = intervals.weights(30)
    assert len(got) == intervals.FALLBACK
    assert list(got[:3]) == [statistics.median(r["score"] for r in drawn(rows, w[i]))
                             for i in range(3)]

    def needs_more(items, args):  # lmms-eval's submission writers: no number, no interval
        return 0.0

    assert intervals.resampled(rows, Metric("score", needs_more)) is None


def test_the_interval_holds_the_score_and_narrows_with_more_documents():
    rng = np.random.default_rng(2)

    def width(n: int) -> float:
        rows = [{"doc_id": i, "em": float(rng.random() < 0.7)} for i in range(n)]
        lo, hi = intervals.bounds(intervals.resampled(rows, Metric("em", "mean")))
        mean = statistics.fmean(r["em"] for r in rows)
        assert lo <= mean <= hi
        # a mean's bootstrap: ± 1.96 standard errors
        assert hi - lo == pytest.approx(2 * 1.96 * (mean * (1 - mean) / n) ** 0.5, rel=0.1)
        return hi - lo

    assert width(1600) < width(400) / 1.7


def test_samples_of_unknown_shape_give_no_interval_and_intervals_round_trip_mlflow():
    samples = {"t": [{"doc_id": i, "em": float(i % 2)} for i in range(10)],
               "old": [{"doc_id": 0, "prediction": "x"}]}
    metrics_of = {"t": [Metric("em", "mean"), Metric("gone", "mean")],
                  "old": [Metric("em", "mean")]}
    got = intervals.of_samples(samples, metrics_of.__getitem__,
                               {"t/em", "t/gone", "old/em"})
    assert set(got) == {"t/em"}
    res = CellResult(metrics={"t/em": 0.5}, sparsity={"overall": 0.5}, intervals=got)
    back = CellResult.from_mlflow(res.to_mlflow())
    assert back.metrics == {"t/em": 0.5} and back.intervals == got
