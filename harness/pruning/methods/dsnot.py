"""DSnoT (Zhang et al. 2023, arXiv 2310.08915): training-free refinement of a sparse mask.

Start from a Wanda (default) or magnitude mask. Per output row i the pruned weights shift the
row's expected output by Δ_i = Σ_{j pruned} W_ij·E[X_j]. Each cycle, in every row still above
the threshold, one pruned weight is regrown (the one with the largest W_ij·E[X_j] of Δ_i's
sign) and one kept weight is pruned (the least important by |W_ij|·‖X_j‖ among those whose
removal does not push Δ further the same way; inside the same N:M group for N:M targets).
A swap is kept only if it lowers |Δ_i|; sparsity never changes.
```yaml
prune: {method: dsnot, sparsity: {language: 0.6}, dsnot: {init: wanda, cycles: 50}}
```
Lifecycle: calibrate (per-column E[X_j], ‖X_j‖₂) -> initial mask -> swap cycles -> apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.pruning.masks import Target, select
from harness.pruning.methods import magnitude, wanda
from harness.pruning.types import Pruned, no_grad

if TYPE_CHECKING:  # imported where the method runs
    import torch

CYCLES = 50
THRESHOLD = 1e-4


class Options(BaseModel):
    """`prune.dsnot`: the initial mask's score, and how many swap cycles at most."""

    model_config = ConfigDict(extra="forbid")
    init: Literal["wanda", "magnitude"] = "wanda"
    cycles: int = Field(CYCLES, ge=1)


@no_grad
def refine(weight: torch.Tensor, keep: torch.Tensor, mean: torch.Tensor, norm: torch.Tensor,
           target: Target, cycles: int = CYCLES, threshold: float = THRESHOLD) -> torch.Tensor:
    import torch
    w = weight.float()
    keep = keep.clone()
    rows, cols = w.shape
    contrib = w * mean.reshape(1, -1).float()  # (rows, cols): W_ij · E[X_j]
    importance = w.abs() * norm.reshape(1, -1).float()
    delta = (contrib * ~keep).sum(1)  # (rows,)
    active = delta.abs() > threshold
    ar = torch.arange(rows, device=w.device)
    for _ in range(cycles):
        if not active.any():
            break
        sign = torch.sign(delta).unsqueeze(1)
        grow_score = torch.where(~keep & (torch.sign(contrib) == sign), contrib.abs(),
                                 torch.full_like(contrib, -1.0))
        g = grow_score.argmax(1)  # (rows,)
        can_grow = grow_score[ar, g] > 0
        after_grow = delta - contrib[ar, g]
        cand = keep & (torch.sign(contrib) != torch.sign(after_grow).unsqueeze(1))
        if target.structured:  # stay inside the regrown weight's group
            group = torch.arange(cols, device=w.device) // target.m
            cand &= group.unsqueeze(0) == (g // target.m).unsqueeze(1)
        prune_score = torch.where(cand, importance, torch.full_like(importance, float("inf")))
        p = prune_score.argmin(1)
        can_prune = torch.isfinite(prune_score[ar, p])
        new_delta = after_grow + contrib[ar, p]
        ok = active & can_grow & can_prune & (new_delta.abs() < delta.abs())
        if not ok.any():
            break
        r = ar[ok]
        keep[r, g[ok]] = True
        keep[r, p[ok]] = False
        delta = torch.where(ok, new_delta, delta)
        active = ok & (delta.abs() > threshold)
    return keep


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0,
          init: str = "wanda", cycles: int = CYCLES) -> Pruned:
    norm = stats.norm.to(weight.device)
    base = wanda.scores(weight, norm) if init == "wanda" else magnitude.scores(weight)
    keep = select(base, target)
    return Pruned(refine(weight, keep, stats.mean.to(weight.device), norm, target, cycles))
