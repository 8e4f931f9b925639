"""Magnitude pruning (Han et al. 2015, arXiv 1506.02626): score = |W|.

Needs no calibration. Lifecycle: score -> mask (masks.select) -> apply.
```yaml
prune: {method: magnitude, sparsity: {vision: 0.5, language: 0.5}, pattern: unstructured}
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.pruning.masks import Target, select
from harness.pruning.types import Pruned

if TYPE_CHECKING:  # imported where the method runs
    import torch


def scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs()


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    return Pruned(select(scores(weight), target))
