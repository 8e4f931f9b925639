"""Recovery training batches: (image, request, answer) triples as model inputs + labels.

The shapes train split by default (VQA and captions, deterministic in the step and seed), a
JSONL file of {"image": path relative to the file, "prompt": question or "" for a caption,
"answer": text}, an HF `datasets` folder (`save_to_disk`) with the same columns, `image`
holding images, or a hub dataset in the local HF cache (`hf:REPO[:CONFIG]`: captions, or
LLaVA-Instruct conversations). Labels cover the answer and its end-of-sequence token only.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from harness import hub, jsonl, sources
from harness.errors import UserError
from harness.models.adapter import Adapter
from harness.recovery.spec import DataSpec


def samples(data: DataSpec, seed: int, start: int, n: int) -> list[tuple]:
    """Samples start .. start+n-1 of the training stream: (image, request, answer)."""
    if data.source == "shapes":
        return [sources.shapes_item(seed * 1_000_003 + i, caption=bool(
            np.random.default_rng([seed, i]).random() < data.caption_share))
            for i in range(start, start + n)]
    if hub.is_source(data.source):
        return _hub(data, seed, start, n)
    if Path(data.source).is_dir():
        ds = _dataset(data.source)
        order = sources.order(len(ds), seed)
        picked = [ds[int(order[i % len(ds)])] for i in range(start, start + n)]
        return [(r["image"].convert("RGB"), r.get("prompt") or "", r["answer"]) for r in picked]
    rows = sources.rows(data.source, jsonl.RECOVERY)
    order = sources.order(len(rows), seed)
    picked = [rows[order[i % len(rows)]] for i in range(start, start + n)]
    return [(sources.image(data.source, r), r.get("prompt", ""), r["answer"]) for r in picked]


FIELD = jsonl.RECOVERY[0]


def _hub(data: DataSpec, seed: int, start: int, n: int) -> list[tuple]:
    """Items of a hub dataset: a conversation's first request and answer, or a caption."""
    columns = {"images": data.image}
    columns["conversations" if data.conversations else "captions"] = \
        data.conversations or data.text
    table, where = sources.hub_rows(FIELD, data.source, data.split, columns)
    order = sources.order(len(table), seed)
    out = []
    for i in range(start, start + n):
        row = table[int(order[i % len(table)])]
        image = sources.hub_image(row[data.image], where, f"{FIELD} {data.source}")
        if data.conversations:
            out.append((image, *turn(row[data.conversations], data.source)))
        else:
            out.append((image, "", sources.hub_text(row[data.text])))
    return out


def turn(conversation, source: str) -> tuple[str, str]:
    """(request, answer) of a LLaVA-Instruct conversation: its first human turn without the
    `<image>` placeholder (the model's own prompt puts the image), its first gpt turn."""
    said: dict[str, str | None] = {"human": None, "gpt": None}
    for message in conversation or []:
        who = message.get("from") or message.get("role")
        who = {"user": "human", "assistant": "gpt"}.get(who, who)
        if who in said and said[who] is None:
            said[who] = str(message.get("value") or message.get("content") or "")
    if not said["human"] or not said["gpt"]:
        raise UserError(f"{FIELD}: {source}: a conversation without a human and a gpt turn "
                        f"({str(conversation)[:120]})")
    human, gpt = said["human"] or "", said["gpt"] or ""
    return " ".join(human.replace("<image>", " ").split()), gpt.strip()


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
