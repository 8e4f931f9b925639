"""Where a sweep's cells (or a search's trial loops) run: the executors, registry entries
(harness/registry.py: local, pool, ray, and any a plugin adds).

An executor's entry names its workers' factory as `"module:attr"`, imported only when the
executor is chosen (Ray is an optional install; a local sweep imports neither pool nor Ray),
the words `--executor`'s help gives it, and the options of `Dispatch` it takes (`takes`,
each a flag of FLAGS). An entry with no factory runs its cells in this process, one at a
time. A factory is called with the user's `Dispatch` and a tag naming the job (its workers'
log files) and returns `dispatch.Workers`.

Adding an executor is one module with its factory and one registry entry; the CLI's help and
the check of its flags come from the entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import registry
from harness.errors import UserError
from harness.registry import Entry

if TYPE_CHECKING:
    from harness.sweep.dispatch import Workers

# an option of `Dispatch` that only some executors take -> its command-line flag
FLAGS = {"workers": "--workers", "ray_address": "--ray-address"}


def takers(option: str) -> list[str]:
    """The executors that accept `option` (a key of FLAGS)."""
    return [e.name for e in registry.entries("executors") if option in e.takes]


def help_text(what: str) -> str:
    """`--executor`'s help: where `what` (cells, trials) run under each executor."""
    return f"where {what} run: " + ", ".join(f"{e.help} ({e.name})"
                                             for e in registry.entries("executors"))


@dataclass
class Dispatch:
    """The executor a user chose for a sweep or a search, with its options."""

    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    threads: int | None = None

    def check(self) -> Entry:
        """The chosen entry; an unknown name, or a flag it does not take, is a UserError."""
        known = {e.name: e for e in registry.entries("executors")}
        entry = known.get(self.executor)
        if entry is None:
            raise UserError(f"--executor {self.executor}: use one of {', '.join(known)}")
        allowed = " or ".join(takers("workers"))
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers}: give 1 or more, with --executor "
                            f"{allowed}")
        for option, flag in FLAGS.items():
            if getattr(self, option) and option not in entry.takes:
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
        entry = self.check()
        if entry.target is None:
            raise ValueError(f"executor {self.executor} runs cells in this process")
        return entry.load()(self, tag)
