"""BLIP-2 and InstructBLIP: ViT, Q-Former + language projection as the bridge, and an OPT,
T5 or Llama language model (`Blip2ForConditionalGeneration`,
`InstructBlipForConditionalGeneration`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by whoever holds a model
    from torch import nn

from harness.errors import UserError
from harness.models.layout import Layout, Prompts

MODEL_TYPES = ("blip-2", "instructblip")
PROMPTS = {"blip-2": Prompts(vqa="Question: {question} Answer:", caption="a photo of"),
           "instructblip": Prompts(vqa="{question} Answer the question using a single word.",
                                   caption="A short image description:")}

# Where each language-model family keeps its blocks, relative to `language_model`, and the
# Linears it holds outside them (besides lm_head) that pruning leaves alone.
_LANGUAGE = {
    "opt": (("model.decoder.layers",), ("model.decoder.project_in", "model.decoder.project_out")),
    "t5": (("encoder.block", "decoder.block"), ()),
    "llama": (("model.layers",), ()),
}


def layout(model: nn.Module) -> Layout:
    lm_type = model.config.text_config.model_type
    if lm_type not in _LANGUAGE:
        raise UserError(f"BLIP language model '{lm_type}' has no layout "
                        f"(known: {', '.join(_LANGUAGE)}); use family: generic with a layout")
    blocks, extra = _LANGUAGE[lm_type]
    return Layout(
        vision=("vision_model.encoder.layers",),
        bridge=("qformer.encoder.layer", "language_projection"),
        language=tuple(f"language_model.{p}" for p in blocks),
        exclude=("language_model.lm_head",) + tuple(f"language_model.{p}" for p in extra),
        # T5Block returns (hidden, self-attention bias, cross-attention bias); the stack feeds
        # them to the next block as positional arguments 2 and 5.
        carry=((("language_model.encoder.block", ((1, 2),)),
                ("language_model.decoder.block", ((1, 2), (2, 5)))) if lm_type == "t5" else ()),
    )
