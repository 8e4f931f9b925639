"""Architectures with nothing written for them, run: a toy model of each type built from its
config class with its own processor (harness/testing/shrunk.py), loaded with no family and
no layout (roles from models/auto.py, prompts from models/chat.py), pruned by Wanda at 50%
per role, then run forward and generating. Decision 023 lists every type of the mapping."""

from __future__ import annotations

import pytest
import torch

from harness.models.adapter import ROLES
from harness.models.load import adapter_for
from harness.pruning import stage
from harness.pruning.spec import load as load_spec
from harness.testing import tiny, tiny_more
from harness.testing.shrunk import tiny_pair
from tests.models.test_layouts import IMAGES, calibration_file

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
RUN = ["blip", "cohere2_vision", "exaone4_5", "florence2", "git", "glm4v", "glm46v", "got_ocr2",
       "granite_docling", "hyperclovax_vision_v2", "idefics", "idefics2", "inkling2", "janus",
       "lfm2_vl", "lfm3_vl", "lighton_ocr", "llava_next", "llava_next_video", "mistral3", "mllama",
       "paddleocr_vl", "qwen3_5", "qwen3_5_moe", "qwen3_vl", "video_llama_3", "video_llava"]
# hand-made toy models (real processors at 32 px), loaded as `generic` with no layout: the
# roles are found, not the family's or the shipped layout's
BUILT = {"llava": tiny.tiny_llava, "vipllava": tiny.tiny_vipllava, "blip-2": tiny.tiny_blip2,
         "instructblip": tiny.tiny_instructblip, **tiny_more.BUILDERS}


def pair(model_type: str):
    if model_type in BUILT:
        return BUILT[model_type](), "generic"
    return tiny_pair(model_type), "auto"


@pytest.mark.unit
@pytest.mark.parametrize("model_type", RUN + sorted(BUILT))
def test_prunes_and_generates_with_nothing_given(model_type, tmp_path):
    (model, processor), family = pair(model_type)
    a = adapter_for(model, processor, family, name=model_type)
    assert a.family == "generic" and a.layout.vision and a.layout.language
    source = calibration_file(tmp_path, a)
    spec = load_spec({"method": "wanda",
                      "sparsity": {"vision": 0.5, "bridge": 0.5, "language": 0.5},
                      "calibration": {"source": str(source), "samples": 2, "batch_size": 2}})
    masks, rep = stage.run(a, spec, progress=False)
    assert set(masks) == set(a.all_linears())
    for role in ROLES:
        got = rep["roles"][role]
        if got["params"]:
            assert got["sparsity"] == pytest.approx(0.5, abs=0.01), role
    assert rep["roles"]["vision"]["params"] and rep["roles"]["language"]["params"]
    out = a.forward(a.prepare(IMAGES[:2], [a.prompt_for("what ?")] * 2))
    assert torch.isfinite(out.logits).all()
    assert len(a.generate(IMAGES[:2], [a.prompt_for("what ?"), a.prompt_for("")],
                          max_new_tokens=2)) == 2


@pytest.mark.integration
@pytest.mark.parametrize("model_type", RUN + sorted(BUILT))
def test_lmms_eval_scores_a_model_loaded_with_nothing_given(model_type):
    """The quick suite through lmms-eval on a model whose roles and prompts were found."""
    from harness.evaluation.run import evaluate

    (model, processor), family = pair(model_type)
    a = adapter_for(model, processor, family, name=model_type)
    r = evaluate(a, "quick", run_hash=f"auto-{model_type}", limit=3, progress=False)
    assert len(r.samples["shapes_vqa"]) == 3
    assert all(isinstance(s["prediction"], str) for s in r.samples["shapes_vqa"])
    assert 0 <= r.metrics["shapes_vqa/exact_match"] <= 1


# one of each kind: LLaVA-like with a chat template, a decoder with its own connector, a
# Q-Former (its Python family is found from the folder), a Qwen-style merger
THROUGH_THE_CLI = ["mistral3", "idefics2", "instructblip", "qwen2_5_vl"]


@pytest.mark.integration
@pytest.mark.parametrize("model_type", THROUGH_THE_CLI)
def test_inspect_prune_and_eval_from_a_folder_with_nothing_given(model_type, tmp_path, results,
                                                                 capsys):
    """What a user types: the saved model's folder, no family, no layout, no prompts."""
    import json

    from harness.cli import main

    (model, processor), family = pair(model_type)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert main(["inspect", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert f"family {'instructblip' if model_type == 'instructblip' else 'generic'}" in shown
    assert "vision" in shown and "excluded" in shown
    a = adapter_for(model, processor, family, name=model_type)
    spec = tmp_path / "prune.yaml"
    spec.write_text(json.dumps({"prune": {
        "method": "wanda", "sparsity": {"vision": 0.5, "bridge": 0.5, "language": 0.5},
        "calibration": {"source": str(calibration_file(tmp_path, a)), "samples": 2,
                        "batch_size": 2}}}))
    out = tmp_path / "pruned"
    assert main(["prune", str(spec), "--model", str(folder), "--out", str(out)]) == 0
    report = json.loads((out / "sparsity.json").read_text())
    assert report["roles"]["language"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    scores = tmp_path / "scores.json"
    assert main(["eval", "--model", str(out), "--suite", "quick", "--limit", "3",
                 "--out", str(scores)]) == 0
    got = json.loads(scores.read_text())
    assert len(got["samples"]["shapes_vqa"]) == 3
    assert got["headline"] == ["shapes_vqa/exact_match"]
