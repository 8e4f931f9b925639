"""Answer normalization and caption scores, shared by the task YAMLs and the zoo check.

CIDEr-D and BLEU-4 come from pycocoevalcap's pure-Python scorers, fed lower-cased,
punctuation-free whitespace tokens (its PTB tokenizer would need Java)."""

from __future__ import annotations

import re


def normalize(answer: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", answer.lower())).strip()


def _inputs(preds: list[str], refs: list[str]):
    gts = {i: [normalize(r)] for i, r in enumerate(refs)}
    res = {i: [normalize(p) or "empty"] for i, p in enumerate(preds)}
    return gts, res


def cider(preds: list[str], refs: list[str]) -> float:
    """Corpus CIDEr-D with one reference per image (pycocoevalcap)."""
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(*_inputs(preds, refs))
    return float(score)


def bleu4(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU-4 (pycocoevalcap)."""
    from pycocoevalcap.bleu.bleu import Bleu

    scores, _ = Bleu(4).compute_score(*_inputs(preds, refs), verbose=0)
    return float(scores[3])
