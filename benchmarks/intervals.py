"""Do the report's 95% intervals cover what they claim? The shapes world makes unlimited
test data: a pruned shapes-llava (magnitude, 60% of every vision and language Linear: a
score far from 0 and 1) answers a pool of fresh documents (the world's validation split),
and sets are drawn from the pool as a user's test set would be.

For each of `PAIRS` pairs of disjoint sets (VQA: 500 questions each, exact match; captions:
250 each, CIDEr-D), the interval of the first set (intervals.py: 2000 resamples, CIDEr
recomputed on each) is checked three ways:
- **truth**: does it cover the score it estimates? Exact match: the pool's mean. CIDEr is a
  corpus score whose expectation depends on the set's size (its idf comes from the set),
  so its truth is the mean CIDEr over every drawn set of that size.
- **other set, as is**: does it cover the second set's score? Not 95% even for a perfect
  interval: the second score has its own noise, so the two differ by sqrt(2) standard
  errors' worth; a normal approximation gives 83%.
- **other set, widened by sqrt(2)**: the prediction interval for another set's score; 95%
  if the interval's width is right.
Also the bound's stability: one set's bounds from 10 resampling seeds (the spread of each
bound, in points: 0.01 of exact match or of CIDEr-D, reported x100 in papers).

    .venv/bin/python benchmarks/intervals.py [--pairs 200] [--pool-vqa 20000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from harness import threads
from harness.evaluation import intervals
from harness.evaluation.intervals import Metric
from harness.evaluation.scoring import normalize
from harness.evaluation.tasks.shapes import utils
from harness.models.load import load
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample
from harness.zoo.check import prune_magnitude

SPLIT = "validation"


def answers(adapter, n_vqa: int, n_caption: int) -> tuple[list[float], list[dict]]:
    t0 = time.perf_counter()
    vqa = [vqa_sample(SPLIT, i) for i in range(n_vqa)]
    preds = adapter.generate([render(s.scene) for s in vqa],
                             [adapter.prompts.question(s.qa.question) for s in vqa],
                             max_new_tokens=8, batch_size=64)
    hits = [float(normalize(p) == normalize(s.qa.answer)) for p, s in zip(preds, vqa,
                                                                          strict=True)]
    caps = [caption_sample(SPLIT, i) for i in range(n_caption)]
    cpreds = adapter.generate([render(scene) for scene, _ in caps],
                              [adapter.prompts.caption] * n_caption, max_new_tokens=32,
                              batch_size=64)
    items = [{"pred": p, "ref": ref} for p, (_, ref) in zip(cpreds, caps, strict=True)]
    print(f"pool: {n_vqa} questions, {n_caption} captions answered in "
          f"{time.perf_counter() - t0:.0f} s")
    return hits, items


def rows(values: list, name: str) -> list[dict]:
    return [{"doc_id": i, name: v} for i, v in enumerate(values)]


def coverage(kind: str, pool: list, size: int, metric: Metric, pairs: int,
             truth_of=None) -> dict[str, float]:
    rng = random.Random(f"coverage-{kind}")
    firsts: list[tuple[float, tuple[float, float]]] = []
    seconds: list[tuple[float, tuple[float, float]]] = []
    for _ in range(pairs):
        picked = rng.sample(range(len(pool)), 2 * size)
        for half, out in ((picked[:size], firsts), (picked[size:], seconds)):
            r = rows([pool[i] for i in half], metric.name)
            ones = intervals.resampled(r, metric, np.ones((1, size)))
            b = intervals.bounds(intervals.resampled(r, metric))
            assert ones is not None and b is not None
            out.append((float(ones[0]), b))
    truth = truth_of() if truth_of else float(np.mean([p for p, _ in firsts + seconds]))
    cover = np.mean([lo <= truth <= hi for _, (lo, hi) in firsts])
    other = np.mean([lo <= p2 <= hi for (_, (lo, hi)), (p2, _) in zip(firsts, seconds,
                                                                        strict=True)])
    wide = np.mean([p1 - (p1 - lo) * 2**0.5 <= p2 <= p1 + (hi - p1) * 2**0.5
                    for (p1, (lo, hi)), (p2, _) in zip(firsts, seconds, strict=True)])
    width = np.mean([hi - lo for _, (lo, hi) in firsts])
    print(f"{kind:12s} n={size:4d} truth={truth:.4f} mean width={width:.4f}: covers truth "
          f"{cover:.1%}, the other set's score {other:.1%} (√2 wider: {wide:.1%})")
    return {"truth": float(cover), "other": float(other), "other_sqrt2": float(wide)}


def stability(pool: list, size: int, metric: Metric, scale: float) -> float:
    r = rows(pool[:size], metric.name)
    bounds = np.array([intervals.bounds(intervals.resampled(
        r, metric, intervals.weights(size, seed=seed))) for seed in range(10)])
    spread = float(bounds.std(0).max() / scale)
    print(f"{metric.name:12s} n={size}: std of a bound over 10 resampling seeds "
          f"{spread:.3f} points (largest of the two bounds)")
    return spread


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--pool-vqa", type=int, default=20000)
    ap.add_argument("--pool-caption", type=int, default=8000)
    a = ap.parse_args()
    threads.count(None)
    adapter = load("shapes-llava")
    achieved = prune_magnitude(adapter, {"vision": 0.6, "language": 0.6})
    print(f"shapes-llava, magnitude-pruned to {achieved:.1%}")
    hits, caps = answers(adapter, a.pool_vqa, a.pool_caption)
    em, cider = Metric("exact_match", "mean"), Metric("cider", utils.cider_aggregation)
    coverage("exact match", hits, 500, em, a.pairs, lambda: float(np.mean(hits)))
    coverage("CIDEr-D", caps, 250, cider, a.pairs)
    stability(hits, 1000, em, 0.01)
    stability(caps, 500, cider, 0.01)


if __name__ == "__main__":
    main()
