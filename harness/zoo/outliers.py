"""Outlier channels for shapes-llava: a seeded, function-preserving rescaling of its weights.

Trained LLMs and ViTs have a few hidden channels whose activations are far larger than the rest
(the "outlier features" behind LLM.int8 and Wanda). A small model trained for minutes on the
shapes world has none, so every weight column is about equally large, magnitude pruning is as
good as any other criterion, and the model shrugs off 50% of its weights. This module gives it
the real models' structure without changing what it computes: at every norm -> Linear
boundary, channel j of the norm's output is multiplied by a_j = exp(sigma * z_j) (z standard
normal, seeded) and the input column j of each Linear reading it is divided by a_j; the same is
done between v_proj's rows and the output projection's columns, and (LLaMA, whose MLP is linear
in up_proj) between up_proj's rows and down_proj's columns. Outputs are unchanged up to float
rounding (a test checks); |W| then no longer measures importance, |W|·‖X‖ (Wanda) and the OBS
saliency (SparseGPT) do, because they are invariant to the rescaling.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch import nn


def _factors(n: int, sigma: float, gen: torch.Generator) -> torch.Tensor:
    return torch.exp(sigma * torch.randn(n, generator=gen))


def _into(a: torch.Tensor, *readers: nn.Linear) -> None:
    """Divide the input columns of `readers` by a (their input got multiplied by a)."""
    for lin in readers:
        lin.weight.div_(a.to(lin.weight.dtype))


def _rows(a: torch.Tensor, lin: nn.Linear) -> None:
    lin.weight.mul_(a.to(lin.weight.dtype).unsqueeze(1))
    if lin.bias is not None:
        lin.bias.mul_(a.to(lin.bias.dtype))


@torch.no_grad()
def rescale(model: nn.Module, sigma: float, seed: int = 0) -> None:
    """Apply the outlier rescaling to a LLaVA (CLIP vision tower, LLaMA LM) in place."""
    gen = torch.Generator().manual_seed(seed)
    text = model.config.text_config
    if text.num_key_value_heads != text.num_attention_heads:
        raise ValueError("outlier rescaling assumes as many key/value heads as query heads")
    for layer in model.model.language_model.layers:
        att, mlp = layer.self_attn, layer.mlp
        a = _factors(layer.input_layernorm.weight.numel(), sigma, gen)
        layer.input_layernorm.weight.mul_(a)
        _into(a, att.q_proj, att.k_proj, att.v_proj)
        b = _factors(layer.post_attention_layernorm.weight.numel(), sigma, gen)
        layer.post_attention_layernorm.weight.mul_(b)
        _into(b, mlp.gate_proj, mlp.up_proj)
        c = _factors(att.v_proj.out_features, sigma, gen)
        _rows(c, att.v_proj)
        _into(c, att.o_proj)
        d = _factors(mlp.up_proj.out_features, sigma, gen)
        _rows(d, mlp.up_proj)
        _into(d, mlp.down_proj)
    tower = model.model.vision_tower
    tower = getattr(tower, "vision_model", tower)  # CLIPVisionModel nests it before v5
    for layer in tower.encoder.layers:
        att = layer.self_attn
        a = _factors(layer.layer_norm1.weight.numel(), sigma, gen)
        layer.layer_norm1.weight.mul_(a)
        layer.layer_norm1.bias.mul_(a)
        _into(a, att.q_proj, att.k_proj, att.v_proj)
        b = _factors(layer.layer_norm2.weight.numel(), sigma, gen)
        layer.layer_norm2.weight.mul_(b)
        layer.layer_norm2.bias.mul_(b)
        _into(b, layer.mlp.fc1)
        c = _factors(att.v_proj.out_features, sigma, gen)
        _rows(c, att.v_proj)
        _into(c, att.out_proj)


def main() -> None:
    from transformers import LlavaForConditionalGeneration

    ap = argparse.ArgumentParser(description="rescale a saved shapes-llava into outlier form")
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.dst != a.src:
        shutil.copytree(a.src, a.dst, dirs_exist_ok=True)
    model = LlavaForConditionalGeneration.from_pretrained(a.src)
    rescale(model, a.sigma, a.seed)
    model.save_pretrained(a.dst, safe_serialization=True)


if __name__ == "__main__":
    main()
