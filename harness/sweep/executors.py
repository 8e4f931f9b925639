"""Where a sweep's cells (or a search's trial loops) run: the executors by name.

Each entry names its workers' factory as `"module:attr"`, imported only when the executor is
chosen (Ray is an optional install; a local sweep imports neither pool nor Ray), the words
`--executor`'s help gives it, and the flags it takes besides `--executor`. An entry with no
factory runs its cells in this process, one at a time. A factory is called with the user's
`Dispatch` and a tag naming the job (its workers' log files) and returns `dispatch.Workers`.

Adding an executor is one entry here and one module with its factory; the CLI's help and
the check of its flags come from this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import UserError

if TYPE_CHECKING:
    from harness.sweep.dispatch import Workers

# an option of `Dispatch` that only some executors take -> its command-line flag
FLAGS = {"workers": "--workers", "ray_address": "--ray-address"}


@dataclass(frozen=True)
class Executor:
    name: str
    target: str | None  # "module:attr" of its workers' factory; None: cells run here
    help: str  # what `--executor NAME` means, in a few words of the flag's help
    options: tuple[str, ...] = ()  # keys of FLAGS it accepts


EXECUTORS: dict[str, Executor] = {e.name: e for e in (
    Executor("local", None, "here one at a time"),
    Executor("pool", "harness.sweep.pool:start",
             "a worker per GPU or N CPU workers of this machine", ("workers",)),
    Executor("ray", "harness.sweep.ray_pool:start", "a Ray cluster", ("workers", "ray_address")),
)}


def takers(option: str) -> list[str]:
    """The executors that accept `option` (a key of FLAGS)."""
    return [e.name for e in EXECUTORS.values() if option in e.options]


def help_text(what: str) -> str:
    """`--executor`'s help: where `what` (cells, trials) run under each executor."""
    return f"where {what} run: " + ", ".join(f"{e.help} ({e.name})" for e in EXECUTORS.values())


@dataclass
class Dispatch:
    """The executor a user chose for a sweep or a search, with its options."""

    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    threads: int | None = None

    def check(self) -> Executor:
        """The chosen entry; an unknown name, or a flag it does not take, is a UserError."""
        entry = EXECUTORS.get(self.executor)
        if entry is None:
            raise UserError(f"--executor {self.executor}: use one of {', '.join(EXECUTORS)}")
        allowed = " or ".join(takers("workers"))
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers}: give 1 or more, with --executor "
                            f"{allowed}")
        for option, flag in FLAGS.items():
            if getattr(self, option) and option not in entry.options:
                here = f" ({entry.name} runs here, one at a time)" if entry.target is None \
                    and option == "workers" else ""
                raise UserError(f"{flag}: only with --executor {' or '.join(takers(option))}"
                                f"{here}")
        return entry

    @property
    def here(self) -> bool:
        """The cells run in this process (no workers to start)."""
        return self.check().target is None

    def start(self, tag: str) -> Workers:
        """Start the chosen executor's workers; the caller closes them."""
        target = self.check().target
        if target is None:
            raise ValueError(f"executor {self.executor} runs cells in this process")
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)(self, tag)
