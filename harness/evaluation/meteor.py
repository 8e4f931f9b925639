"""pycocoevalcap's METEOR scorer: one Java process per Python process, started when a scorer
first scores.

lmms-eval's caption tasks (NoCaps, Flickr30k, COCO, TextCaps and others: eleven in its
tree) aggregate each metric with a function that builds every scorer anew, so a task's seven
metrics start seven METEOR Java processes (`-Xmx2G` each, loading its paraphrase tables)
and score with one; a suite of two caption tasks started fourteen. Measured on this 2-core
machine: seven METEOR processes, started and used once, cost 50 s of CPU (about 7 s each).
Here every `Meteor()` shares one process, started on the first score and stopped at exit.
METEOR's `-stdio` mode holds no state between requests (each EVAL line carries the
statistics it scores), so the answers are those of a process of its own: only when and how
often the process starts changes.
"""

from __future__ import annotations

import atexit
import os
import threading

_LOCK = threading.Lock()  # every scorer's: one request at a time reaches the shared process
_STARTED: dict[int, object] = {}  # by process id: a forked child starts its own


def make_lazy() -> None:
    """Patch `pycocoevalcap.meteor.meteor.Meteor` (once per process): its scorers share one
    Java process, started on the first access to `meteor_p`; a scorer that never scored
    starts nothing, and deleting one stops nothing."""
    from pycocoevalcap.meteor import meteor

    cls = meteor.Meteor
    if cls.__dict__.get("_vlmprune_lazy"):
        return
    start, stop = cls.__init__, cls.__del__

    def __init__(self) -> None:
        self.lock = _LOCK

    def __getattr__(self, name: str):  # only for attributes not set yet
        if name != "meteor_p":
            raise AttributeError(name)
        pid = os.getpid()
        if pid not in _STARTED:  # asked under _LOCK, held by the compute_score asking
            first = object.__new__(cls)
            start(first)  # the scorer's own start (its command, its folder), its own lock
            _STARTED[pid] = first
        self.__dict__["meteor_p"] = _STARTED[pid].meteor_p  # type: ignore[attr-defined]
        return self.__dict__["meteor_p"]

    def __del__(self) -> None:  # the shared process outlives any one scorer
        pass

    def stop_at_exit() -> None:  # this process's own (a forked child inherits the hook)
        scorer = _STARTED.pop(os.getpid(), None)
        if scorer is not None:
            stop(scorer)

    cls.__init__, cls.__getattr__, cls.__del__ = __init__, __getattr__, __del__
    cls._vlmprune_lazy = True
    atexit.register(stop_at_exit)
