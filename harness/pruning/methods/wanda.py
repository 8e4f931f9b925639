"""Wanda (Sun et al. 2023, arXiv 2306.11695): prune by weight magnitude times input norm.

score_ij = |W_ij| · ‖X_j‖₂, ranked per output row by default (scope: row).
```yaml
prune: {method: wanda, sparsity: {vision: 0.5, language: 0.5}, pattern: "2:4"}
```
Lifecycle: calibrate (per-column ‖X_j‖₂² of each Linear's inputs) -> score -> mask -> apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.pruning.masks import Target, select
from harness.pruning.types import Pruned

if TYPE_CHECKING:  # imported where the method runs
    import torch


def scores(weight: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """(out, in) importance from |W| and the per-input-column norm ‖X_j‖₂, shape (in,)."""
    return weight.abs().float() * act_norm.reshape(1, -1).float()


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    return Pruned(select(scores(weight, stats.norm.to(weight.device)), target))
