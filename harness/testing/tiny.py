"""Random-weight VLMs of every supported architecture, built from config with no download.

Tests use them at toy size; benchmarks scale `tiny_llava` up (a ~1B-parameter LLaVA shape).
They share the shapes-llava word tokenizer, so their processors need no hub files either.
"""

from __future__ import annotations

import torch
import transformers as tf

from harness.zoo.build import build_tokenizer

IMAGE = 32
PATCH = 16


def _vision(cls, d: int, layers: int):
    return cls(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
               num_attention_heads=2, image_size=IMAGE, patch_size=PATCH)


def _image_processor(cls):
    return cls(size={"height": IMAGE, "width": IMAGE}, do_center_crop=False,
               image_mean=[0.5] * 3, image_std=[0.5] * 3)


def tiny_llava(d: int = 32, layers: int = 2, vision_d: int | None = None,
               vision_layers: int | None = None, intermediate: int | None = None, seed: int = 0):
    """A LLaVA with a CLIP tower and a Llama LM; returns (model, processor)."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    vd = vision_d or d
    vision = _vision(tf.CLIPVisionConfig, vd, vision_layers or layers)
    vision.intermediate_size = 4 * vd
    text = tf.LlamaConfig(hidden_size=d, intermediate_size=intermediate or 2 * d,
                          num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                          vocab_size=len(tok), max_position_embeddings=256,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cfg = tf.LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = tf.LlavaForConditionalGeneration(cfg).eval()
    _generation_ids(model, tok)
    return model, _llava_processor(tok)


def tiny_vipllava(d: int = 32, layers: int = 2, seed: int = 0):
    """A VipLLaVA (model_type `vipllava`): LLaVA's shape, but its projector starts with a
    LayerNorm over several vision layers; returns (model, processor). It is no `llava`: a
    test loads it as one to see the mismatch refused."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    text = tf.LlamaConfig(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                          num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tok),
                          max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)
    cfg = tf.VipLlavaConfig(vision_config=_vision(tf.CLIPVisionConfig, d, layers),
                            text_config=text,
                            image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_layers=[-2, -1])
    model = tf.VipLlavaForConditionalGeneration(cfg).eval()
    _generation_ids(model, tok)
    return model, _llava_processor(tok)


def _language_config(kind: str, vocab: int, tok):
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if kind == "opt":
        return tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                            num_attention_heads=2, vocab_size=vocab, word_embed_proj_dim=16,
                            max_position_embeddings=128, bos_token_id=tok.pad_token_id, **ids)
    if kind == "t5":
        return tf.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                           num_heads=2, vocab_size=vocab,
                           decoder_start_token_id=tok.pad_token_id, **ids)
    if kind == "llama":
        return tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=2, vocab_size=vocab,
                              max_position_embeddings=128, **ids)
    raise ValueError(f"unknown language model kind {kind!r}")


def _blip_like(config_cls, vision_cls, qformer_cls, model_cls, lm: str, queries: int, seed: int):
    torch.manual_seed(seed)
    tok = build_tokenizer(image_token_attribute=False)
    qformer = qformer_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, encoder_hidden_size=32, vocab_size=len(tok),
                          pad_token_id=tok.pad_token_id)
    cfg = config_cls(vision_config=_vision(vision_cls, 32, 2).to_dict(),
                     qformer_config=qformer.to_dict(),
                     text_config=_language_config(lm, len(tok), tok).to_dict(),
                     num_query_tokens=queries,
                     image_token_index=tok.convert_tokens_to_ids("<image>"))
    model = model_cls(cfg).eval()
    _generation_ids(model, tok)
    return model, tok


def tiny_blip2(lm: str = "opt", seed: int = 0):
    """BLIP-2 with an OPT or T5 language model; returns (model, processor)."""
    model, tok = _blip_like(tf.Blip2Config, tf.Blip2VisionConfig, tf.Blip2QFormerConfig,
                            tf.Blip2ForConditionalGeneration, lm, 4, seed)
    proc = tf.Blip2Processor(image_processor=_image_processor(tf.BlipImageProcessor),
                             tokenizer=tok, num_query_tokens=4)
    return model, proc


def tiny_instructblip(lm: str = "t5", seed: int = 0):
    """InstructBLIP with a T5 or Llama language model; returns (model, processor)."""
    model, tok = _blip_like(tf.InstructBlipConfig, tf.InstructBlipVisionConfig,
                            tf.InstructBlipQFormerConfig, tf.InstructBlipForConditionalGeneration,
                            lm, 4, seed)
    proc = tf.InstructBlipProcessor(image_processor=_image_processor(tf.BlipImageProcessor),
                                    tokenizer=tok, qformer_tokenizer=build_tokenizer(),
                                    num_query_tokens=4)
    return model, proc


def _llava_processor(tok):
    """LLaVA's processor over the tiny CLIP image processor (one image token per patch, plus
    CLS)."""
    return tf.LlavaProcessor(image_processor=_image_processor(tf.CLIPImageProcessor),
                             tokenizer=tok, patch_size=PATCH,
                             vision_feature_select_strategy="default",
                             num_additional_image_tokens=1)


def _generation_ids(model, tok) -> None:
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    if model.config.text_config.model_type == "t5":
        model.generation_config.decoder_start_token_id = tok.pad_token_id
