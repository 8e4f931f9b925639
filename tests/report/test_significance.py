"""A report's spread, checked against an independent computation on the reference smoke
sweep: bold is the group that an exact McNemar test against the top pruned setting
(scipy's binomial test, Holm's step-down here) does not separate from it, and each
setting's interval is the one its evaluation stored in MLflow."""

from __future__ import annotations

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest

from harness.report import data, significance

pytestmark = pytest.mark.integration
M = "shapes_vqa/exact_match"


def holm_keeps(ps: dict[int, float], alpha: float = 0.05) -> set[int]:
    """Holm's step-down: reject in increasing p order while p <= alpha / (m - rank)."""
    kept = set(ps)
    for rank, (i, p) in enumerate(sorted(ps.items(), key=lambda kv: kv[1])):
        if p > alpha / (len(ps) - rank):
            break
        kept.discard(i)
    return kept


def test_bold_is_what_mcnemar_and_holm_keep_and_intervals_are_the_stored_ones(
        reference, tmp_path, monkeypatch):
    shutil.copytree(reference[3], tmp_path / "results")
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "results"))
    rep = data.load("smoke")
    agg = significance.annotate(rep, data.aggregate(rep), [M])
    rows = agg.to_dicts()
    client = MlflowClient(rep.meta["uri"])
    answers = []
    for row in rows:
        (run,) = row["runs"]  # one seed per setting in the smoke grid
        path = client.download_artifacts(run, "eval_samples.json", str(tmp_path))
        answers.append({r["doc_id"]: r["exact_match"]
                        for r in json.loads(open(path).read())["shapes_vqa"]})
        lo, hi = client.get_run(run).data.metrics[f"lo/{M}"], \
            client.get_run(run).data.metrics[f"hi/{M}"]
        assert (row[f"{M}.lo"], row[f"{M}.hi"]) == pytest.approx((lo, hi))
    pruned = [i for i, r in enumerate(rows) if not r[data.DENSE]]
    top = max(pruned, key=lambda i: rows[i][M])
    ps = {}
    for i in pruned:
        if i != top:
            b = sum(answers[top][d] > answers[i][d] for d in answers[top])
            c = sum(answers[top][d] < answers[i][d] for d in answers[top])
            ps[i] = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert {i for i, r in enumerate(rows) if r[f"{M}.best"]} == {top} | holm_keeps(ps)
    assert len(pruned) == 3 and not any(rows[i][f"{M}.best"] for i in range(len(rows))
                                        if i not in pruned)
