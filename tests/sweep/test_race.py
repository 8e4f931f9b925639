"""A race (`eval.race`): every setting answers the same slices of the raced task; one far
behind stops after the first slice with its partial score and the reason; the settings
left are scored on the whole suite, as a sweep without the race scores them; a lost
store is rebuilt from the cached slices without evaluating anything again."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.sweep import cache, grid, race
from harness.sweep.race_spec import RaceSpec
from harness.sweep.tracking import TAG_HASH
from tests.sweep.runs import cell_runs

GRID = """name: race
description: three sparsities and the dense model, raced on the quick suite
base:
  model: {name: shapes-llava}
  prune: {method: wanda, sparsity: 0.2, calibration: {samples: 16, batch_size: 16}}
  recover: {method: none}
  eval: {suite: quick, limit: 80, race: {start: 20, growth: 2, tolerance: 0.0}}
axes:
  - prune.sparsity: [0.2, 0.3, 0.95]
include:
  - {prune: null}
"""


@pytest.mark.unit
def test_slices_grow_geometrically_to_the_documents_there_are():
    assert RaceSpec(start=20, growth=2).slices(80) == [(0, 20), (20, 20), (40, 40)]
    assert RaceSpec(start=100, growth=1.5).slices(120) == [(0, 100), (100, 20)]


@pytest.mark.integration
def test_a_setting_far_behind_stops_and_the_others_are_scored_whole(results, tmp_path,
                                                                   monkeypatch):
    path = (tmp_path / "race.yaml").resolve()
    path.write_text(GRID)
    assert main(["sweep", str(path), "--no-report"]) == 0
    _, runs = cell_runs("race", status="FINISHED")
    by = {r.data.params.get("prune.sparsity", "dense"): r for r in runs}
    assert set(by) == {"0.2", "0.3", "0.95", "dense"}
    gone = by["0.95"].data.tags
    assert gone["vlmprune.race"] == "stopped" and gone["vlmprune.race.docs"] == "20"
    assert gone["vlmprune.race.note"].startswith("stopped at 20 documents, behind")
    assert by["0.95"].data.metrics["shapes_vqa/exact_match"] < 0.3  # its partial score
    for s in ("0.2", "0.3"):
        assert by[s].data.tags["vlmprune.race"] == "survived"
    assert "vlmprune.race" not in by["dense"].data.tags  # the reference does not race
    # the survivors' scores are the whole evaluation's: a sweep without the race agrees
    plain = tmp_path / "plain.yaml"
    plain.write_text(GRID.replace("name: race", "name: plain").replace(
        ", race: {start: 20, growth: 2, tolerance: 0.0}", ""))
    assert main(["sweep", str(plain), "--no-report", "--where", "prune.sparsity=0.3"]) == 0
    _, (whole,) = cell_runs("plain", status="FINISHED")
    assert {k: v for k, v in whole.data.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in by["0.3"].data.metrics.items() if not k.startswith("time/")}
    # a race that ends early (all left within its tolerance): the survivors answer the rest
    # of the raced task's documents, merged with their slices into the whole evaluation
    early = tmp_path / "early.yaml"
    early.write_text(GRID.replace("name: race", "name: early").replace("tolerance: 0.0",
                                                                       "tolerance: 1.0"))
    assert main(["sweep", str(early), "--no-report"]) == 0
    _, ended = cell_runs("early", status="FINISHED")
    left = {r.data.params.get("prune.sparsity"): r for r in ended
            if r.data.tags.get("vlmprune.race") == "survived"}
    assert set(left) == {"0.2", "0.3"} and left["0.3"].data.tags["vlmprune.race.docs"] == "20"
    assert {k: v for k, v in left["0.3"].data.metrics.items() if not k.startswith("time/")} \
        == {k: v for k, v in whole.data.metrics.items() if not k.startswith("time/")}
    # `finish: none`: the last group keeps the race's documents; nothing more is evaluated
    evals = sorted(p.name for p in (results / "cache" / "eval").iterdir())
    group = tmp_path / "group.yaml"
    group.write_text(GRID.replace("name: race", "name: group").replace(
        "tolerance: 0.0", "tolerance: 1.0, finish: none"))
    assert main(["sweep", str(group), "--no-report"]) == 0
    assert sorted(p.name for p in (results / "cache" / "eval").iterdir()) == evals
    _, grouped = cell_runs("group", status="FINISHED")
    tied = {r.data.params.get("prune.sparsity"): r for r in grouped
            if r.data.tags.get("vlmprune.race") == "group"}
    assert set(tied) == {"0.2", "0.3"} and tied["0.3"].data.tags["vlmprune.race.docs"] == "20"
    assert tied["0.3"].data.tags["vlmprune.race.note"].endswith("20 documents of shapes_vqa, "
                                                                "scored on those")
    # its score is its first slice's: the mean of the 20 documents it answered
    cell = next(c for c in grid.expand(str(group))[1]
                if c.overrides.get("prune.sparsity") == 0.3)
    slice20 = json.loads((cache.path("eval", race.sliced(cell, "shapes_vqa", 0, 20).hash)
                          / "samples.json").read_text())["shapes_vqa"]
    assert len(slice20) == 20
    assert tied["0.3"].data.metrics["shapes_vqa/exact_match"] == pytest.approx(
        sum(r["exact_match"] for r in slice20) / 20)
    assert main(["report", str(group)]) == 0
    page = (results.parent / "reports" / "group" / "index.html").read_text()
    assert "The race&#x27;s last group (2)" in page or "The race's last group (2)" in page
    # a lost store: the race is decided again from the cached slices, nothing evaluated
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    monkeypatch.chdir(tmp_path)  # such a store's artifacts go to ./mlruns (MLflow's default)
    assert main(["sweep", str(path), "--no-report"]) == 0
    assert sorted(p.name for p in (results / "cache" / "eval").iterdir()) == evals
    _, again = cell_runs("race", status="FINISHED")
    assert {r.data.tags[TAG_HASH]: r.data.metrics["shapes_vqa/exact_match"] for r in again} \
        == {r.data.tags[TAG_HASH]: r.data.metrics["shapes_vqa/exact_match"] for r in runs}
    assert {c.hash for c in grid.expand(str(path))[1]} == {r.data.tags[TAG_HASH] for r in runs}
    # the report says which setting stopped, and why; its partial score is marked
    assert main(["report", str(path)]) == 0
    page = (results.parent / "reports" / "race" / "index.html").read_text()
    assert "Stopped by the race (1)" in page and gone["vlmprune.race.note"] in page
    assert page.count("†") >= 2  # the explanation, and the stopped setting's score


@pytest.mark.integration
def test_two_races_in_one_grid_are_one_line_before_any_work(results, tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text(GRID.replace("name: race", "name: two").replace(
        "  - {prune: null}", "  - {prune: null}\n  - {eval: {race: {start: 40}}}"))
    assert main(["sweep", str(path), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "eval.race runs one race on one evaluation" in err and err.count("\n") == 1
    assert not (results / "cache").exists()  # nothing computed
    path.write_text(GRID.replace("tolerance: 0.0", "tolerance: 0.0, metric: shapes_caption/cider"))
    assert main(["sweep", str(path), "--no-report"]) == 2
    assert "its task is not one the evaluation scores (shapes_vqa)" in capsys.readouterr().err
