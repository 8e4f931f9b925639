"""Apply keep masks to a model's Linears and measure what was achieved."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def apply_mask(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.mul_(keep.to(linear.weight.dtype))


def sparsity(linears: dict[str, nn.Linear]) -> float:
    """Share of exactly-zero weights over the given Linears."""
    total = sum(lin.weight.numel() for lin in linears.values())
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears.values())
    return zeros / total if total else 0.0
