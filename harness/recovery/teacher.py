"""The dense teacher for distillation, without a second copy of the model.

The pruned model's Linears hold zeros where their masks are 0. The teacher keeps only the
values pruning removed (one 1-D tensor per Linear: a `sparsity` share of its weights) and,
while active, writes them back, with the adapters off; leaving restores the zeros. For
magnitude, wanda, dsnot and random this is exactly the dense model; SparseGPT also rewrote
the kept weights, so its teacher has the kept weights as pruned (documented approximation).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class Teacher:
    def __init__(self, linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor],
                 dense: dict[str, torch.Tensor]) -> None:
        self.slots = []
        for path, lin in linears.items():
            if path not in masks:
                continue
            removed = ~masks[path].to(lin.weight.device, torch.bool)
            values = dense[path].to(lin.weight.device, lin.weight.dtype)[removed]
            self.slots.append((lin, removed, values))

    @contextmanager
    def active(self, peft_model: nn.Module):
        with torch.no_grad():
            for lin, removed, values in self.slots:
                lin.weight.data[removed] = values
        try:
            with peft_model.disable_adapter():
                yield
        finally:
            with torch.no_grad():
                for lin, removed, _ in self.slots:
                    lin.weight.data[removed] = 0
