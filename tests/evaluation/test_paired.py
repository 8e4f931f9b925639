"""Paired comparisons: exact McNemar and the paired bootstrap on the documents two settings
share, Holm's correction, and the group of settings not significantly behind the top."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.evaluation import paired
from harness.evaluation.intervals import Metric
from tests.evaluation.test_intervals import corpus

pytestmark = pytest.mark.unit

EM = Metric("exact_match", "mean")


def run(p: float, n: int = 600, seed: int = 0, base: np.ndarray | None = None,
        flip: float = 0.0) -> list[dict]:
    """One run's documents: right with probability p, or `base`'s answers with a share
    `flip` of them changed (a setting close to another one, on the same documents)."""
    rng = np.random.default_rng(seed)
    hits = rng.random(n) < p if base is None else np.where(rng.random(n) < flip, ~base, base)
    return [{"doc_id": i, "exact_match": float(h)} for i, h in enumerate(hits)]


def hits(rows: list[dict]) -> np.ndarray:
    return np.array([r["exact_match"] == 1.0 for r in rows])


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs():
    for b, c in ((3, 11), (20, 20), (0, 7), (41, 60)):
        assert paired.mcnemar(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    assert paired.mcnemar(0, 0) == 1.0


def test_holm_adjusts_in_order():
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert paired.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_a_clear_difference_is_significant_and_a_small_one_is_not():
    a = run(0.6)
    better = run(0.0, base=hits(a) | (np.random.default_rng(1).random(600) < 0.3))
    d = paired.compare([a], [better], EM)
    assert d.test == "mcnemar" and d.delta > 0.1 and 0 < d.lo <= d.delta <= d.hi
    assert d.p < 1e-6 and d.docs == 600
    close = [dict(r) for r in a]  # six answers changed, three each way
    for r in [r for r in close if r["exact_match"]][:3] + [r for r in close
                                                           if not r["exact_match"]][:3]:
        r["exact_match"] = 1.0 - r["exact_match"]
    d = paired.compare([a], [close], EM)
    assert d.lo < 0 < d.hi and d.p > 0.05


def test_pairing_sees_what_two_independent_intervals_miss():
    """Two settings 2 points apart whose answers differ on few documents: their own
    intervals overlap, the paired difference does not hold 0."""
    a = run(0.7, n=1000)
    b = [dict(r) for r in a]
    wrong = [r for r in b if r["exact_match"] == 0.0][:25]
    for r in wrong:
        r["exact_match"] = 1.0
    sa, sb = (paired.score([x], EM, list(range(1000))) for x in (a, b))
    assert sa.interval()[1] > sb.interval()[0]  # overlapping
    d = paired.compare([a], [b], EM)
    assert d.lo > 0 and d.p < 1e-6


def test_seeds_and_corpus_metrics_use_the_paired_bootstrap_on_shared_documents():
    preds, refs = corpus(120)
    other, _ = corpus(120, seed=5)

    def cap(p: list[str], keep: int = 120) -> list[dict]:
        return [{"doc_id": i, "cider": {"pred": x, "ref": y}}
                for i, (x, y) in enumerate(zip(p, refs, strict=True)) if i < keep]

    from harness.evaluation.tasks.shapes.utils import cider_aggregation

    cider = Metric("cider", cider_aggregation)
    good, bad = [cap(preds), cap(preds, 100)], [cap(other), cap(other)]
    d = paired.compare(bad, good, cider)
    assert d.test == "bootstrap" and d.docs == 100  # the documents all four runs answered
    assert d.delta > 0 and d.lo > 0 and d.p < 0.01
    same = paired.compare(good, [cap(preds)], cider)
    assert same.delta == pytest.approx(0.0, abs=1e-9) and same.p == 1.0


def test_the_best_group_holds_what_is_not_significantly_behind_the_top():
    top = run(0.8, n=800)
    near = run(0.0, n=800, base=hits(top), flip=0.005)
    far = run(0.5, n=800, seed=3)
    ranking = paired.best_group({"top": [top], "near": [near], "far": [far]}, EM)
    assert {"near", "far"} == set(ranking.diffs)
    assert ranking.diffs["far"].delta < -0.2 and ranking.diffs["far"].p < 1e-6
    lower = Metric("exact_match", "mean", higher_is_better=False)
    assert paired.best_group({"top": [top], "far": [far]}, lower).best == {"far"}
    assert ranking.best in ({"top", "near"}, {"near", "top"})
    assert ranking.scores["near"].interval()[0] < ranking.scores["near"].value
