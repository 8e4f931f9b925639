"""Prompt format of shapes-llava: the one place that knows it."""

from __future__ import annotations

CAPTION_PROMPT = "caption :"


def vqa_prompt(question: str) -> str:
    # The question comes before the image, so that every image token can attend to it and
    # mark itself as the object asked about (as InstructBLIP's instruction-aware Q-Former
    # does); with the image first, a 6-layer LM bound colours to the wrong object.
    return f"question : {question} <image> answer :"


def caption_prompt() -> str:
    return f"<image> {CAPTION_PROMPT}"
