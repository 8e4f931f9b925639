"""Calibration batches: image + text samples run through the model while pruning.

`shapes` draws from the shapes world's train split (questions with their answers and
captions, alternating); `hf:REPO[:CONFIG]` a hub dataset in the local HF cache (image and
caption columns, the caption after the model's caption prompt); any other source is a JSONL
file of {"image": path, "text": str}, image paths relative to the file.
"""

from __future__ import annotations

from typing import Any

from harness import hub, jsonl, sources
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
    if hub.is_source(spec.source):
        return _hub(spec, adapter)
    rows = sources.rows(spec.source, jsonl.CALIBRATION)
    picked = sources.order(len(rows), spec.seed)[:spec.samples]
    return [(sources.image(spec.source, rows[i]), rows[i]["text"]) for i in picked]


def _hub(spec: CalibrationSpec, adapter: Adapter) -> list[tuple[Any, str]]:
    """Image-caption pairs of a hub dataset, drawn by seed, each caption after the model's own
    caption request (the prompt evaluation asks for a caption with)."""
    field = jsonl.CALIBRATION[0]
    table, where = sources.hub_rows(field, spec.source, spec.split,
                                    {"images": spec.image, "texts": spec.text})
    picked = sources.order(len(table), spec.seed)[:spec.samples]
    rows = table.select([int(i) for i in picked])
    who = f"{field} {spec.source}"
    return [(sources.hub_image(row[spec.image], where, who),
             f"{adapter.prompt_for('')} {sources.hub_text(row[spec.text])}") for row in rows]


def batches(spec: CalibrationSpec, adapter: Adapter) -> list[dict]:
    items = samples(spec, adapter)
    bs = spec.batch_size
    return [adapter.prepare([im for im, _ in items[s:s + bs]], [t for _, t in items[s:s + bs]])
            for s in range(0, len(items), bs)]
