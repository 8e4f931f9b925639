"""The sample sources calibration (pruning) and recovery (training) both read: the shapes
world's train split, and JSONL files of images with text (each reader names its keys), in a
seeded order. Each stage keeps its own schedule of which items it takes; this is where an
item is read."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from harness import jsonl
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample


def shapes_item(index: int, caption: bool) -> tuple[np.ndarray, str, str]:
    """Train-split item `index`: (image, question or "" for a caption, answer or caption)."""
    if caption:
        scene, text = caption_sample("train", index)
        return render(scene), "", text
    s = vqa_sample("train", index)
    return render(s.scene), s.qa.question, s.qa.answer


def rows(path: str, kind: tuple) -> list[dict]:
    """A JSONL source's rows, checked whole (`kind`: jsonl.CALIBRATION or jsonl.RECOVERY);
    read again when the file changes (same process, edited file: never the old rows)."""
    try:
        st = Path(path).stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        stamp = None  # jsonl.rows says what is wrong
    return _rows(path, kind, stamp)


@cache
def _rows(path: str, kind: tuple, stamp: tuple | None) -> list[dict]:
    return jsonl.rows(path, *kind)


@cache
def order(n: int, seed: int) -> np.ndarray:
    """The seeded order of a source's n rows (computed once, not per batch)."""
    return np.random.default_rng(seed).permutation(n)


def image(source: str | Path, row: dict) -> Image.Image:
    """A JSONL row's image (its path is relative to the file), as RGB."""
    return Image.open(Path(source).parent / row["image"]).convert("RGB")
