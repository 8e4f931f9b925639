"""Layer-wise sparsity allocation: how much of a budget each block takes. Pure math on
per-block numbers; collecting those numbers from a model is `allocate.py`'s job.

- OWL (Yin et al., ICML 2024, arXiv 2310.05175; code luuyin/OWL `prune_wanda_outlier`):
  a block's outlier share is the fraction of its Wanda scores |W_ij|·‖X_j‖ above M times their
  mean (all the block's Linears together). Shares are scaled to [0, 2λ], shifted so that
  their mean is the keep ratio 1 - s, and a block's sparsity is one minus that: more
  outliers, less pruning. The reference takes a plain mean over equally sized LLaMA blocks;
  a VLM's blocks differ in size (a ViT block and an LM block), so here the mean is weighted
  by each block's weights, which keeps the parameter-weighted sparsity at exactly s.
- ECoFLaP (Sung et al., ICLR 2024, arXiv 2310.02998; code ylsung/ECoFLaP
  `compute_the_sparsity_per_group`): a block's score is its mean importance, |W|·|g| with g
  the zeroth-order estimate of the loss gradient; every block keeps at least (1 - max) of
  its weights, and the rest of the kept budget is handed out in proportion to the scores
  (blocks that fill up drop out), so the total kept is exactly (1 - s) of all weights.
```yaml
prune: {method: wanda, sparsity: 0.6, distribution: owl, owl: {threshold_m: 5, lam: 0.08}}
prune: {method: wanda, sparsity: 0.6, distribution: ecoflap, ecoflap: {max_sparsity: 0.8}}
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def outlier_share(scores: Sequence, m: float) -> float:
    """The fraction of entries above m times the mean of all of them (one block's Wanda
    scores, every Linear's flattened and concatenated), as OWL's `check_outlier_mean`."""
    import torch

    flat = torch.cat([s.flatten().float() for s in scores])
    return float((flat > flat.mean() * m).sum()) / flat.numel()


def owl(shares: Sequence[float], sizes: Sequence[int], sparsity: float,
        lam: float) -> list[float]:
    """Per-block sparsity from outlier shares (OWL), parameter-weighted mean `sparsity`."""
    r = np.asarray(shares, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    span = r.max() - r.min()
    keep = (r - r.min()) / span * (2 * lam) if span > 0 else np.zeros_like(r)
    keep = keep - np.average(keep, weights=w) + (1 - sparsity)
    return [float(1 - k) for k in keep]


def exact(x: float | Fraction) -> Fraction:
    """A sparsity as an exact fraction: a float by its shortest decimal form (0.7 is 7/10,
    as written in the spec), so that counts such as ceil(10240·(1 - 0.7)) come out 3072, not
    the 3073 of floating point."""
    return x if isinstance(x, Fraction) else Fraction(str(x))


def ecoflap(scores: Sequence[float], sizes: Sequence[int], sparsity: float | Fraction,
            max_sparsity: float) -> list[float]:
    """Per-block sparsity from block scores (ECoFLaP's `compute_the_sparsity_per_group`):
    exactly floor((1 - sparsity) * total) weights kept, every block at least
    ceil((1 - max_sparsity) * size) (both counted exactly, see `exact`)."""
    score = np.asarray(scores, dtype=np.float64).copy()
    n = np.asarray(sizes, dtype=np.int64)
    total_keep = math.floor(int(n.sum()) * (1 - exact(sparsity)))
    least = [math.ceil(int(size) * (1 - exact(max_sparsity))) for size in n]
    keep = np.asarray(least, dtype=np.int64)  # the floor every block keeps
    for _ in range(10 * len(n) + 10):
        rest = total_keep - keep.sum()
        if rest <= 0 or score.sum() <= 0:
            break
        add = np.ceil(score / score.sum() * rest).astype(np.int64)
        keep = np.minimum(keep + add, n)
        score[keep >= n] = 0  # full blocks take no more
    over = keep.sum() - total_keep  # ceilings overshoot: take back from the largest keepers
    for i in np.argsort(-keep, kind="stable"):
        if over <= 0:
            break
        spare = keep[i] - least[i]
        take = min(over, max(0, spare))
        keep[i] -= take
        over -= take
    short = total_keep - keep.sum()  # scores of zero left some budget: spread it in order
    for i in range(len(n)):
        if short <= 0:
            break
        give = min(short, n[i] - keep[i])
        keep[i] += give
        short -= give
    return [float(min(max(1 - k / size, 0.0), 1.0)) for k, size in zip(keep, n, strict=True)]
