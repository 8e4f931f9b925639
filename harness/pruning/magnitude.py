"""Magnitude pruning (Han et al. 2015, arXiv 1506.02626): score = |W|.

Lifecycle: score -> mask (masks.unstructured / masks.n_of_m) -> apply. Needs no calibration.
"""

from __future__ import annotations

import torch


def scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs()
