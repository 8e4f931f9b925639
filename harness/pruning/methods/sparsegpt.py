"""SparseGPT (Frantar & Alistarh 2023, arXiv 2301.00774): OBS pruning with reconstruction.

With H = XᵀX over calibration inputs (damped by 0.01 of its mean diagonal), columns are
processed left to right in blocks of 128: inside a block the mask is chosen by w² / [H⁻¹]_jj²
on the already-updated weights, and each pruned weight's error is pushed onto the columns not
yet processed, so the kept weights absorb what the pruned ones did.
```yaml
prune: {method: sparsegpt, sparsity: {vision: 0.5, language: 0.5}, pattern: unstructured}
```
Lifecycle: calibrate (XᵀX per Linear) -> per block: score -> mask -> update -> apply.

Exact counts: block b (columns c0..c1) prunes floor(c1·s) - floor(c0·s) entries per row
(scope row) or floor(rows·c1·s) - floor(rows·c0·s) in all (scope layer), so the whole row or
layer ends with exactly the target count, as with every other method.
"""

from __future__ import annotations

import torch

from harness.pruning.masks import Target, lowest, n_of_m
from harness.pruning.registry import method
from harness.pruning.types import Pruned

BLOCK = 128
DAMP = 0.01


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = damp · mean(diag H); dead columns get 1."""
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype,
                                                        device=h.device)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True)


def _block_count(c0: int, c1: int, rows: int, target: Target) -> int:
    s = target.sparsity
    if target.scope == "layer":
        return int(rows * c1 * s) - int(rows * c0 * s)
    return int(c1 * s) - int(c0 * s)


@torch.no_grad()
def reconstruct(weight: torch.Tensor, hessian: torch.Tensor, target: Target,
                block: int = BLOCK, damp: float = DAMP) -> Pruned:
    w = weight.detach().float().clone()  # (rows, cols)
    rows, cols = w.shape
    hinv = inverse_hessian_factor(hessian.to(w.device), damp)
    keep = torch.ones_like(w, dtype=torch.bool)
    if target.structured:
        block -= block % target.m  # groups never straddle blocks
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        w1, h1 = w[:, c0:c1].clone(), hinv[c0:c1, c0:c1]
        d = torch.diag(h1)  # (width,)
        err = torch.empty_like(w1)
        if not target.structured:
            keep[:, c0:c1] = lowest(w1**2 / d**2, _block_count(c0, c1, rows, target),
                                    target.scope)
        dropped = (~keep[:, c0:c1]).float()  # (rows, width); N:M fills it group by group
        for i in range(c1 - c0):
            if target.structured and i % target.m == 0:
                g = slice(i, i + target.m)
                k = n_of_m(w1[:, g] ** 2 / d[g] ** 2, target.n, target.m)
                keep[:, c0 + i:c0 + i + target.m] = k
                dropped[:, g] = (~k).float()
            e = w1[:, i] * dropped[:, i] / d[i]  # (rows,): error of pruning column i
            w1[:, i:].addr_(e, h1[i, i:], alpha=-1.0)  # OBS update of the columns left
            err[:, i] = e
        w[:, c0:c1] = w1
        w[:, c1:].addmm_(err, hinv[c0:c1, c1:], alpha=-1.0)
    w[~keep] = 0.0
    return Pruned(keep, w.to(weight.dtype))


@method("sparsegpt", needs="hessian")
def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    return reconstruct(weight, stats.hessian, target)
