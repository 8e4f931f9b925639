"""Small shared types of the pruning engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Pruned:
    """A method's answer for one layer: the keep mask, and a reconstructed weight if the
    method updates the kept weights (SparseGPT); None keeps the original values."""

    mask: torch.Tensor  # bool (out, in), True = kept
    weight: torch.Tensor | None = None
