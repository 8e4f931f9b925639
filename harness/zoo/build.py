"""Architecture, tokenizer and processor of shapes-llava, the embedded default model.

A LLaVA (HF `LlavaForConditionalGeneration`): CLIP-style ViT (patch 16 on 64 px, so one image
token per grid cell), a two-layer MLP projector and a small Llama, with a word-level tokenizer.
Everything saves with `save_pretrained` and loads offline with `from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from harness.world.scene import CELL, IMAGE_SIZE
from harness.world.text import vocabulary
from harness.zoo.prompts import caption_prompt, vqa_prompt

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]

VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=5, num_attention_heads=4)
LANGUAGE = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=6,
                num_attention_heads=4, num_key_value_heads=4)


def build_tokenizer(image_token_attribute: bool = True) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the shapes vocabulary.

    BLIP processors register `<image>` themselves and need the attribute absent."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"} if image_token_attribute else None,
        padding_side="left", model_max_length=128,
    )
    return fast


def build_processor() -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD, do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=CELL,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )


def build_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=CELL, hidden_act="gelu", **VISION)
    text = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=128, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **LANGUAGE,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=False,
    )


def build_model(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    import torch

    torch.manual_seed(seed)
    processor = build_processor()
    model = LlavaForConditionalGeneration(build_config(processor.tokenizer))
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return model, processor


def save(model: LlavaForConditionalGeneration, processor: LlavaProcessor, path: Path) -> None:
    """Weights, processor, and vlmprune.json: the prompt format the adapter reads."""
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    meta = {"family": "llava", "prompts": {"vqa": vqa_prompt("{question}"),
                                           "caption": caption_prompt(),
                                           "instructions": False}}  # trained on bare questions
    (Path(path) / "vlmprune.json").write_text(json.dumps(meta, indent=2) + "\n")
