"""Random-weight VLMs that run through a `generic` layout (harness/models/layouts/), built
from config with no download: Qwen2-VL, Qwen2.5-VL, Idefics3, PaliGemma and Gemma3.

Each returns (model, processor) at toy size (hidden 32, two blocks per tower, 32 px images,
a handful of image tokens). The processors are the architectures' own, over an image
processor made in code and the shapes word tokenizer extended with the special tokens each
processor and prompt format needs, so nothing is read from the hub.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers as tf
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from harness.world.text import vocabulary

IMAGE = 32  # pixels a side
D = 32  # hidden size of every tower
MEAN, STD = [0.5] * 3, [0.5] * 3


def tokenizer(named: dict[str, str] | None = None, extra: Sequence[str] = (),
              bos: str = "<s>", eos: str = "</s>") -> tf.PreTrainedTokenizerFast:
    """The shapes word tokenizer (as harness.zoo.build makes it) with the special tokens of
    another model: `named` ones become attributes (`tokenizer.image_token`, `.image_token_id`),
    `extra` are plain special tokens (chat markers); other words are `<unk>`."""
    named = dict(named or {})
    specials = list(dict.fromkeys(["<pad>", "<unk>", bos, eos, *named.values(), *extra]))
    vocab = {t: i for i, t in enumerate(specials + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token=bos,
        eos_token=eos, extra_special_tokens=named or None, padding_side="left",
        model_max_length=1024)
    others = [t for t in extra if t not in named.values()]
    if others:
        fast.add_tokens(others, special_tokens=True)
    return fast


def _ids(tok) -> dict:
    return dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)


def finish(model, tok):
    """A toy model in eval mode, generating with its tokenizer's pad, end and start ids."""
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


# ---- Qwen2-VL, Qwen2.5-VL -------------------------------------------------------------------
QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
QWEN_CHAT = ["<|im_start|>", "<|im_end|>"]
QWEN_PATCH = 8  # 32 px -> 4x4 patches -> 2x2 image tokens after the 2x2 merge


def _qwen_text(tok, cls):
    # multimodal RoPE: mrope_section splits a head's rotary half (head 16 -> 8) in t, h, w
    return cls(vocab_size=len(tok), hidden_size=D, intermediate_size=2 * D,
               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
               max_position_embeddings=512,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                "mrope_section": [2, 3, 3]}, **_ids(tok))


def _qwen(config_cls, text_cls, vision, model_cls, processor_cls, seed: int):
    torch.manual_seed(seed)
    tok = tokenizer(QWEN_TOKENS, QWEN_CHAT, eos="<|im_end|>")
    ids = {f"{k}_id": tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    cfg = config_cls(text_config=_qwen_text(tok, text_cls), vision_config=vision, **ids)
    model = finish(model_cls(cfg), tok)
    grid = dict(size={"shortest_edge": IMAGE * IMAGE, "longest_edge": IMAGE * IMAGE},
                patch_size=QWEN_PATCH, temporal_patch_size=2, merge_size=2,
                image_mean=MEAN, image_std=STD)
    return model, processor_cls(image_processor=tf.Qwen2VLImageProcessor(**grid),
                                video_processor=tf.Qwen2VLVideoProcessor(**grid), tokenizer=tok)


def tiny_qwen2_vl(seed: int = 0):
    """Qwen2-VL: ViT with 2-D RoPE, a patch merger, a Qwen2 LM with M-RoPE."""
    vision = tf.Qwen2VLVisionConfig(depth=2, embed_dim=D, hidden_size=D, num_heads=2,
                                    mlp_ratio=2, patch_size=QWEN_PATCH, spatial_merge_size=2,
                                    temporal_patch_size=2)
    return _qwen(tf.Qwen2VLConfig, tf.Qwen2VLTextConfig, vision,
                 tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor, seed)


def tiny_qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL: windowed-attention ViT (block 1 full), SwiGLU MLPs, a patch merger."""
    vision = tf.Qwen2_5_VLVisionConfig(depth=2, hidden_size=D, intermediate_size=2 * D,
                                       num_heads=2, out_hidden_size=D, patch_size=QWEN_PATCH,
                                       spatial_merge_size=2, temporal_patch_size=2,
                                       window_size=2 * QWEN_PATCH * 2,
                                       fullatt_block_indexes=[1])
    return _qwen(tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLTextConfig, vision,
                 tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor, seed)


# ---- Idefics3 ---------------------------------------------------------------------------
IDEFICS_TOKENS = {"image_token": "<image>"}
IDEFICS_MARKERS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
IDEFICS_PATCH = 8  # 32 px -> 4x4 patches -> 2x2 image tokens after the pixel shuffle


def tiny_idefics3(seed: int = 0):
    """Idefics3: SigLIP-style ViT, pixel-shuffle connector with one Linear, a Llama LM."""
    torch.manual_seed(seed)
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = tokenizer(IDEFICS_TOKENS, IDEFICS_MARKERS + rows, eos="<end_of_utterance>")
    vision = tf.Idefics3VisionConfig(hidden_size=D, intermediate_size=2 * D,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     image_size=IMAGE, patch_size=IDEFICS_PATCH)
    text = tf.LlamaConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tok),
                          max_position_embeddings=512, **_ids(tok))
    cfg = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                            image_token_id=tok.image_token_id, pad_token_id=tok.pad_token_id)
    model = finish(tf.Idefics3ForConditionalGeneration(cfg), tok)
    image_processor = tf.Idefics3ImageProcessor(
        size={"longest_edge": IMAGE}, max_image_size={"longest_edge": IMAGE},
        do_image_splitting=False, image_mean=MEAN, image_std=STD)
    seq = (IMAGE // IDEFICS_PATCH) ** 2 // 4
    return model, tf.Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                       image_seq_len=seq)


# ---- PaliGemma, Gemma3 ------------------------------------------------------------------
SIGLIP_PATCH = 8


def _siglip(**kw):
    return tf.SiglipVisionConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                                 num_attention_heads=2, image_size=IMAGE,
                                 patch_size=SIGLIP_PATCH, vision_use_head=False, **kw)


def tiny_paligemma(seed: int = 0):
    """PaliGemma: SigLIP ViT, one Linear projector, a Gemma LM (prefix attends both ways)."""
    torch.manual_seed(seed)
    tok = tokenizer({"image_token": "<image>"})
    image_processor = tf.SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE},
                                              image_mean=MEAN, image_std=STD)
    image_processor.image_seq_length = (IMAGE // SIGLIP_PATCH) ** 2
    proc = tf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds tokens
    text = tf.GemmaConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                          vocab_size=len(tok), max_position_embeddings=512, **_ids(tok))
    cfg = tf.PaliGemmaConfig(vision_config=_siglip(), text_config=text, projection_dim=D,
                             hidden_size=D, vocab_size=len(tok),
                             image_token_index=tok.image_token_id)
    return finish(tf.PaliGemmaForConditionalGeneration(cfg), tok), proc


GEMMA3_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                 "eoi_token": "<end_of_image>"}
GEMMA3_CHAT = ["<start_of_turn>", "<end_of_turn>"]
GEMMA3_IMAGE_TOKENS = 4  # 4x4 patches average-pooled to 2x2


def tiny_gemma3(seed: int = 0):
    """Gemma3 (image-text): SigLIP ViT, a pooling projector with no Linear, a Gemma3 LM."""
    torch.manual_seed(seed)
    tok = tokenizer(GEMMA3_TOKENS, GEMMA3_CHAT, bos="<bos>", eos="<eos>")
    text = tf.Gemma3TextConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                               query_pre_attn_scalar=16, sliding_window=64,
                               vocab_size=len(tok), max_position_embeddings=512, **_ids(tok))
    ids = {f"{k}_index": tok.convert_tokens_to_ids(v) for k, v in GEMMA3_TOKENS.items()}
    cfg = tf.Gemma3Config(vision_config=_siglip(), text_config=text,
                          mm_tokens_per_image=GEMMA3_IMAGE_TOKENS, **ids)
    model = finish(tf.Gemma3ForConditionalGeneration(cfg), tok)
    image_processor = tf.Gemma3ImageProcessor(size={"height": IMAGE, "width": IMAGE},
                                              image_mean=MEAN, image_std=STD)
    return model, tf.Gemma3Processor(image_processor=image_processor, tokenizer=tok,
                                     image_seq_length=GEMMA3_IMAGE_TOKENS)


BUILDERS = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl,
            "idefics3": tiny_idefics3, "paligemma": tiny_paligemma, "gemma3": tiny_gemma3}
