"""Where the shapes tasks read their test split: materialized once (PNG + JSONL, atomic,
sealed) under results/cache/data. Light to import (no lmms-eval, no datasets), so a sweep
that dispatches cells to workers writes it once before they start, instead of each worker
writing its own copy at the same time."""

from __future__ import annotations

from pathlib import Path

from harness.paths import cache_dir
from harness.world.splits import materialize

SPLIT = "test"
N_VQA = 1000
N_CAPTION = 500


def data_dir() -> Path:
    """The materialized test split (created on first use; atomic)."""
    return materialize(SPLIT, cache_dir("data", f"shapes-{SPLIT}-{N_VQA}-{N_CAPTION}"),
                       N_VQA, N_CAPTION)
