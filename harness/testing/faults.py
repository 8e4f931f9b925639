"""The tests' fault injection, in one place: a pool or Ray worker kills itself at a known
point of a cell, so that a worker's death, its detection and the retry are all real.

It has to reach worker processes (forked from a fork server, spawned, or Ray actors, perhaps
on another machine), which a test cannot monkeypatch, so it travels as an environment
variable the sweep passes on to its workers (`sweep/dispatch.py` `worker_env`), and the
worker calls `before_evaluate` from one line of `dispatch.execute`. Unset (always, outside
the tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "VLMPRUNE_TEST_SIGKILL"


def passed_on() -> dict[str, str]:
    """What a worker needs in its environment for the fault to reach it (nothing if unset)."""
    return {ENV: os.environ[ENV]} if os.environ.get(ENV) else {}


def before_evaluate(cell_hash: str, attempt: int) -> None:
    """`VLMPRUNE_TEST_SIGKILL=HASH_PREFIX:N[,HASH_PREFIX:N...]`: a worker SIGKILLs itself in
    that cell, after its prune (and recovery) stage and before its evaluation, on attempts
    1..N. Ignored outside pool and Ray workers (a local sweep would kill itself)."""
    if os.environ.get("VLMPRUNE_WORKER") != "1":
        return
    for item in os.environ.get(ENV, "").split(","):
        prefix, _, times = item.partition(":")
        if prefix and cell_hash.startswith(prefix) and attempt <= int(times or 1):
            os.kill(os.getpid(), signal.SIGKILL)
