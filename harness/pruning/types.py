"""Small shared types of the pruning engine (no torch at import: a grid's prune specs are
validated before any model code loads)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Scope = Literal["row", "layer"]
# how calibration data flows while pruning: one module each in pipelines/ (a test checks)
Propagation = Literal["sequential", "blockwise", "dense"]


@dataclass(frozen=True)
class Target:
    """What a layer must end up as: unstructured at `sparsity` (per row or per layer), or N:M
    (n zeros in every m consecutive input columns) when m > 0."""

    sparsity: float
    scope: Scope = "row"
    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0


@dataclass
class Pruned:
    """A method's answer for one layer: the keep mask, and a reconstructed weight if the
    method updates the kept weights (SparseGPT); None keeps the original values."""

    mask: torch.Tensor  # bool (out, in), True = kept
    weight: torch.Tensor | None = None


def no_grad(fn: Callable) -> Callable:
    """`torch.no_grad()` as a decorator that imports torch when the function runs."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return run
