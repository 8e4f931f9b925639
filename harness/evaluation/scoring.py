"""Answer normalization and caption scores, shared by the task YAMLs and the zoo check.

CIDEr-D and BLEU-4 come from pycocoevalcap's pure-Python scorers, fed lower-cased,
punctuation-free whitespace tokens (its PTB tokenizer would need Java)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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


def cider_resampled(preds: list[str], refs: list[str], weights) -> np.ndarray:
    """`cider` on each resample of the documents at once: `weights` (resamples x documents)
    holds how often each document is drawn. Each resample's CIDEr-D is recomputed as
    pycocoevalcap computes it on that resample's corpus (the reference document frequencies,
    and with them the idf weights, are those of the resample), one reference per image."""
    import numpy as np
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    gts, res = _inputs(preds, refs)
    scorer = CiderScorer(n=4, sigma=6.0)
    for i in gts:
        scorer += (res[i][0], gts[i])
    hyp, ref = scorer.ctest, [r[0] for r in scorer.crefs]
    w = np.asarray(weights, dtype=np.float64)
    n_docs = len(hyp)
    # n-grams of the references first: only their document frequencies vary by resample
    in_refs = list(dict.fromkeys(g for r in ref for g in r))
    vocab = {g: j for j, g in enumerate(dict.fromkeys([*in_refs, *(g for h in hyp
                                                                    for g in h)]))}
    th, tr = _counts(hyp, vocab, n_docs), _counts(ref, vocab, n_docs)
    order = np.zeros(len(vocab), dtype=int)
    for g, j in vocab.items():
        order[j] = len(g) - 1
    # the resample's document frequencies: a document drawn k times counts k times; an
    # n-gram in no reference has df 0, so pycocoevalcap's max(1, df) gives it idf log(N)
    k = len(in_refs)
    df = (tr[:, :k] > 0).T @ w.T  # reference n-grams x resamples
    idf2 = (np.log(float(n_docs)) - np.log(np.maximum(1.0, df))) ** 2
    # pycocoevalcap's length is its bigram count; the penalty does not depend on the idf
    bigrams = order == 1
    penalty = np.exp(-((th[:, bigrams].sum(1).A1 - tr[:, bigrams].sum(1).A1) ** 2)
                     / (2 * 6.0**2))
    score = np.zeros((n_docs, w.shape[0]))
    for n in range(4):
        cols = np.flatnonzero(order[:k] == n)  # this order's reference n-grams
        h, r, g = th[:, cols], tr[:, cols], idf2[cols]
        only = np.flatnonzero(order[k:] == n) + k  # and those only hypotheses hold
        rest = th[:, only].multiply(th[:, only]).sum(1).A1 * np.log(float(n_docs)) ** 2
        dot = h.minimum(r).multiply(r) @ g
        nh = np.sqrt(h.multiply(h) @ g + rest[:, None])
        nr = np.sqrt(r.multiply(r) @ g)
        both = (nh != 0) & (nr != 0)
        score += np.where(both, dot / np.where(both, nh * nr, 1.0), dot)
    per_doc = score / 4 * penalty[:, None] * 10.0  # documents x resamples
    return (w * per_doc.T).sum(1) / n_docs


def _counts(grams: list[dict], vocab: dict, rows: int):
    """A sparse documents x n-grams matrix of counts."""
    from scipy.sparse import csr_matrix

    data, r, c = [], [], []
    for i, d in enumerate(grams):
        for g, n in d.items():
            data.append(float(n))
            r.append(i)
            c.append(vocab[g])
    return csr_matrix((data, (r, c)), shape=(rows, len(vocab)))


def bleu4_resampled(preds: list[str], refs: list[str], weights) -> np.ndarray:
    """`bleu4` on each resample of the documents at once (`weights` as in
    `cider_resampled`): corpus BLEU-4 from the resample's summed n-gram counts and lengths,
    with pycocoevalcap's smoothing constants and its closest-reference brevity penalty."""
    import numpy as np
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    gts, res = _inputs(preds, refs)
    scorer = BleuScorer(n=4)
    for i in gts:
        scorer += (res[i][0], gts[i])
    stats = np.array([[*c["guess"], *c["correct"], c["testlen"],
                       scorer._single_reflen(c["reflen"], "closest", c["testlen"])]
                      for c in scorer.ctest], dtype=np.float64)
    total = np.asarray(weights, dtype=np.float64) @ stats  # resamples x 10
    tiny, small = 1e-15, 1e-9
    bleu = np.prod([(total[:, 4 + k] + tiny) / (total[:, k] + small) for k in range(4)], 0)
    bleu = bleu ** 0.25
    ratio = (total[:, 8] + tiny) / (total[:, 9] + small)
    return np.where(ratio < 1, bleu * np.exp(1 - 1 / np.minimum(ratio, 1.0)), bleu)
