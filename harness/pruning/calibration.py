"""Calibration batches: image + text samples run through the model while pruning.

`shapes` draws from the shapes world's train split (questions with their answers and
captions, alternating); any other source is a JSONL file of {"image": path, "text": str},
image paths relative to the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness import jsonl
from harness.models.adapter import Adapter
from harness.pruning.spec import CalibrationSpec
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample

CALIBRATION_OFFSET = 10_000_000  # train indices far from where training started


def samples(spec: CalibrationSpec, adapter: Adapter) -> list[tuple[object, str]]:
    if spec.source == "shapes":
        out = []
        for i in range(spec.samples):
            j = CALIBRATION_OFFSET + spec.seed * spec.samples + i
            if i % 2:
                scene, text = caption_sample("train", j)
                out.append((render(scene), f"{adapter.prompts.caption} {text}"))
            else:
                s = vqa_sample("train", j)
                out.append((render(s.scene),
                            f"{adapter.prompts.question(s.qa.question)} {s.qa.answer}"))
        return out
    return _jsonl(Path(spec.source), spec.samples, spec.seed)


def _jsonl(path: Path, n: int, seed: int) -> list[tuple[object, str]]:
    rows = jsonl.rows(path, *jsonl.CALIBRATION)
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [(Image.open(path.parent / rows[i]["image"]).convert("RGB"), rows[i]["text"])
            for i in order]


def batches(spec: CalibrationSpec, adapter: Adapter) -> list[dict]:
    items = samples(spec, adapter)
    bs = spec.batch_size
    return [adapter.prepare([im for im, _ in items[s:s + bs]], [t for _, t in items[s:s + bs]])
            for s in range(0, len(items), bs)]
