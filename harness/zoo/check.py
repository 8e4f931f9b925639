"""Measure shapes-llava: dense accuracy on the test split and its sensitivity to pruning.

`make zoo-check` (or `vlmprune zoo-check`) prints the figures the foundation issue asks for:
VQA exact match overall and per question type (greedy generation), caption object-set exact
match and CIDEr, and the VQA drop under 30/50/70% unstructured magnitude pruning of every
Linear in the vision and language blocks.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from harness.evaluation.scoring import cider, normalize
from harness.models.adapter import Adapter
from harness.models.load import load
from harness.pruning import engine
from harness.pruning.masks import Target
from harness.pruning.report import zero_share
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample
from harness.world.text import QUESTION_TYPES, described_objects, scene_objects

log = logging.getLogger(__name__)


def vqa_accuracy(adapter: Adapter, n: int = 1000, split: str = "test",
                 batch_size: int = 64) -> dict[str, float]:
    """Exact match of the greedy answer, overall and per question type."""
    samples = [vqa_sample(split, i) for i in range(n)]
    preds = adapter.generate([render(s.scene) for s in samples],
                             [adapter.prompts.question(s.qa.question) for s in samples],
                             max_new_tokens=4, batch_size=batch_size)
    hits: dict[str, list[bool]] = defaultdict(list)
    for s, p in zip(samples, preds, strict=True):
        hits[s.qa.qtype].append(normalize(p) == s.qa.answer)
    out = {t: sum(hits[t]) / len(hits[t]) for t in QUESTION_TYPES if hits[t]}
    out["overall"] = sum(sum(h) for h in hits.values()) / n
    return out


def caption_scores(adapter: Adapter, n: int = 300, split: str = "test",
                   batch_size: int = 64) -> dict[str, float]:
    """Object-set exact match and CIDEr-D (pycocoevalcap's scorer, single reference)."""
    items = [caption_sample(split, i) for i in range(n)]
    preds = adapter.generate([render(scene) for scene, _ in items],
                             [adapter.prompts.caption] * n, max_new_tokens=32,
                             batch_size=batch_size)
    match = sum(described_objects(p) == scene_objects(scene)
                for p, (scene, _) in zip(preds, items, strict=True)) / n
    return {"set_match": match, "cider": cider(preds, [ref for _, ref in items])}


def prune_magnitude(adapter: Adapter, levels: dict[str, float]) -> float:
    """Unstructured magnitude pruning, per layer, of every Linear of each role's blocks at
    that role's level; returns the sparsity achieved over all of them."""
    targets = {role: Target(level, "layer") for role, level in levels.items() if level > 0}
    engine.prune(adapter, targets, "magnitude", progress=False)
    linears: dict = {}
    for role in levels:
        linears |= adapter.role_linears(role)
    return zero_share(linears)


def run(model: str = "shapes-llava", n_vqa: int = 1000, n_caption: int = 300,
        levels: tuple[float, ...] = (0.3, 0.5, 0.7)) -> dict:
    dense = load(model)
    report: dict = {"model": model, "vqa": vqa_accuracy(dense, n_vqa),
              "caption": caption_scores(dense, n_caption), "pruned": {}}
    base = report["vqa"]["overall"]
    for level in levels:
        pruned = load(model)
        achieved = prune_magnitude(pruned, {"vision": level, "language": level})
        acc = vqa_accuracy(pruned, n_vqa)
        report["pruned"][f"{level:.2f}"] = {"sparsity": achieved, "vqa": acc,
                                            "drop_points": 100 * (base - acc["overall"])}
    return report


def format_report(r: dict) -> str:
    lines = [f"shapes-llava on the test split ({r['model']})",
             "VQA exact match: " + "  ".join(f"{k} {v:.3f}" for k, v in r["vqa"].items()),
             f"captions: object-set match {r['caption']['set_match']:.3f}  "
             f"CIDEr {r['caption']['cider']:.3f}",
             "magnitude pruning of vision+language blocks (unstructured, per layer):"]
    for level, p in r["pruned"].items():
        lines.append(f"  {float(level):.0%}: sparsity {p['sparsity']:.3f}  VQA "
                     f"{p['vqa']['overall']:.3f}  drop {p['drop_points']:.1f} points")
    return "\n".join(lines)


def main(model: str = "shapes-llava", out: Path | None = None) -> dict:
    report = run(model)
    print(format_report(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report
