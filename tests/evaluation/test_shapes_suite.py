"""lmms-eval end to end on shapes-llava: reported metrics against an independent computation,
pruning lowers the score, one wrapper evaluates twice, the response cache keys on the cell."""

import statistics

import pytest
from pycocoevalcap.cider.cider import Cider

from harness.errors import UserError
from harness.evaluation.lmms_model import VlmpruneLM
from harness.evaluation.run import evaluate
from harness.models.load import load
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample
from harness.zoo.check import prune_magnitude

LIMIT = 25


@pytest.fixture(scope="module")
def dense():
    return load("shapes-llava")


@pytest.fixture(scope="module")
def dense_result(dense):
    return evaluate(dense, "shapes", run_hash="dense", limit=LIMIT, progress=False)


def plain(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).strip()


@pytest.mark.integration
def test_vqa_metrics_equal_an_independent_computation(dense_result):
    rows = dense_result.samples["shapes_vqa"]
    assert [r["doc_id"] for r in rows] == list(range(LIMIT))
    truth = [vqa_sample("test", r["doc_id"]).qa for r in rows]
    hits = [plain(r["prediction"]) == qa.answer for r, qa in zip(rows, truth, strict=True)]
    m = dense_result.metrics
    assert m["shapes_vqa/exact_match"] == pytest.approx(statistics.mean(hits))
    for qtype in {qa.qtype for qa in truth}:
        typed = [h for h, qa in zip(hits, truth, strict=True) if qa.qtype == qtype]
        assert m[f"shapes_vqa/{qtype}_exact_match"] == pytest.approx(statistics.mean(typed))
    assert 0 < m["shapes_vqa/exact_match"] < 1  # a real score, not a constant


@pytest.mark.integration
def test_caption_metrics_equal_an_independent_computation(dense_result):
    rows = dense_result.samples["shapes_caption"]
    refs = {r["doc_id"]: [caption_sample("test", r["doc_id"])[1]] for r in rows}
    preds = {r["doc_id"]: [plain(r["prediction"]) or "empty"] for r in rows}
    cider, _ = Cider().compute_score(refs, preds)
    assert dense_result.metrics["shapes_caption/cider"] == pytest.approx(cider)
    assert 0 <= dense_result.metrics["shapes_caption/object_match"] <= 1
    # every metric has its interval, the corpus ones recomputed on each resample
    assert set(dense_result.intervals) == set(dense_result.metrics)
    lo, hi = dense_result.intervals["shapes_caption/cider"]
    assert lo < cider < hi


@pytest.mark.integration
def test_wrapper_answers_equal_direct_generation(dense, dense_result):
    """lmms-eval's batching and reordering hand every answer back to its own question."""
    rows = dense_result.samples["shapes_vqa"][:12]
    samples = [vqa_sample("test", r["doc_id"]) for r in rows]
    direct = dense.generate([render(s.scene) for s in samples],
                            [dense.prompts.question(s.qa.question) for s in samples],
                            max_new_tokens=8, batch_size=1)
    assert [r["prediction"] for r in rows] == direct


@pytest.mark.integration
def test_pruned_model_scores_lower_and_cache_keys_on_the_cell(dense, dense_result, tmp_path):
    cache = tmp_path / "responses"
    d = evaluate(dense, "quick", run_hash="cell-dense", limit=LIMIT, response_cache=cache,
                 progress=False)
    assert d.metrics["shapes_vqa/exact_match"] == dense_result.metrics["shapes_vqa/exact_match"]
    pruned = load("shapes-llava")
    prune_magnitude(pruned, {"vision": 0.9, "language": 0.9})
    p = evaluate(pruned, "quick", run_hash="cell-pruned", limit=LIMIT, response_cache=cache,
                 progress=False)
    assert p.metrics["shapes_vqa/exact_match"] < d.metrics["shapes_vqa/exact_match"] - 0.2
    # the cache is real: the same hash would have served the dense cell's answers
    stale = evaluate(pruned, "quick", run_hash="cell-dense", limit=LIMIT, response_cache=cache,
                     progress=False)
    assert stale.samples["shapes_vqa"] == d.samples["shapes_vqa"]


@pytest.mark.integration
def test_one_wrapper_evaluates_twice(dense):
    lm = VlmpruneLM(adapter=dense, run_hash="twice", progress=False)
    a = evaluate(None, "quick", limit=6, lm=lm)
    b = evaluate(None, "quick", limit=6, lm=lm)
    assert a.metrics == b.metrics
    assert lm.adapter.model is dense.model  # clean() left the model in place
    assert "twice" in repr(lm)


@pytest.mark.integration
def test_paper_suite_without_its_data_fails_in_one_line(dense):
    with pytest.raises(UserError) as e:
        evaluate(dense, "paper", limit=2, progress=False)
    msg = str(e.value)
    assert "vqav2_val" in msg and "is not on this machine" in msg and "\n" not in msg


@pytest.mark.integration
def test_unknown_suite_is_a_user_error(dense):
    with pytest.raises(UserError, match="did you mean 'shapes'"):
        evaluate(dense, "shaeps")


@pytest.mark.system
def test_lmms_eval_command_line_runs_the_registered_class(tmp_path):
    """`python -m lmms_eval --model vlmprune` finds the class through its entry point."""
    import os
    import subprocess
    import sys

    from harness.evaluation.suite import TASKS_DIR

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "vlmprune",
                        "--model_args", "pretrained=shapes-llava", "--tasks", "shapes_vqa",
                        "--include_path", str(TASKS_DIR), "--limit", "5", "--batch_size", "4",
                        "--device", "cpu"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    row = next(line for line in p.stdout.splitlines()
               if "shapes_vqa" in line and "|exact_match " in line)
    assert 0.0 <= float(row.split("|")[6]) <= 1.0


@pytest.mark.integration
def test_eval_command_bad_suite_exits_2(capsys):
    from harness.cli import main

    assert main(["eval", "--suite", "quik"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'quick'" in err and err.count("\n") == 1


@pytest.mark.integration
def test_shapes_group_and_tasks_are_found_through_the_include_path():
    from harness.evaluation.suite import task_manager

    tm = task_manager(False)
    assert {"shapes_vqa", "shapes_caption"} <= set(tm.all_tasks)
    assert "shapes" in tm.all_groups
