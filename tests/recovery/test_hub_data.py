"""Recovery data from hub datasets in the local Hugging Face cache: LLaVA-Instruct
conversations and caption pairs (stand-ins with the real repos' split and column names,
parquet with embedded images, in a temporary HF home), then one sweep end to end on a toy
model of an architecture with nothing written for it: calibrated and recovered on hub data,
scored by lmms-eval."""

from __future__ import annotations

import pytest
import yaml

from harness.cli import main
from harness.errors import UserError
from harness.recovery import data
from harness.recovery.spec import load as load_recovery
from harness.testing.shrunk import tiny_pair
from harness.world.splits import vqa_sample
from tests.evaluation import paper_standins as standins
from tests.sweep.runs import cell_runs

INSTRUCT = "liuhaotian/LLaVA-Instruct-150K"
FLICKR = "lmms-lab-encoder/flickr30k"


def instruct() -> dict:
    rows = [vqa_sample("train", 300 + i) for i in range(standins.ROWS)]
    return {"id": [str(i) for i in range(standins.ROWS)],
            "image": [standins._image(s.scene) for s in rows],
            "conversations": [[{"from": "human", "value": f"<image>\n{s.qa.question}"},
                               {"from": "gpt", "value": s.qa.answer},
                               {"from": "human", "value": "and then ?"},
                               {"from": "gpt", "value": "nothing"}] for s in rows]}


@pytest.fixture
def instruct_snapshot(hf_home, monkeypatch):
    monkeypatch.setitem(standins.REPOS, INSTRUCT, [("default", "train", "data", instruct)])
    standins.hub_snapshot(hf_home, INSTRUCT)
    return hf_home


@pytest.mark.unit
def test_conversations_give_the_first_request_and_answer(instruct_snapshot):
    spec = load_recovery({"method": "lora", "data": {
        "source": f"hf:{INSTRUCT}", "conversations": "conversations"}}).data
    items = data.samples(spec, seed=0, start=0, n=8)  # more than the rows: the order wraps
    truth = {(s.qa.question, s.qa.answer) for s in
             (vqa_sample("train", 300 + i) for i in range(standins.ROWS))}
    assert len(items) == 8 and all((q, a) in truth for _, q, a in items)
    assert all("<image>" not in q for _, q, _ in items)
    assert data.samples(spec, seed=0, start=0, n=8) == items
    assert [q for _, q, _ in data.samples(spec, seed=1, start=0, n=8)] != [q for _, q, _ in items]


@pytest.mark.unit
def test_captions_are_caption_requests(hf_home):
    standins.hub_snapshot(hf_home, FLICKR)
    spec = load_recovery({"method": "lora", "data": {
        "source": f"hf:{FLICKR}", "split": "test", "text": "caption"}}).data
    captions = {c[0] for c in standins.flickr30k()["caption"]}
    items = data.samples(spec, seed=0, start=0, n=4)
    assert all(q == "" and a in captions for _, q, a in items)


@pytest.mark.unit
def test_a_conversation_without_an_answer_is_one_line():
    with pytest.raises(UserError, match="without a human and a gpt turn"):
        data.turn([{"from": "human", "value": "<image>\nwhat ?"}], "hf:a/b")
    assert data.turn([{"role": "user", "content": "<image>\nwhat ?"},
                      {"role": "assistant", "content": " red "}], "x") == ("what ?", "red")


@pytest.mark.integration
def test_a_sweep_calibrates_and_recovers_on_hub_data(instruct_snapshot, tmp_path, results,
                                                     capsys):
    standins.hub_snapshot(instruct_snapshot, FLICKR)
    model, processor = tiny_pair("mistral3")
    folder = tmp_path / "mistral3"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    grid = tmp_path / "hub.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "hub",
        "base": {"model": {"name": str(folder)},
                 "prune": {"method": "wanda", "sparsity": 0.5, "calibration": {
                     "source": f"hf:{FLICKR}", "split": "test", "text": "caption",
                     "samples": 4, "batch_size": 4}},
                 "recover": {"method": "sparselora", "steps": 2, "batch_size": 2, "data": {
                     "source": f"hf:{INSTRUCT}", "conversations": "conversations"}},
                 "eval": {"suite": "quick", "limit": 3}},
        "axes": [{"prune.sparsity": [0.5]}]}))
    assert main(["sweep", str(grid), "--no-report"]) == 0
    _, runs = cell_runs("hub", "FINISHED")
    assert len(runs) == 1 and 0 <= runs[0].data.metrics["shapes_vqa/exact_match"] <= 1
    assert runs[0].data.params["recover.data.source"] == f"hf:{INSTRUCT}"
    (prune,) = (results / "cache" / "prune").iterdir()
    (recover,) = (results / "cache" / "recover").iterdir()
    assert prune.is_dir() and recover.is_dir()
    # a missing dataset stops the next sweep before any work, in one line
    import shutil

    shutil.rmtree(instruct_snapshot / "hub" / f"datasets--{INSTRUCT.replace('/', '--')}")
    grid.write_text(grid.read_text().replace("steps: 2", "steps: 3"))
    capsys.readouterr()
    assert main(["sweep", str(grid), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"hf download {INSTRUCT} --repo-type dataset" in err, err
    assert "recover.data.source" in err
    assert len(list((results / "cache" / "recover").iterdir())) == 1  # nothing new started
