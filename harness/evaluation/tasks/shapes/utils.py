"""Functions the shapes task YAMLs name (`!function utils.<name>`).

The YAMLs load a shipped manifest of sample ids with lmms-eval's `json` loader; `process_docs`
materializes the test split (PNG + JSONL, deterministic, once) into results/cache/data and
swaps each id for its record. Metrics are computed here in Python: exact match on normalized
answers (overall and per question type), object-set match, and CIDEr / BLEU-4 from
pycocoevalcap's pure-Python scorers on whitespace tokens (no Java tokenizer).
"""

from __future__ import annotations

import json

import datasets
from PIL import Image

from harness.evaluation.scoring import bleu4, cider, normalize
from harness.evaluation.shapes_data import N_CAPTION, N_VQA, SPLIT, data_dir  # noqa: F401
from harness.world.text import described_objects


def _records(name: str) -> dict[int, dict]:
    root = data_dir()
    out = {}
    with open(root / name) as f:
        for line in f:
            r = json.loads(line)
            r["image"] = str(root / r["image"])
            out[r["id"]] = r
    return out


def vqa_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    recs = _records("vqa.jsonl")
    return datasets.Dataset.from_list([recs[i] for i in dataset["id"]])


def caption_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    recs = _records("caption.jsonl")
    return datasets.Dataset.from_list([recs[i] for i in dataset["id"]])


def doc_to_visual(doc: dict) -> list[Image.Image]:
    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def vqa_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def caption_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Empty: the vlmprune model class then uses the model's own caption prompt."""
    kw = lmms_eval_specific_kwargs or {}
    return kw.get("prompt", "")


def vqa_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    hit = float(normalize(results[0]) == normalize(doc["answer"]))
    return {"exact_match": hit, f"{doc['type']}_exact_match": hit}


def caption_process_results(doc: dict, results: list[str]) -> dict:
    pred = results[0]
    pair = {"pred": pred, "ref": doc["caption"]}
    match = float(described_objects(pred) == described_objects(doc["caption"]))
    return {"object_match": match, "cider": pair, "bleu4": pair}


def cider_aggregation(items: list[dict]) -> float:
    return cider([i["pred"] for i in items], [i["ref"] for i in items])


def bleu4_aggregation(items: list[dict]) -> float:
    return bleu4([i["pred"] for i in items], [i["ref"] for i in items])

