"""Apply keep masks to a model's Linears (what was achieved is measured in report.py)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def apply_mask(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.mul_(keep.to(linear.weight.device, linear.weight.dtype))


@torch.no_grad()
def apply_masks(linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor],
                rewritten: dict[str, torch.Tensor] | None = None) -> None:
    """Prune the Linears named in `masks`; those a method rewrote (SparseGPT) take their
    stored weights as well."""
    rewritten = rewritten or {}
    for path, keep in masks.items():
        apply_mask(linears[path], keep)
        if path in rewritten:
            linears[path].weight.copy_(rewritten[path])
