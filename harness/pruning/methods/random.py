"""Random pruning, seeded: the floor every method must beat. Score = uniform noise.

```yaml
prune: {method: random, sparsity: {language: 0.5}, seed: 0}
```
"""

from __future__ import annotations

import torch

from harness.pruning.masks import Target, select
from harness.pruning.registry import method
from harness.pruning.types import Pruned


@method("random", seeded=True)
def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    g = torch.Generator().manual_seed(seed)
    return Pruned(select(torch.rand(weight.shape, generator=g), target))
