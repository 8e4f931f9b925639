"""Roles found from a model itself (harness/models/auto.py), on toy models built on the meta
device from transformers' own config classes (harness/testing/shrunk.py): the same roles as
the hand-written layouts, roles for the architectures of the image-text mapping, one-line
refusals, the partition check, and prompts from a processor's chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as tf

from harness.errors import UserError
from harness.models import auto, blip, chat, llava
from harness.models.generic import load_layout
from harness.testing.shrunk import tiny_config, tiny_model
from harness.testing.tiny_more import tiny_qwen2_vl

pytestmark = pytest.mark.unit
LAYOUTS = Path(__file__).resolve().parents[2] / "harness" / "models" / "layouts"
# architectures whose roles must be found with nothing written for them: LLaVA-like
# decoder-only models (with MoE language models), Q-Former, cross-attention (mllama),
# encoder-decoder (florence2), DeepStack (qwen3_vl)
FOUND = ["aria", "aya_vision", "blip-2", "cohere2_vision", "deepseek_vl", "exaone4_5",
         "florence2", "gemma3", "glm4v", "glm4v_moe", "got_ocr2", "idefics2", "idefics3",
         "instructblip", "internvl", "janus", "kosmos-2", "lfm2_vl", "llava", "llava_next",
         "llava_onevision", "mistral3", "mllama", "ovis2", "paddleocr_vl", "paligemma",
         "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_omni_thinker",
         "smolvlm", "video_llava", "vipllava"]


def meta(model_type: str) -> torch.nn.Module:
    return tiny_model(model_type, meta=True)


@pytest.mark.parametrize("model_type", FOUND)
def test_roles_are_found_and_partition_the_linears(model_type):
    model = meta(model_type)
    layout = auto.detect(model)
    auto.partition(model, layout, model_type)
    assert layout.vision and layout.language, layout
    for role in ("vision", "language"):
        for path in layout.paths(role):  # every block list holds transformer layers
            mod = model.get_submodule(path)
            assert isinstance(mod, torch.nn.ModuleList) and len(mod) > 0, path
    assert not set(layout.vision) & set(layout.language)
    assert any("lm_head" in e for e in layout.exclude), layout.exclude


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "idefics3", "paligemma",
                                        "gemma3"])
def test_found_roles_are_the_shipped_layouts(model_type):
    model = meta(model_type)
    found, (written, _) = auto.detect(model), load_layout(LAYOUTS / f"{model_type}.yaml")
    assert (found.vision, found.language) == (written.vision, written.language)
    # the shipped Gemma3 layout names the projector (no Linear in it); the roles found name
    # only what holds Linears: SigLIP's pooling head, which the default config keeps
    if model_type != "gemma3":
        assert found.bridge == written.bridge


def test_found_roles_are_the_python_families():
    model = meta("llava")
    assert auto.detect(model) == llava.layout(model)
    opt = meta("blip-2")  # OPT: its project_in/out are left out, as the family does
    found, written = auto.detect(opt), blip.layout(opt)
    assert (found.vision, found.bridge, found.language) == \
        (written.vision, written.bridge, written.language)
    assert set(found.exclude) == set(written.exclude)


def test_deepstack_mergers_are_bridge_blocks_of_their_own():
    layout = auto.detect(meta("qwen3_vl"))
    mergers = [p for p in layout.bridge if "deepstack_merger_list." in p]
    assert len(mergers) == len(tiny_config("qwen3_vl").vision_config.deepstack_visual_indexes)
    assert "model.visual.merger" in layout.bridge


def test_a_layout_that_leaves_linears_out_is_refused_naming_them():
    """Qwen3-VL on the Qwen2.5-VL layout: its DeepStack mergers are in no role."""
    model = meta("qwen3_vl")
    layout, _ = load_layout(LAYOUTS / "qwen2_5_vl.yaml")
    with pytest.raises(UserError) as e:
        auto.partition(model, layout, "qwen2_5_vl.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("qwen2_5_vl.yaml")
    assert "deepstack_merger_list.0.linear_fc1" in msg and "in no role" in msg, msg
    assert msg.split(": ")[1].startswith("2 Linear(s)")  # the count


@pytest.mark.parametrize("model_type, vision, bridge, language, head", [
    # the model's own config is the language model's: its blocks lie outside the vision tower
    ("git", "git.image_encoder.vision_model.encoder.layers", "git.visual_projection",
     "git.encoder.layer", "output"),
    ("idefics", "model.vision_model.encoder.layers", None, "model.layers", "lm_head"),
    # an image encoder (a sub-config with an image and patch size) feeding a text decoder
    ("vision-encoder-decoder", "encoder.layers", None, "decoder.bert.encoder.layer",
     "decoder.cls.predictions.decoder"),
])
def test_roles_without_a_text_config_or_with_an_image_encoder(model_type, vision, bridge,
                                                              language, head):
    model = meta(model_type)
    layout = auto.detect(model)
    auto.partition(model, layout, model_type)
    assert layout.vision == (vision,) and language in layout.language
    assert bridge is None or layout.bridge == (bridge,)
    assert head in layout.exclude
    assert not any(p.startswith(vision.rsplit(".", 2)[0]) for p in layout.language)


@pytest.mark.parametrize("model_type, words", [
    ("evolla", "no vision config"), ("pi0", "no vision config"),
    ("fuyu", "straight into the language model")])
def test_models_without_vision_blocks_are_refused_in_one_line(model_type, words):
    with pytest.raises(UserError) as e:
        auto.detect(meta(model_type))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("model_type", ["chameleon", "emu3", "fuyu"])
def test_image_tokenizing_models_are_refused_from_their_config(model_type):
    with pytest.raises(UserError, match="no vision blocks to prune"):
        auto.refuse_early("folder", tf.AutoConfig.for_model(model_type))


def test_prompts_come_from_the_chat_template():
    _, proc = tiny_qwen2_vl()
    plain = chat.prompts_from(proc)  # no template: the image token before the text
    assert plain.vqa == "<|image_pad|>\n{question}"
    proc.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}"
        "{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% else %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = chat.prompts_from(proc)
    assert p.vqa == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                     "{question}<|im_end|>\n<|im_start|>assistant\n")
    assert chat.CAPTION in p.caption and p.caption.endswith("assistant\n")
    assert p.question("Is it red?").count("Is it red?") == 1
