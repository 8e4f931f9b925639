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

import contextlib
from typing import TYPE_CHECKING

from harness import threads
from harness.pruning.masks import Target, lowest, n_of_m
from harness.pruning.types import Pruned, no_grad

if TYPE_CHECKING:  # imported where the method runs
    import torch

BLOCK = 128
INNER = 16  # unstructured: one batched triangular solve per inner block
INNER_NM = 32  # N:M: column by column
DAMP = 0.01


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = DAMP,
                           tokens: int | None = None, consume: bool = False) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = damp · mean(diag H); dead columns get 1.

    `hessian` may be the raw XᵀX with `tokens` to divide it by; with `consume` (an fp32
    tensor nobody reads again) it is worked on in place. Then one (cols, cols) copy beside it
    is all that is ever alive (the widest input's is 256 MiB in fp32 at 8192 columns), so a
    block of a model larger than memory prunes within the estimate."""
    import torch
    # With J the reversal permutation and J H J = L Lᵀ, U = J L⁻¹ J is upper triangular with
    # Uᵀ U = H⁻¹: the upper Cholesky factor of H⁻¹ from one factorization and one triangular
    # inverse, instead of factor, invert, factor again. Flips, the division and the damping
    # move or change single entries (the mean reads the diagonal in H's order), and both
    # LAPACK calls work in column-major storage as torch's own outputs do: the numbers are
    # those of the plain out-of-place expressions, bit for bit.
    h = hessian.float()
    if not consume and h is hessian:
        h = h.clone()
    _flip_(h)
    if tokens is not None:
        h.div_(tokens)
    diag = h.diagonal()
    diag[diag == 0] = 1.0
    diag.add_(damp * torch.mean(diag.flip(0)))
    lower = h.t()  # H is symmetric: the same matrix, column-major
    info = torch.empty((), dtype=torch.int32, device=h.device)
    # On the CPU, LAPACK's blocking follows the thread count and so do the last bits of the
    # factor (harness/threads.py): one thread, so that a cell's masks do not depend on the
    # machine's cores. It costs time on many cores (4096 columns here: 5.6 s on one thread,
    # 3.3 s on two, beside 6.5 s to reconstruct one 4096 × 4096 weight; decision 013).
    with threads.one() if h.device.type == "cpu" else contextlib.nullcontext():
        torch.linalg.cholesky_ex(lower, out=(lower, info))
        if info.item() > 0:  # as torch.linalg.cholesky would say it
            raise torch.linalg.LinAlgError(
                "linalg.cholesky: The factorization could not be completed because the input "
                f"is not positive-definite (the leading minor of order {info.item()} is not "
                "positive-definite).")
        del h, diag
        out = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device).t()
        torch.linalg.solve_triangular(lower, out, upper=False, out=out)
    return _flip_(out)


def _flip_(h: torch.Tensor) -> torch.Tensor:
    """h.flip(0, 1) in place (rows swapped in pairs, each reversed): no second copy."""
    n = h.shape[0]
    for i in range(n // 2):
        top = h[i].flip(0)
        h[i] = h[n - 1 - i].flip(0)
        h[n - 1 - i] = top
    if n % 2:
        h[n // 2] = h[n // 2].flip(0)
    return h


def _block_count(c0: int, c1: int, rows: int, target: Target) -> int:
    s = target.sparsity
    if target.scope == "layer":
        return int(rows * c1 * s) - int(rows * c0 * s)
    return int(c1 * s) - int(c0 * s)


@no_grad
def reconstruct(weight: torch.Tensor, hessian: torch.Tensor | None, target: Target,
                block: int = BLOCK, damp: float = DAMP, inner: int | None = None,
                hinv: torch.Tensor | None = None) -> Pruned:
    """Works on Wᵀ (cols, rows) so that a column of W is a contiguous row. Masks are chosen
    per outer block of `block` columns; inside it, inner blocks of `inner` columns get their
    OBS errors (exactly what the column-by-column updates produce), then one GEMM pushes them
    onto the columns to the right (the reference's lazy batch updates)."""
    import torch
    # (cols, rows) in fp32, made in one copy (not a cast and then a transposed copy)
    wt = torch.empty(weight.shape[::-1], dtype=torch.float32, device=weight.device)
    wt.copy_(weight.detach().T)
    cols, rows = wt.shape
    if hinv is None:  # upper Cholesky factor of the damped inverse, (cols, cols)
        if hessian is None:
            raise ValueError("reconstruct needs the Hessian or its inverse factor")
        hinv = inverse_hessian_factor(hessian.to(wt.device), damp)
    keep_t = torch.ones_like(wt, dtype=torch.bool)
    if inner is None:
        inner = INNER_NM if target.structured else INNER
    if target.structured:  # groups never straddle blocks
        inner = max(target.m, inner - inner % target.m)
        block = max(inner, block - block % inner)
    if target.structured:
        for c0 in range(0, cols, block):
            for i0 in range(c0, min(c0 + block, cols), inner):
                i1 = min(i0 + inner, c0 + block, cols)
                err = _columns_nm(wt[i0:i1], hinv[i0:i1, i0:i1], keep_t[i0:i1], target)
                wt[i1:].addmm_(hinv[i0:i1, i1:].T, err, alpha=-1.0)  # push to the right
    else:
        _unstructured(wt, hinv, keep_t, target, block, inner)
    wt[~keep_t] = 0.0
    keep = keep_t.T.contiguous()
    del keep_t
    out = wt.T.to(weight.dtype, memory_format=torch.contiguous_format)  # one copy, cast
    return Pruned(keep, out if out.is_contiguous() else out.contiguous())  # fp32: no cast


def _unstructured(wt: torch.Tensor, hinv: torch.Tensor, keep_t: torch.Tensor, target: Target,
                  block: int, inner: int) -> None:
    """Masks per outer block from w² / [H⁻¹]_jj², then OBS errors per inner block with one
    batched triangular solve over rows (updates wt and keep_t in place).

    Column by column, err_i = [i pruned] · (w_i − Σ_{j<i} U[j, i] err_j) / U[i, i] with U the
    factor `hinv`: for each row, the pruned positions P of the inner block solve a unit
    lower-triangular system A err = w / d with A[i, j] = [i ∈ P] · U[j, i] / U[i, i] (j < i).
    So one solve does what `inner` sequential rank-1 updates did, and one GEMM then applies
    the block's errors to its own columns and to every column on its right."""
    import torch
    cols, rows = wt.shape
    d = torch.diag(hinv)
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        scores = (wt[c0:c1] ** 2 / d[c0:c1].unsqueeze(1) ** 2).T  # (rows, width)
        keep_t[c0:c1] = lowest(scores, _block_count(c0, c1, rows, target), target.scope).T
        pruned = (~keep_t[c0:c1]).float()  # (width, rows)
        scale = pruned / d[c0:c1].unsqueeze(1)
        pruned_t = pruned.T  # (rows, width)
        for i0 in range(c0, c1, inner):
            i1 = min(i0 + inner, c1)
            s = slice(i0 - c0, i1 - c0)
            # g[j, i] = U[j, i] / U[i, i] for j < i: Aᵀ before masking, on the diagonal block
            # only (all the solve reads; a (cols, cols) g would be two more copies of H)
            g = (hinv[i0:i1, i0:i1] / d[i0:i1]).triu(1)
            a_t = pruned_t[:, s].unsqueeze(1) * g  # (rows, w, w): A per row, ᵀ
            rhs = (wt[i0:i1] * scale[s]).T.unsqueeze(2)  # (rows, w, 1)
            err = torch.linalg.solve_triangular(a_t.mT, rhs, upper=False, unitriangular=True)
            wt[i0:].addmm_(hinv[i0:i1, i0:].T, err.squeeze(2).T, alpha=-1.0)


def _columns_nm(w1: torch.Tensor, h1: torch.Tensor, keep_t: torch.Tensor,
                target: Target) -> torch.Tensor:
    """OBS errors of one inner block, column by column, choosing each group's N:M mask on the
    weights as updated so far (the paper's order). Updates w1 and keep_t in place."""
    import torch
    dh = torch.diag(h1).unsqueeze(1)  # (width, 1)
    scaled = torch.empty_like(w1)
    err = torch.empty_like(w1)
    for i in range(w1.shape[0]):
        if i % target.m == 0:  # on the updated weights
            g = slice(i, i + target.m)
            k = n_of_m((w1[g] ** 2 / dh[g] ** 2).T, target.n, target.m).T
            keep_t[g] = k
            scaled[g] = (~k).float() / dh[g]
        torch.mul(w1[i], scaled[i], out=err[i])  # error of pruning column i, (rows,)
        w1[i:].addr_(h1[i, i:], err[i], alpha=-1.0)  # OBS update inside the block
    return err


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    if "hinv" not in stats.memo:  # Linears reading one input (q, k, v) share H and H⁻¹
        if stats.gram is None:
            raise ValueError("sparsegpt needs hessian statistics")
        # consumed: H⁻¹'s factor is all the readers of this input need
        gram, stats.gram = stats.gram.to(weight.device), None
        stats.memo["hinv"] = inverse_hessian_factor(gram, tokens=max(stats.tokens, 1),
                                                    consume=True)
        del gram
    return reconstruct(weight, None, target, hinv=stats.memo["hinv"])
