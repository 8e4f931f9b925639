"""Random pruning, seeded: the floor every method must beat. Score = uniform noise.

```yaml
prune: {method: random, sparsity: {language: 0.5}, seed: 0}
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.pruning.masks import Target, select
from harness.pruning.types import Pruned

if TYPE_CHECKING:  # imported where the method runs
    import torch


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    import torch
    g = torch.Generator().manual_seed(seed)
    return Pruned(select(torch.rand(weight.shape, generator=g), target))
