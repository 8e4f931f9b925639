"""Calibration batches: image + text samples run through the model while pruning.

`shapes` draws from the shapes world's train split (questions with their answers and
captions, alternating); any other source is a JSONL file of {"image": path, "text": str},
image paths relative to the file.
"""

from __future__ import annotations

from typing import Any

from harness import jsonl, sources
from harness.models.adapter import Adapter
from harness.pruning.spec import CalibrationSpec

CALIBRATION_OFFSET = 10_000_000  # train indices far from where training started


def samples(spec: CalibrationSpec, adapter: Adapter) -> list[tuple[Any, str]]:
    """(image, text) pairs: questions with their answers and captions, alternating, from the
    shapes train split, or the rows of a JSONL file in a seeded order."""
    if spec.source == "shapes":
        out = []
        for i in range(spec.samples):
            j = CALIBRATION_OFFSET + spec.seed * spec.samples + i
            im, question, answer = sources.shapes_item(j, caption=bool(i % 2))
            out.append((im, f"{adapter.prompt_for(question)} {answer}"))  # "": a caption
        return out
    rows = sources.rows(spec.source, jsonl.CALIBRATION)
    picked = sources.order(len(rows), spec.seed)[:spec.samples]
    return [(sources.image(spec.source, rows[i]), rows[i]["text"]) for i in picked]


def batches(spec: CalibrationSpec, adapter: Adapter) -> list[dict]:
    items = samples(spec, adapter)
    bs = spec.batch_size
    return [adapter.prepare([im for im, _ in items[s:s + bs]], [t for _, t in items[s:s + bs]])
            for s in range(0, len(items), bs)]
