"""Prompts from a processor: its chat template with an image entry, else its image token,
so a chat VLM needs no prompt strings written for it (a layout's `prompts:` still
overrides)."""

from __future__ import annotations

from typing import Any

from harness.models.layout import Prompts

QUESTION = "{question}"
CAPTION = "Describe the image briefly."


def prompts_from(processor: Any) -> Prompts:
    """A question and a caption request in the processor's own format: the user turn of its
    chat template holding one image and the text, with the assistant's turn opened; without
    a template, the processor's image token before the text; else the bare text (processors
    such as PaliGemma's and Florence-2's add the image tokens themselves: one that refuses its
    own token before a text and takes the bare text with an image is one of those)."""
    vqa, caption = _templated(processor, QUESTION), _templated(processor, CAPTION)
    if vqa is not None and caption is not None:
        return Prompts(vqa=vqa, caption=caption)
    token = image_token(processor)
    if token and not _adds_its_own(processor, token):
        return Prompts(vqa=f"{token}\n{QUESTION}", caption=f"{token}\n{CAPTION}")
    return Prompts(vqa=QUESTION, caption=CAPTION)


def _adds_its_own(processor: Any, token: str) -> bool:
    """A processor that puts the image tokens in itself: it refuses a text holding its own
    token and takes the bare text with an image."""
    return not _takes(processor, f"{token}\nwhat ?") and _takes(processor, "what ?")


def _takes(processor: Any, text: str) -> bool:
    """Whether the processor encodes `text` with one small image."""
    import numpy as np

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    try:
        processor(images=[image], text=[text], return_tensors="pt")
    except Exception:  # noqa: BLE001 - any refusal is an answer here
        return False
    return True


def image_token(processor: Any) -> str | None:
    for owner in (processor, getattr(processor, "tokenizer", None)):
        tok = getattr(owner, "image_token", None)
        if isinstance(tok, str) and tok:
            return tok
    return None


def _templated(processor: Any, text: str) -> str | None:
    if not getattr(processor, "chat_template", None):
        return None
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    try:
        out = processor.apply_chat_template(messages, add_generation_prompt=True,
                                            tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render: the image token instead
        return None
    if isinstance(out, list):
        out = out[0] if out else ""
    return out if isinstance(out, str) and text in out else None
