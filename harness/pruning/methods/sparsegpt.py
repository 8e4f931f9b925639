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
INNER = 32
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
                block: int = BLOCK, damp: float = DAMP, inner: int = INNER,
                hinv: torch.Tensor | None = None) -> Pruned:
    """Works on Wᵀ (cols, rows) so that a column of W is a contiguous row. Masks are chosen
    per outer block of `block` columns; OBS updates are applied column by column inside an
    inner block of `inner` columns and pushed to the columns on the right by one GEMM per
    inner block (exact, as the reference's lazy batch updates)."""
    wt = weight.detach().float().T.contiguous()  # (cols, rows)
    cols, rows = wt.shape
    if hinv is None:  # upper Cholesky factor of the damped inverse, (cols, cols)
        hinv = inverse_hessian_factor(hessian.to(wt.device), damp)
    keep_t = torch.ones_like(wt, dtype=torch.bool)
    if target.structured:  # groups never straddle blocks
        inner = max(target.m, inner - inner % target.m)
        block = max(inner, block - block % inner)
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        d = torch.diag(hinv)[c0:c1]
        if not target.structured:
            scores = (wt[c0:c1] ** 2 / d.unsqueeze(1) ** 2).T  # (rows, width)
            keep_t[c0:c1] = lowest(scores, _block_count(c0, c1, rows, target), target.scope).T
        for i0 in range(c0, c1, inner):
            i1 = min(i0 + inner, c1)
            w1, h1 = wt[i0:i1], hinv[i0:i1, i0:i1]  # views: updated in place
            dh = torch.diag(h1).unsqueeze(1)  # (width, 1)
            scaled = (~keep_t[i0:i1]).float() / dh  # (width, rows); N:M fills it per group
            err = torch.empty_like(w1)
            for i in range(i1 - i0):
                if target.structured and i % target.m == 0:  # on the updated weights
                    g = slice(i, i + target.m)
                    k = n_of_m((w1[g] ** 2 / dh[g] ** 2).T, target.n, target.m).T
                    keep_t[i0 + i:i0 + i + target.m] = k
                    scaled[g] = (~k).float() / dh[g]
                torch.mul(w1[i], scaled[i], out=err[i])  # error of pruning column i, (rows,)
                w1[i:].addr_(h1[i, i:], err[i], alpha=-1.0)  # OBS update inside the block
            wt[i1:].addmm_(hinv[i0:i1, i1:].T, err, alpha=-1.0)  # and to its right
    wt[~keep_t] = 0.0
    return Pruned(keep_t.T.contiguous(), wt.T.contiguous().to(weight.dtype))


@method("sparsegpt", needs="hessian")
def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    if "hinv" not in stats.memo:  # Linears reading one input (q, k, v) share H and H⁻¹
        stats.memo["hinv"] = inverse_hessian_factor(stats.hessian.to(weight.device))
    return reconstruct(weight, stats.hessian, target, hinv=stats.memo["hinv"])
