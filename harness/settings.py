"""The settings a command runs with, in one object: where results and reports go, the user
cache, extra grid folders, the cell limit.

Read once from the environment (`VLMPRUNE_RESULTS`, `VLMPRUNE_REPORTS`,
`VLMPRUNE_CACHE_HOME`, `VLMPRUNE_EXPERIMENTS`, `VLMPRUNE_MAX_CELLS`) and the command's flags
(`--max-cells`) by `Settings.from_env`, and nowhere else. The CLI builds them once per
command and makes them `current()` for its duration only (`using`), so a flag never outlives
its command: two `main([...])` calls in one process do not see each other's flags. Without a
command (a library caller, a test, a worker) `current()` reads the environment afresh.

The environment is the channel from a sweep to its workers (another process, perhaps another
machine): `environ()` is what a worker needs to rebuild the same settings with `from_env`.
The thread count travels the same way but stays with its policy (threads.py:
`VLMPRUNE_THREADS`, `--threads`), as does the tests' fault hook (testing/faults.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    results: Path = Path("results")  # generated output: stores, the stage cache, logs
    reports: Path = Path("reports")  # reports (a grid's, a search's figures)
    cache_home: Path | None = None  # the user cache; None: $XDG_CACHE_HOME/vlmprune
    experiments: tuple[Path, ...] = ()  # folders searched for grids before the shipped ones
    # --max-cells, else VLMPRUNE_MAX_CELLS as written (checked where a grid is counted:
    # grid.max_cells), else None: the default limit
    max_cells: int | str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 max_cells: int | None = None) -> Settings:
        """The environment's settings, with the flags given (None: not given)."""
        env = os.environ if environ is None else environ
        return cls(results=Path(env.get("VLMPRUNE_RESULTS", "results")),
                   reports=Path(env.get("VLMPRUNE_REPORTS", "reports")),
                   cache_home=Path(home) if (home := env.get("VLMPRUNE_CACHE_HOME")) else None,
                   experiments=tuple(Path(p) for p in
                                     env.get("VLMPRUNE_EXPERIMENTS", "").split(os.pathsep) if p),
                   max_cells=max_cells if max_cells is not None
                   else env.get("VLMPRUNE_MAX_CELLS") or None)

    def environ(self) -> dict[str, str]:
        """What a worker process needs in its environment to rebuild these settings (the
        results folder absolute: a worker may start elsewhere). Grids are expanded by the
        sweep alone, so their folders and limit stay here."""
        env = {"VLMPRUNE_RESULTS": str(self.results.resolve()),
               "VLMPRUNE_REPORTS": str(self.reports)}
        if self.cache_home is not None:
            env["VLMPRUNE_CACHE_HOME"] = str(self.cache_home)
        return env


_current: Settings | None = None


def current() -> Settings:
    """The running command's settings, else the environment's, read now."""
    return _current if _current is not None else Settings.from_env()


@contextmanager
def using(settings: Settings) -> Iterator[Settings]:
    """`settings` are `current()` for the block (threads of this process see them too), and
    the ones before it after the block."""
    global _current
    saved, _current = _current, settings
    try:
        yield settings
    finally:
        _current = saved
