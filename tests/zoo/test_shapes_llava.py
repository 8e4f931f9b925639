"""The committed shapes-llava: loads offline, is big enough to prune, accurate, and sensitive
to pruning in the paper's regime. The accuracy figures come from `harness.zoo.check`."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from harness.models.load import EMBEDDED, load
from harness.world.scene import render
from harness.world.splits import vqa_sample
from harness.zoo import check
from harness.zoo.train import pixels

pytestmark = pytest.mark.integration

PATH = EMBEDDED["shapes-llava"]


def test_weights_committed_and_small():
    weights = PATH / "model.safetensors"
    assert weights.is_file()
    assert weights.stat().st_size <= 30 * 2**20


def test_loads_offline_with_auto_classes_and_has_room_to_prune():
    model = LlavaForConditionalGeneration.from_pretrained(PATH, local_files_only=True)
    proc = AutoProcessor.from_pretrained(PATH, local_files_only=True)
    assert sum(p.numel() for p in model.model.vision_tower.parameters()) >= 2_000_000
    assert sum(p.numel() for p in model.model.language_model.parameters()) >= 2_000_000
    adapter = load("shapes-llava")
    assert adapter.parameter_count("vision") >= 2_000_000
    assert adapter.parameter_count("language") >= 2_000_000
    # the processor gives exactly the pixels the model was trained on
    imgs = [render(vqa_sample("test", i).scene) for i in range(4)]
    enc = proc(images=imgs, text=["<image> caption :"] * 4, return_tensors="pt")
    assert torch.allclose(enc["pixel_values"], pixels(imgs), atol=1e-5)
    assert (enc["input_ids"] == model.config.image_token_index).sum(1).tolist() == [16] * 4


@pytest.fixture(scope="module")
def report():
    # 100 questions of each type and 150 captions: the same verdicts as the full split with
    # room to spare (set match 0.947, per-type VQA ≥ 0.98, drops 0.2 / 8.6 / 43.6 points)
    return check.run("shapes-llava", n_vqa=500, n_caption=150)


@pytest.mark.slow
def test_captions(report):
    assert report["caption"]["set_match"] >= 0.80, report["caption"]
    assert report["caption"]["cider"] > 1.0, report["caption"]


@pytest.mark.slow
def test_dense_vqa_accuracy(report):
    vqa = report["vqa"]
    assert vqa["overall"] >= 0.90, vqa
    for qtype in ("color", "shape", "size", "count", "spatial"):
        assert vqa[qtype] >= 0.85, (qtype, vqa)


@pytest.mark.slow
def test_pruning_reaches_its_targets(report):
    for level, p in report["pruned"].items():
        assert abs(p["sparsity"] - float(level)) < 0.005


@pytest.mark.slow
def test_sensitivity_to_magnitude_pruning(report):
    drops = {k: v["drop_points"] for k, v in report["pruned"].items()}
    assert drops["0.30"] <= 5, drops
    assert 2 <= drops["0.50"] <= 15, drops
    assert drops["0.70"] >= 20, drops


def test_generation_stops_at_one_word():
    adapter = load("shapes-llava")
    s = [vqa_sample("test", i) for i in range(8)]
    out = adapter.generate([render(x.scene) for x in s],
                           [adapter.prompts.question(x.qa.question) for x in s])
    assert all(len(o.split()) == 1 for o in out), out
    assert np.mean([o == x.qa.answer for o, x in zip(out, s, strict=True)]) >= 0.5


def test_outlier_rescaling_preserves_the_function():
    """The committed weights are trained weights after `outliers.rescale`; it must not change
    what the model computes, only how its weight magnitudes are spread."""
    from harness.zoo.outliers import rescale
    from harness.zoo.train import text_batch

    model = LlavaForConditionalGeneration.from_pretrained(PATH, local_files_only=True).eval()
    proc = AutoProcessor.from_pretrained(PATH, local_files_only=True)
    x, enc, _, _ = text_batch(proc.tokenizer, 0, 16, split="validation")
    inputs = {"pixel_values": x, "input_ids": enc["input_ids"],
              "attention_mask": enc["attention_mask"]}
    q_before = model.model.language_model.layers[0].self_attn.q_proj.weight.clone()
    with torch.no_grad():
        before = model(**inputs).logits
        rescale(model, 1.0, seed=3)
        after = model(**inputs).logits
    assert torch.allclose(before, after, atol=1e-3)
    column_norms = model.model.language_model.layers[0].self_attn.q_proj.weight.norm(dim=0)
    assert not torch.allclose(column_norms, q_before.norm(dim=0), rtol=0.1)
