"""Any lmms-eval task, not three fixed suites: `eval.tasks` in a grid, a grid's own suites
file, `vlmprune eval --tasks`; every task checked before work; each task's headline taken
from its own metric list. The data are stand-ins of the real repos (their columns and
splits) as hub snapshots in a temporary HF home: TextVQA and POPE beyond the paper suite,
OK-VQA (a paper task) alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.errors import UserError
from harness.evaluation.suite import (
    check,
    headline,
    metric_names,
    of_tasks,
    task_config,
    user_suites,
)
from harness.fingerprint import digest
from harness.sweep import grid as grid_mod
from harness.sweep.cell import VERSION, CellSpec, EvalSpec, eval_key, recover_key, suite_content
from harness.sweep.tracking import tracking_uri
from tests.evaluation import paper_standins as standins
from tests.sweep.runs import cell_runs

BEYOND = ["textvqa_val", "pope"]
LIMIT = 4


def grid_file(tmp_path, suites: object = "mine.yaml", **base_eval) -> object:
    """A dense grid over the grid's own suite `beyond` and, as an extra cell, one paper task
    named alone."""
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(
        {"beyond": {"description": "two tasks past the paper suite", "tasks": BEYOND,
                    "limit": LIMIT}}))
    g = tmp_path / "anytask.yaml"
    g.write_text(yaml.safe_dump({
        "name": "anytask", "suites": suites,
        "base": {"model": {"name": "shapes-llava"}, "prune": None, **base_eval},
        "axes": [{"eval.suite": ["beyond"]}],
        "include": [{"eval": {"tasks": ["ok_vqa_val2014"], "limit": LIMIT}}]}))
    return g


@pytest.mark.integration
def test_a_grid_scores_its_own_suite_and_a_task_alone(hf_home, results, tmp_path):
    for repo in ("lmms-lab-encoder/textvqa", "lmms-lab-encoder/POPE", "lmms-lab-encoder/OK-VQA"):
        standins.hub_snapshot(hf_home, repo)
    g = grid_file(tmp_path)
    _, cells = grid_mod.expand(str(g))
    by_suite = {c.spec.eval.suite: c.spec.eval for c in cells}
    # the grid's suite is written into its cell: tasks and limit (a worker needs no file)
    assert by_suite["beyond"].tasks == BEYOND and by_suite["beyond"].limit == LIMIT
    assert by_suite["tasks"].tasks == ["ok_vqa_val2014"]
    assert main(["sweep", str(g), "--no-report"]) == 0

    _, runs = cell_runs("anytask", "FINISHED")
    client = MlflowClient(tracking_uri())
    got = {r.data.params["eval.suite"]: r for r in runs}
    beyond, alone = got["beyond"], got["tasks"]
    # each task's headline is the first of its own metric list (POPE's is not an accuracy
    # by name; TextVQA lists `submission` first among none: its exact match leads)
    assert beyond.data.tags["vlmprune.headline"] == "textvqa_val/exact_match,pope/pope_accuracy"
    assert alone.data.tags["vlmprune.headline"] == "ok_vqa_val2014/exact_match"
    samples = json.loads(Path(client.download_artifacts(
        beyond.info.run_id, "eval_samples.json", str(tmp_path))).read_text())
    assert {len(samples[t]) for t in BEYOND} == {LIMIT}
    # POPE's accuracy is the share of yes/no answers that match, recomputed from the answers
    pope = samples["pope"]
    share = sum(r["prediction"].lower().strip() == r["target"] for r in pope) / len(pope)
    assert beyond.data.metrics["pope/pope_accuracy"] == pytest.approx(share)
    # TextVQA's score is its own per-document accuracy, averaged
    text = samples["textvqa_val"]
    assert beyond.data.metrics["textvqa_val/exact_match"] == pytest.approx(
        sum(r["exact_match"] for r in text) / len(text))
    assert all(r["prediction"] for r in text)  # the model answered every question
    assert alone.data.metrics["ok_vqa_val2014/exact_match"] >= 0.5  # shapes questions, solved

    from harness.report import data, tables

    report = data.load("anytask", source=str(g))
    assert sorted(tables.headline_metrics(report)) == [
        "ok_vqa_val2014/exact_match", "pope/pope_accuracy", "textvqa_val/exact_match"]


@pytest.mark.integration
def test_a_task_whose_data_is_missing_stops_the_plan_in_one_line(hf_home, results, tmp_path,
                                                                 capsys):
    standins.hub_snapshot(hf_home, "lmms-lab-encoder/textvqa")  # POPE and OK-VQA missing
    g = grid_file(tmp_path)
    capsys.readouterr()  # the stand-in's own progress lines
    assert main(["plan", str(g)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vlmprune: error:") and "field 'eval.tasks'" in err
    assert "task pope" in err and "hf download lmms-lab-encoder/POPE --repo-type dataset" in err
    assert not (results / "cache").exists()


@pytest.mark.unit
@pytest.mark.parametrize("tasks, words", [
    (["textvqa_vl"], "did you mean 'textvqa_val'"),
    (["mmmu"], "is an lmms-eval group, not a task"),
])
def test_a_name_lmms_eval_does_not_know_as_a_task_is_one_line(tasks, words):
    with pytest.raises(UserError) as e:
        check(of_tasks(tasks))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.unit
def test_suite_and_tasks_together_are_refused_and_tasks_alone_get_a_label():
    with pytest.raises(ValueError, match="name two evaluations"):
        EvalSpec(suite="paper", tasks=["gqa"])
    with pytest.raises(ValueError, match="named twice"):
        EvalSpec(tasks=["gqa", "gqa"])
    assert EvalSpec(tasks=["pope"]).suite == "tasks"
    again = EvalSpec.model_validate(EvalSpec(tasks=["pope"]).model_dump())
    assert again == EvalSpec(tasks=["pope"])


@pytest.mark.unit
def test_a_user_suite_cannot_take_a_shipped_name_and_is_checked(tmp_path):
    grid = tmp_path / "g.yaml"
    with pytest.raises(UserError, match="shipped suite's name"):
        user_suites({"paper": {"tasks": ["pope"]}}, grid)
    with pytest.raises(UserError, match=r"suite 'mine': field 'limit'"):
        user_suites({"mine": {"tasks": ["pope"], "limit": 0}}, grid)
    with pytest.raises(UserError, match="no such file"):
        user_suites("absent.yaml", grid)
    assert user_suites({"mine": {"tasks": ["pope", "shapes_vqa"]}}, grid)["mine"].builtin


@pytest.mark.unit
def test_a_grid_suite_and_tasks_in_one_cell_are_refused(tmp_path):
    """A base naming the grid's suite and an include naming tasks: which would the cell be
    scored on? Refused, naming the cell, as a shipped suite with tasks is."""
    g = grid_file(tmp_path, eval={"suite": "beyond"})  # the include cell (1) names tasks
    with pytest.raises(UserError) as e:
        grid_mod.expand(str(g))
    assert "suite 'beyond' (the grid's) and tasks ['ok_vqa_val2014']" in str(e.value)
    assert "cell 1" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.unit
def test_keys_of_named_suites_are_what_they_were():
    """Adding `tasks` leaves every stored eval stage of a named suite where it was."""
    for suite in ("shapes", "quick"):
        c = CellSpec.model_validate({"prune": None, "eval": {"suite": suite}})
        before = digest({"v": VERSION, "stage": "eval", "recover": recover_key(c),
                         "eval": {"suite": suite, "limit": None},
                         "suite": suite_content(c.eval)})
        assert eval_key(c) == before
    a = CellSpec.model_validate({"prune": None, "eval": {"tasks": ["shapes_vqa"]}})
    b = CellSpec.model_validate({"prune": None, "eval": {"tasks": ["shapes_caption"]}})
    assert eval_key(a) != eval_key(b)


@pytest.mark.unit
def test_headline_is_the_first_listed_metric_that_is_reported():
    config = task_config("shapes_caption")
    assert metric_names(config)[0] == "cider"
    reported = {"shapes_caption/bleu4": 0.1, "shapes_caption/cider": 0.5}
    assert headline("shapes_caption", config, reported) == "shapes_caption/cider"
    assert headline("shapes_caption", config, {"shapes_caption/bleu4": 0.1}) == \
        "shapes_caption/bleu4"


@pytest.mark.integration
def test_eval_tasks_on_the_command_line(hf_home, results, tmp_path, capsys):
    standins.hub_snapshot(hf_home, "lmms-lab-encoder/OK-VQA")
    out = tmp_path / "ok.json"
    assert main(["eval", "--tasks", "ok_vqa_val2014", "--limit", "3", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["headline"] == ["ok_vqa_val2014/exact_match"] and got["suite"] == "tasks"
    assert len(got["samples"]["ok_vqa_val2014"]) == 3
    assert main(["eval", "--tasks", "ok_vqa_val2014", "--suite", "quick"]) == 2
    assert "give one" in capsys.readouterr().err
