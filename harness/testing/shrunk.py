"""Any transformers VLM at toy size, from its config class's defaults: widths cut to 32–64,
two layers per tower, two heads, four experts; the vocabulary and the image geometry kept, so
the special token ids and image token counts of the defaults still hold. Random weights, no
download. For the census of what `models/auto.py` finds in each architecture and for tests of
models that have no hand-made tiny builder (`tiny.py`, `tiny_more.py`)."""

from __future__ import annotations

import re
from typing import Any

import torch
import transformers as tf
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

D = 32
LAYERS = 2
_CAPS = [
    (r"(hidden_size|embed_dim|d_model|n_embd|dim|hidden_dim|width|vision_embed_dim|"
     r"text_hidden_size|out_hidden_size|projection_dim|qformer_hidden_size|vision_hidden_size|"
     r"text_embed_dim)", D),
    (r"(intermediate_size|ffn_dim|encoder_ffn_dim|decoder_ffn_dim|mlp_dim|n_inner|d_ff|"
     r"projector_hidden_size|moe_intermediate_size|shared_expert_intermediate_size|"
     r"intermediate_size_mlp)", 2 * D),
    (r"(num_hidden_layers|num_layers|n_layers|depth|encoder_layers|decoder_layers|"
     r"num_decoder_layers|num_encoder_layers)", LAYERS),
    (r"num_global_layers", 1),
    (r"(num_attention_heads|num_heads|n_head|encoder_attention_heads|"
     r"decoder_attention_heads|attention_heads)", 2),
    (r"(num_key_value_heads|n_kv_heads|num_kv_heads)", 1),
    (r"(head_dim|kv_channels)", 16),
    (r"(num_experts|num_local_experts|n_routed_experts)", 4),
    (r"(num_experts_per_tok|moe_topk)", 2),
]
CAPS = [(re.compile(f"^{rx}$"), cap) for rx, cap in _CAPS]
# derived from the layer count by the config itself when left out
_DERIVED = {"layer_types", "sliding_window_pattern"}
# lists of layer indices: kept where they still index a layer, else the last layer
_INDEXES = {"fullatt_block_indexes", "deepstack_visual_indexes", "cross_attention_layers",
            "full_attention_layers", "global_attention_layers", "mlp_only_layers"}


def image_text_types() -> list[str]:
    """Every model_type transformers maps to an image-text-to-text model class."""
    return sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def shrink(config: dict[str, Any]) -> dict[str, Any]:
    """A config's fields (`to_dict()`) at toy size; sub-configs likewise."""
    layers = {k: v for k, v in config.items() if CAPS[2][0].match(k) and isinstance(v, int)}
    before = max(layers.values(), default=0)
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and "model_type" in v:
            out[k] = shrink(v)
            continue
        if k in _DERIVED:
            continue
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            cap = next((c for rx, c in CAPS if rx.match(k)), None)
            v = min(v, cap) if cap is not None else v
        elif k in _INDEXES and isinstance(v, list):
            v = sorted({i if 0 <= i < LAYERS else LAYERS - 1 for i in v if isinstance(i, int)})
        elif isinstance(v, list) and before and len(v) == before:  # one entry per layer
            v = v[:LAYERS]
        elif k == "per_layer_config" and isinstance(v, dict):
            v = {i: c for i, c in v.items() if int(i) < LAYERS}
        out[k] = v
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "mrope_section" in rope:
        half = out.get("head_dim", 16) // 2
        rope["mrope_section"] = [half - 2 * (half // 3), half // 3, half // 3]
    return out


def tiny_config(model_type: str):
    cfg = AutoConfig.for_model(model_type)
    data = cfg.to_dict()
    for k in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        data.pop(k, None)
    return type(cfg)(**shrink(data))


def tiny_model(model_type: str, seed: int = 0, meta: bool = False) -> torch.nn.Module:
    """A random model of `model_type`'s image-text-to-text class at toy size (errors as
    transformers raises them: some architectures' defaults do not shrink); with `meta`, its
    shapes only, on the meta device."""
    cls = getattr(tf, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type])
    config = tiny_config(model_type)
    if meta:
        with torch.device("meta"):
            return cls(config).eval()
    torch.manual_seed(seed)
    return cls(config).eval()
