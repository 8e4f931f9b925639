"""Recovery training batches: (image, request, answer) triples as model inputs + labels.

The shapes train split by default (VQA and captions, deterministic in the step and seed), a
JSONL file of {"image": path relative to the file, "prompt": question or "" for a caption,
"answer": text}, or an HF `datasets` folder (`save_to_disk`) with the same columns, `image`
holding images. Labels cover the answer and its end-of-sequence token only.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import jsonl
from harness.errors import UserError
from harness.models.adapter import Adapter
from harness.recovery.spec import DataSpec
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample


def samples(data: DataSpec, seed: int, start: int, n: int) -> list[tuple]:
    """Samples start .. start+n-1 of the training stream: (image, request, answer)."""
    if data.source == "shapes":
        out = []
        for i in range(start, start + n):
            k = seed * 1_000_003 + i
            if np.random.default_rng([seed, i]).random() < data.caption_share:
                scene, text = caption_sample("train", k)
                out.append((render(scene), "", text))
            else:
                s = vqa_sample("train", k)
                out.append((render(s.scene), s.qa.question, s.qa.answer))
        return out
    if Path(data.source).is_dir():
        ds = _dataset(data.source)
        order = _order(len(ds), seed)
        picked = [ds[int(order[i % len(ds)])] for i in range(start, start + n)]
        return [(r["image"].convert("RGB"), r.get("prompt") or "", r["answer"]) for r in picked]
    rows = _jsonl(data.source)
    order = _order(len(rows), seed)
    root = Path(data.source).parent
    picked = [rows[order[i % len(rows)]] for i in range(start, start + n)]
    return [(Image.open(root / r["image"]).convert("RGB"), r.get("prompt", ""), r["answer"])
            for r in picked]


@cache
def _dataset(path: str):
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except (OSError, ValueError, FileNotFoundError) as e:
        raise UserError(f"recover.data.source: {path} is not a datasets folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if not {"image", "answer"} <= set(ds.column_names):
        raise UserError(f"recover.data.source: {path} needs columns 'image' and 'answer' "
                        f"(and optional 'prompt'); it has {ds.column_names}")
    return ds


@cache
def _jsonl(path: str) -> list[dict]:
    return jsonl.rows(path, *jsonl.RECOVERY)


@cache
def _order(n: int, seed: int) -> np.ndarray:
    """The seeded order of a source's n rows (computed once, not per micro-batch)."""
    return np.random.default_rng(seed).permutation(n)


def encode(adapter: Adapter, items: list[tuple]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs and labels (-100 outside the answer, " answer" + end of sequence)."""
    tok = adapter.processor.tokenizer
    prompts = [adapter.prompt_for(it[1]) for it in items]
    return adapter.teacher_forced(
        [it[0] for it in items], prompts,
        [f"{p} {it[2]}{tok.eos_token}" for p, it in zip(prompts, items, strict=True)],
        [tok(" " + it[2], add_special_tokens=False).input_ids + [tok.eos_token_id]
         for it in items])


def answer_logits(adapter: Adapter, logits: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) at the answer tokens, flattened."""
    logits, labels = adapter.aligned(logits, labels)
    keep = labels != -100
    return logits[keep], labels[keep]
