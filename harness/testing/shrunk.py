"""Any transformers VLM at toy size, from its config class's defaults: widths cut to 32–64,
two layers per tower, two heads, four experts; the vocabulary and the image geometry kept, so
the special token ids and image token counts of the defaults still hold. Random weights, no
download. For the census of what `models/auto.py` finds in each architecture and for tests of
models that have no hand-made tiny builder (`tiny.py`, `tiny_more.py`)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
import transformers as tf
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from harness.testing.tiny_more import finish, tokenizer

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
_DERIVED = {"sliding_window_pattern"}
# lists of layer indices: kept where they still index a layer, else the last layer
_INDEXES = {"fullatt_block_indexes", "deepstack_visual_indexes", "cross_attention_layers",
            "full_attention_layers", "global_attention_layers", "mlp_only_layers",
            "intermediate_layers_indices", "vision_feature_layer"}


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
        if k == "layer_types" and isinstance(v, list) and v:
            # one layer of each kind, in order (a hybrid's toy keeps an attention layer, which
            # its cache needs to count the sequence)
            kinds = list(dict.fromkeys(v))
            out[k] = (kinds + [v[-1]] * LAYERS)[:LAYERS]
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
    if "vision_output_dim" in out and "intermediate_layers_indices" in out:
        # Mllama's vision output concatenates the last state and each intermediate one
        out["vision_output_dim"] = out["hidden_size"] * (len(out["intermediate_layers_indices"])
                                                         + 1)
    rope = out.get("rope_parameters")
    # multimodal RoPE (Qwen-VL and kin) splits a head's rotary half in three; plain RoPE
    # ignores the field
    if isinstance(rope, dict) and ("mrope_section" in rope or
                                   str(config.get("model_type", "")).endswith("_text")):
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


# ---- with a processor ------------------------------------------------------------------------
_OWN = {"self", "image_processor", "tokenizer", "video_processor", "audio_processor",
        "feature_extractor", "chat_template", "kwargs", "args"}
# processor arguments read from the model's config under another name
_SAME_AS = {"img_size": ("image_size",), "image_seq_len": ("image_seq_length",
                                                          "mm_tokens_per_image"),
            "image_seq_length": ("image_seq_length", "mm_tokens_per_image"),
            "num_image_tokens": ("image_seq_length", "mm_tokens_per_image")}


def _from_config(config, name: str):
    for where in (config, getattr(config, "vision_config", None),
                  getattr(config, "text_config", None)):
        for key in (name, *_SAME_AS.get(name, ())):
            value = getattr(where, key, None) if where is not None else None
            if value is not None:
                return value
    return None


def _processor_parts(model_type: str):
    """The processor class, and its image and video processor classes (None: it has none)."""
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    def pick(names):
        if isinstance(names, dict):
            names = names.get("torchvision") or names.get("pil")
        elif isinstance(names, tuple):
            names = next((n for n in names if n), None)
        return getattr(tf, names) if names else None

    return (getattr(tf, PROCESSOR_MAPPING_NAMES[model_type]),
            pick(IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)),
            pick(VIDEO_PROCESSOR_MAPPING_NAMES.get(model_type)))


def _sized(image_processor, config):
    """The image processor at the vision tower's image size (its defaults and the config's
    may differ: a 224 px processor for a 336 px tower)."""
    vision = getattr(config, "vision_config", None)
    for attr, key in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                      ("merge_size", "spatial_merge_size")):
        value = getattr(vision, key, None)
        if isinstance(value, int) and isinstance(getattr(image_processor, attr, None), int):
            setattr(image_processor, attr, value)  # the tower's patches, not the defaults'
    side = getattr(vision, "image_size", None)
    if isinstance(side, (list, tuple)):
        side = side[0]
    if not isinstance(side, int):
        return image_processor
    for attr in ("size", "crop_size"):
        size = getattr(image_processor, attr, None)
        if size is None:
            continue
        fields = dict(size) if isinstance(size, dict) else dict(vars(size))
        fixed = {k: side for k, v in fields.items() if isinstance(v, int) and
                 k in ("height", "width", "shortest_edge", "longest_edge")}
        if fixed:
            setattr(image_processor, attr, fixed if isinstance(size, dict) else
                    type(size)(**{**fields, **fixed}))
    return image_processor


def tiny_pair(model_type: str, seed: int = 0):
    """(model, processor) of `model_type` at toy size: the architecture's own processor over its
    default image processor and the shapes word tokenizer holding every special token the
    processor names; the model's token ids set to that tokenizer's."""
    config = tiny_config(model_type)
    proc_cls, image_cls, video_cls = _processor_parts(model_type)
    sig = inspect.signature(proc_cls.__init__).parameters
    kwargs = {p: v for p in sig if p not in _OWN and (v := _from_config(config, p)) is not None}
    if "num_additional_image_tokens" in sig:  # a CLIP tower's class token, as its checkpoints
        vision = getattr(getattr(config, "vision_config", None), "model_type", "")
        kwargs["num_additional_image_tokens"] = int("clip" in str(vision))
        if "clip" in str(vision) and "vision_feature_select_strategy" in sig:
            # dropped again by the model (VipLlava's config does not say so; its checkpoint's
            # processor does)
            kwargs.setdefault("vision_feature_select_strategy", "default")
    if "video_processor" in sig:
        kwargs["video_processor"] = video_cls() if video_cls is not None else None
    tokens: dict[str, str] = {}
    proc = None
    for _ in range(8):  # the processor names tokens; the tokenizer must hold them
        tok = tokenizer(tokens)
        try:
            proc = proc_cls(image_processor=_sized(image_cls(), config), tokenizer=tok,
                            **kwargs)
        except AttributeError as e:  # it reads a named token off the tokenizer
            missing = re.search(r"attribute '?(\w+?_token)(_id)?'?$", str(e))
            if missing is None or missing.group(1) in tokens:
                raise
            tokens[missing.group(1)] = f"<{missing.group(1)}>"
            continue
        named = {k: v for k, v in vars(proc).items()
                 if k.endswith("_token") and isinstance(v, str) and v}
        if all(v in tokens.values() for v in named.values()):
            break
        tokens |= {k: v for k, v in named.items() if v not in tokens.values()}
    assert proc is not None
    tok = proc.tokenizer
    for where in (config, getattr(config, "text_config", None)):
        if where is None:
            continue
        for name, text in tokens.items():
            for key in (f"{name}_id", f"{name}_index"):
                if getattr(where, key, None) is not None:
                    setattr(where, key, tok.convert_tokens_to_ids(text))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if hasattr(where, key):
                setattr(where, key, getattr(tok, key))
    cls = getattr(tf, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type])
    torch.manual_seed(seed)
    model = finish(cls(config), tok)
    for attr in ("num_image_tokens", "image_seq_length"):
        if hasattr(proc, attr) and getattr(proc, attr) is None:
            setattr(proc, attr, _image_tokens(model, proc))
    return model, proc


def _image_tokens(model, proc) -> int | None:
    """How many features the model makes of one image (a processor whose checkpoint would
    have said, e.g. Florence-2's `image_seq_length`): counted on a blank image."""
    import numpy as np

    try:
        pixels = proc.image_processor(images=[np.zeros((32, 32, 3), dtype=np.uint8)],
                                      return_tensors="pt")["pixel_values"]
        inner = getattr(model, "model", model)
        with torch.no_grad():
            out = inner.get_image_features(pixel_values=pixels)
    except Exception:  # noqa: BLE001 - other inputs needed: left as the processor has it
        return None
    feats = getattr(out, "pooler_output", out)
    return int(feats.shape[1]) if isinstance(feats, torch.Tensor) else None
