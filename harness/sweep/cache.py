"""The stage cache: results/cache/<stage>/<key>/, written atomically.

A stage writes into a hidden temporary sibling and renames it into place with a DONE marker
inside, so a folder that exists is complete: a kill mid-write leaves only a `.tmp-*` folder,
which is never read and is swept away by the next run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.paths import atomic_dir, cache_dir

MARKER = "DONE"


def path(stage: str, key: str) -> Path:
    return cache_dir(stage, key)


def done(stage: str, key: str) -> bool:
    return (path(stage, key) / MARKER).is_file()


@contextmanager
def writing(stage: str, key: str) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes the stage's folder, whole."""
    with atomic_dir(path(stage, key)) as tmp:  # --force or a concurrent writer: replaced
        yield tmp
        (tmp / MARKER).write_text("")


def drop(stage: str, key: str) -> None:
    shutil.rmtree(path(stage, key), ignore_errors=True)


def sweep_stale() -> int:
    """Remove temporary folders left by killed runs; returns how many."""
    root = cache_dir()
    n = 0
    if root.is_dir():
        for stage in root.iterdir():
            if stage.is_dir():
                for tmp in stage.glob(".tmp-*"):
                    shutil.rmtree(tmp, ignore_errors=True)
                    n += 1
    return n
