"""LLaVA (HF `LlavaForConditionalGeneration`): CLIP ViT, MLP projector, Llama-family LM."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by whoever holds a model
    from torch import nn

from harness.models.layout import Layout, Prompts

MODEL_TYPES = ("llava",)
# LLaVA-1.5's conversation format; shapes-llava ships its own in vlmprune.json.
PROMPTS = Prompts(vqa="USER: <image>\n{question} ASSISTANT:",
                  caption="USER: <image>\nDescribe the image briefly. ASSISTANT:")


def layout(model: nn.Module) -> Layout:
    tower = "model.vision_tower"
    if hasattr(model.get_submodule(tower), "vision_model"):  # CLIPVisionModel before v5
        tower += ".vision_model"
    return Layout(
        vision=(f"{tower}.encoder.layers",),
        bridge=("model.multi_modal_projector",),
        language=("model.language_model.layers",),
        exclude=("lm_head",),
    )
