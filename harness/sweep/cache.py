"""The stage cache: results/cache/<stage>/<key>/, written whole, served only whole.

A stage writes into a hidden temporary sibling and renames it into place with a DONE marker
inside, so a folder that exists is complete: a kill mid-write leaves only a `.tmp-*` folder,
which is never read and is swept away by the next run. The DONE marker is a manifest (the
size and SHA-256 of every file, `harness.integrity`), and `open()` checks it before a stage
is read: a folder damaged since (a file truncated, deleted or overwritten, even at the same
size) is set aside under results/cache/damaged/ (renamed, not deleted: a user may want to
look), with one warning naming the stage and the file, and the stage is computed again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import integrity
from harness.paths import atomic_dir, cache_dir

log = logging.getLogger(__name__)

MARKER = "DONE"
STAGES = ("prune", "recover", "eval")
DAMAGED = "damaged"
VERIFY = True  # the cache benchmark turns it off to measure what checking costs


def path(stage: str, key: str) -> Path:
    return cache_dir(stage, key)


def done(stage: str, key: str) -> bool:
    """The stage was written and its files have their recorded sizes (a stat each; `open`
    also checks their contents)."""
    root = path(stage, key)
    return integrity.sealed(root, MARKER) and integrity.check(root, MARKER, deep=False) is None


@contextmanager
def writing(stage: str, key: str) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes the stage's folder, whole and sealed."""
    with atomic_dir(path(stage, key)) as tmp:  # --force or a concurrent writer: replaced
        yield tmp
        integrity.seal(tmp, MARKER, stage=stage, key=key)


def open(stage: str, key: str) -> Path | None:  # noqa: A001 - the cache's open
    """The stage's folder if it was written and is whole; None if it must be computed (never
    written, or damaged: then it is set aside with a warning)."""
    root = path(stage, key)
    if not integrity.sealed(root, MARKER):
        return None
    problem = integrity.check(root, MARKER, deep=VERIFY)
    if problem is None:
        return root
    set_aside(stage, key, problem)
    return None


def set_aside(stage: str, key: str, problem: str) -> Path | None:
    """Move a damaged stage to results/cache/damaged/<stage>/<key>-<time> and warn once."""
    src = path(stage, key)
    dst = cache_dir(DAMAGED, stage, f"{key}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        return None  # another process set it aside (or recomputed it) first
    log.warning("cached %s stage %s is damaged (%s): set aside to %s, computing it again",
                stage, key, problem, dst)
    return dst


def drop(stage: str, key: str) -> None:
    shutil.rmtree(path(stage, key), ignore_errors=True)


def sweep_stale() -> int:
    """Remove temporary folders left by killed runs; returns how many."""
    n = 0
    for tmp in stale():
        shutil.rmtree(tmp, ignore_errors=True)
        n += 1
    return n


def stale() -> list[Path]:
    """Temporary folders of killed writers: in the stage folders and in the others (the
    materialized data), never read, safe to remove when no sweep is writing."""
    root = cache_dir()
    if not root.is_dir():
        return []
    return [tmp for sub in sorted(root.iterdir()) if sub.is_dir()
            for tmp in sorted(sub.glob(".tmp-*"))]


@dataclass
class Entry:
    stage: str
    key: str
    status: str  # good | damaged | orphaned
    detail: str
    bytes: int


def scan() -> list[Entry]:
    """Every folder of the stage cache, checked: good (whole), damaged (a file differs from
    its manifest, or no manifest), orphaned (never finished: no DONE marker, or a temporary
    folder a killed run left)."""
    out = []
    root = cache_dir()
    for stage in STAGES:
        if not (root / stage).is_dir():
            continue
        for folder in sorted((root / stage).iterdir()):
            if not folder.is_dir():
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            if folder.name.startswith(".tmp-"):
                out.append(Entry(stage, folder.name, "orphaned", "left by a killed run", size))
            elif not integrity.sealed(folder, MARKER):
                out.append(Entry(stage, folder.name, "orphaned", "never finished (no DONE)",
                                 size))
            else:
                problem = integrity.check(folder, MARKER)
                out.append(Entry(stage, folder.name, "damaged" if problem else "good",
                                 problem or "", size))
    return out


def set_aside_count() -> int:
    root = cache_dir(DAMAGED)
    return sum(1 for s in STAGES if (root / s).is_dir() for _ in (root / s).iterdir())
