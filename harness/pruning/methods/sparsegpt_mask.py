"""SparseGPT's mask without its weight update: the probe that splits SparseGPT's lead over
Wanda into what its mask choice gives and what its reconstruction of the kept weights gives
(docs/REPRODUCTION.md, finding 3).

Each Linear gets exactly the mask SparseGPT chooses from the same statistics (columns in
blocks of 128, w² / [H⁻¹]_jj² on the weights as SparseGPT's own updates leave them), and
keeps its original weights where the mask keeps them.
```yaml
prune: {method: sparsegpt-mask, sparsity: {vision: 0.5, language: 0.5}}
```
The Linears after it calibrate on its outputs, as they do after any method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.pruning.masks import Target
from harness.pruning.methods import sparsegpt
from harness.pruning.types import Pruned

if TYPE_CHECKING:  # imported where the method runs
    import torch


def prune(weight: torch.Tensor, stats, target: Target, seed: int = 0) -> Pruned:
    return Pruned(sparsegpt.prune(weight, stats, target, seed).mask)
