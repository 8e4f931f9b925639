"""Prompt format of shapes-llava: the one place that knows it."""

from __future__ import annotations

CAPTION_PROMPT = "caption :"


def vqa_prompt(question: str) -> str:
    return f"<image> question : {question} answer :"


def caption_prompt() -> str:
    return f"<image> {CAPTION_PROMPT}"
