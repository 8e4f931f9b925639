"""A worker process's own set-up, the same whichever executor started it (a pool's process,
a Ray actor): what the CLI does for itself before a local sweep, then the warm-up. What
differs stays with the executor: a pool's worker first takes its environment, its log file
and its tie to the sweep (pool.py `_main`); a Ray actor gets its environment from Ray."""

from __future__ import annotations

from harness import threads
from harness.sweep import dispatch
from harness.sweep.console import quiet_libraries


def worker_setup() -> float:
    """The thread policy (idle threads sleep; this worker's share of the cores, from
    VLMPRUNE_THREADS), library progress bars off, then the imports and indexes every cell
    needs (`dispatch.warm_up`). Seconds the warm-up took."""
    threads.configure()
    threads.apply()
    quiet_libraries()
    return dispatch.warm_up()
