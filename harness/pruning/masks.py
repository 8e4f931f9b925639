"""Mask math shared by every pruning method: pure tensor functions, no model code.

A mask is a bool tensor shaped like the weight, True where the weight is KEPT.
Scores are "importance": the lowest-scoring entries are pruned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.pruning.types import Scope, Target  # noqa: F401 - re-exported

if TYPE_CHECKING:  # torch is imported by the functions that run, not by a grid file
    import torch


def unstructured(scores: torch.Tensor, sparsity: float, scope: Scope = "layer") -> torch.Tensor:
    """Keep mask pruning the lowest `sparsity` share of scores.

    scope="row": exactly floor(cols * sparsity) zeros in every output row (Wanda's default);
    scope="layer": exactly floor(numel * sparsity) zeros over the whole matrix.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    per = scores.shape[1] if scope == "row" else scores.numel()
    return lowest(scores, int(per * sparsity), scope)


def lowest(scores: torch.Tensor, k: int, scope: Scope = "row") -> torch.Tensor:
    """Keep mask pruning exactly k entries: the k lowest of each row, or of the matrix."""
    import torch
    flat = scores.reshape(1, -1) if scope == "layer" else scores.reshape(scores.shape[0], -1)
    if not k:
        return torch.ones_like(scores, dtype=torch.bool)
    if flat.device.type == "cpu" and k < flat.shape[1]:
        # numpy's introselect finds each row's k-th smallest value several times faster than
        # torch.topk at these widths; everything above it is kept. A tie at that value would
        # prune more than k, so such rows are settled by indices instead.
        values = flat.detach().float()
        kth = torch.from_numpy(_kth_smallest(values.numpy(), k))
        keep = values > kth
        if ((keep.shape[1] - keep.sum(1)) == k).all():
            return keep.reshape(scores.shape)
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask.scatter_(1, _smallest(flat, k), False)
    return mask.reshape(scores.shape)


def _kth_smallest(values: np.ndarray, k: int, chunk: int = 1 << 20) -> np.ndarray:
    """Each row's k-th smallest value, (rows, 1). np.partition works on a copy, so rows go
    through in chunks of about `chunk` values: the copy stays small for large layers."""
    step = max(1, chunk // values.shape[1])
    return np.concatenate([np.partition(values[i:i + step], k - 1, axis=1)[:, k - 1:k]
                           for i in range(0, values.shape[0], step)])


def _smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest entries of each row, (rows, k), in no particular order."""
    import torch
    if flat.device.type != "cpu" or k >= flat.shape[1]:
        return torch.topk(flat, k, dim=1, largest=False).indices
    values = flat.detach().float().numpy()
    return torch.from_numpy(np.argpartition(values, k - 1, axis=1)[:, :k])


def n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask with n zeros in every group of m consecutive input columns of each row."""
    import torch
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M with M={m} needs the input width ({cols}) divisible by M")
    groups = scores.reshape(rows, cols // m, m)  # (rows, groups, m)
    idx = torch.topk(groups, n, dim=-1, largest=False).indices
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(-1, idx, False)
    return mask.reshape(rows, cols)


def select(scores: torch.Tensor, target: Target) -> torch.Tensor:
    """The keep mask a target asks for, from importance scores."""
    if target.structured:
        return n_of_m(scores, target.n, target.m)
    return unstructured(scores, target.sparsity, target.scope)


def nm_valid(weight: torch.Tensor, n: int, m: int) -> bool:
    """Every group of m consecutive input columns of every row holds at least n zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight == 0).reshape(rows, cols // m, m).sum(-1) >= n).all())
