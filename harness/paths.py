"""Where generated output goes: `results/` under the working directory unless
`VLMPRUNE_RESULTS` names another folder. Nothing under it is tracked by git."""

from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    return Path(os.environ.get("VLMPRUNE_RESULTS", "results"))


def cache_dir(*parts: str) -> Path:
    """results/cache/<parts>: stage outputs, materialized data, response caches."""
    return results_dir().joinpath("cache", *parts)
