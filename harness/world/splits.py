"""Fixed train / validation / test splits of the shapes world, and their materialization.

Sample i of a split is a pure function of (split seed, task, i): no file is needed to train or
evaluate, and `materialize` writes PNG + JSONL for tools (lmms-eval) that read from disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness import integrity
from harness.paths import atomic_dir
from harness.world.scene import Scene, render, sample_scene
from harness.world.text import QA, QUESTION_TYPES, ask, caption

log = logging.getLogger(__name__)
_checked: dict[str, int] = {}  # folder -> its DONE's mtime when its contents were checked

SPLIT_SEEDS = {"train": 1000, "validation": 2000, "test": 3000}
TASK_SEEDS = {"vqa": 1, "caption": 2}


@dataclass(frozen=True)
class VQASample:
    scene: Scene
    qa: QA


def _rng(split: str, task: str, i: int) -> np.random.Generator:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_SEEDS)}")
    return np.random.default_rng([SPLIT_SEEDS[split], TASK_SEEDS[task], i])


def vqa_sample(split: str, i: int) -> VQASample:
    """Question types cycle with i, so any prefix of a split is balanced across types."""
    rng = _rng(split, "vqa", i)
    qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
    scene = sample_scene(rng, min_objects=2 if qtype == "spatial" else 1)
    qa = ask(scene, qtype, rng)
    while qa is None:  # only spatial can fail: all pairs diagonal
        scene = sample_scene(rng, min_objects=2)
        qa = ask(scene, qtype, rng)
    return VQASample(scene, qa)


def caption_sample(split: str, i: int) -> tuple[Scene, str]:
    scene = sample_scene(_rng(split, "caption", i))
    return scene, caption(scene)


def materialize(split: str, out_dir: str | Path, n_vqa: int, n_caption: int) -> Path:
    """Write images/*.png, vqa.jsonl and caption.jsonl for a split prefix; atomic.

    The folder appears complete or not at all (written to a temporary sibling, then renamed),
    sealed with a manifest of its files. A folder that no longer matches its manifest (an
    image or a JSONL edited, truncated, deleted) is set aside as `<name>.damaged-<time>` with
    a warning, and written again: evaluation never reads damaged data.
    """
    out = Path(out_dir)
    if integrity.sealed(out, "DONE"):
        stamp = (out / "DONE").stat().st_mtime_ns
        # contents checked once per process (1,500 files: ~50 ms), sizes at every call
        deep = _checked.get(str(out)) != stamp
        problem = integrity.check(out, "DONE", deep=deep)
        if problem is None:
            _checked[str(out)] = stamp
            return out
        aside = out.with_name(f"{out.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(out, aside)
            log.warning("materialized data %s is damaged (%s): set aside to %s, writing it "
                        "again", out, problem, aside)
        except FileNotFoundError:
            pass  # another process set it aside first
    with atomic_dir(out, replace=False) as tmp:  # another process may win the race
        _write_split(tmp, split, n_vqa, n_caption)
        integrity.seal(tmp, "DONE", split=split, n_vqa=n_vqa, n_caption=n_caption)
    return out


def _write_split(tmp: Path, split: str, n_vqa: int, n_caption: int) -> None:
    (tmp / "images").mkdir()
    with open(tmp / "vqa.jsonl", "w") as f:
        for i in range(n_vqa):
            s = vqa_sample(split, i)
            name = f"images/vqa_{i:06d}.png"
            Image.fromarray(render(s.scene)).save(tmp / name)
            rec = {"id": i, "image": name, "question": s.qa.question, "answer": s.qa.answer,
                   "type": s.qa.qtype}
            f.write(json.dumps(rec) + "\n")
    with open(tmp / "caption.jsonl", "w") as f:
        for i in range(n_caption):
            scene, text = caption_sample(split, i)
            name = f"images/caption_{i:06d}.png"
            Image.fromarray(render(scene)).save(tmp / name)
            f.write(json.dumps({"id": i, "image": name, "caption": text}) + "\n")
