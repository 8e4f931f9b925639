"""`vlmprune cache verify [--repair]`: check every stage in results/cache against its manifest.

Prints one row per stage that is not good (damaged or orphaned) and a count per status, by
stage. Exit code 1 when something is damaged and `--repair` was not given. `--repair` sets
damaged and orphaned folders aside under results/cache/damaged/ (renamed, not deleted) and
removes the temporary folders killed runs left; the next sweep recomputes what it needs.
"""

from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from harness.paths import cache_dir
from harness.sweep import cache

console = Console(width=140)


def main(repair: bool = False) -> int:
    entries = cache.scan()
    bad = [e for e in entries if e.status != "good"]
    if bad:
        t = Table(title=f"{cache_dir()}: stages that are not whole")
        for col in ("stage", "key", "status", "detail", "action"):
            t.add_column(col)
        for e in bad:
            t.add_row(e.stage, e.key, e.status, e.detail, _repair(e) if repair else "-")
        console.print(t)
    counts = Table(title=f"{cache_dir()}: {len(entries)} stage folders")
    for col in ("stage", "good", "damaged", "orphaned", "MB"):
        counts.add_column(col, justify="right" if col != "stage" else "left")
    for stage in cache.STAGES:
        mine = [e for e in entries if e.stage == stage]
        counts.add_row(stage, *(str(sum(e.status == s for e in mine))
                                for s in ("good", "damaged", "orphaned")),
                       f"{sum(e.bytes for e in mine) / 1e6:.1f}")
    console.print(counts)
    aside = cache.set_aside_count()
    if aside:
        console.print(f"{aside} folders set aside earlier under {cache_dir(cache.DAMAGED)} "
                      "(safe to delete once looked at)")
    damaged = any(e.status == "damaged" for e in bad)
    if damaged and not repair:
        console.print("damaged stages are never served (a sweep sets them aside and recomputes); "
                      "`vlmprune cache verify --repair` sets them aside now")
        return 1
    return 0


def _repair(e: cache.Entry) -> str:
    if e.key.startswith(".tmp-"):
        shutil.rmtree(cache.path(e.stage, e.key), ignore_errors=True)
        return "removed"
    dst = cache.set_aside(e.stage, e.key, e.detail)
    return f"set aside: {dst}" if dst else "gone already"
