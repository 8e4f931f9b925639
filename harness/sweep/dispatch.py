"""Sending a sweep's cells to workers: the groups, their order, and the loop that retries a
cell whose worker died.

A group is the cells that share a prune stage (dense cells: one group per model), so the
worker that computes a prune stage is the one that reuses it, and no two workers compute the
same stage at once. Groups go out longest first (expected cost = stages still to compute ×
the model's weight bytes), each to the next free worker: the longest-processing-time rule,
which keeps workers busy to the end without knowing real times.

A worker runs one cell at a time and answers with an `Outcome`, so the loop always knows
which cell a worker is on. A worker that dies (SIGKILL, out of memory, a node lost) costs its
cell one attempt: the cell is retried once on a fresh worker, then recorded as failed; the
rest of its group carries on. A worker that dies with no cell (only once the queue is
empty) is retired, not replaced. A worker gets its next cell before the parent logs the
one it finished, so logging never holds a worker up. The parent alone writes to MLflow (see
tracking.py), so a dead worker leaves no half-logged run behind.

The executors (`pool.py`, `ray_pool.py`, chosen by name in `executors.py`) only start
workers, hand them cells and report what came back; this file holds what they share, and
`worker.py` what each worker does to itself before its first cell.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from harness import settings
from harness.errors import UserError, first_line
from harness.evaluation import hub_data
from harness.evaluation import suite as evaluation_suite
from harness.models.locate import model_folder
from harness.sweep import cache
from harness.sweep.cell import Cell, prune_key, recover_key
from harness.sweep.result import CellResult
from harness.testing import faults

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a cell whose worker dies is run once more, then recorded as failed
# what every cell imports: a worker imports it before its first cell (`warm_up`), and the
# pool's fork server once for all its workers (which also holds pool.py and, through it, the
# worker's own set-up, worker.py)
WORKER_MODULES = ("torch", "transformers", "lmms_eval.evaluator", "harness.evaluation.lmms_model",
                  "harness.evaluation.run", "harness.sweep.stages")
# what a worker gets only when the sweep has it (a worker forked from a fork server that an
# earlier sweep started drops those this sweep has not: pool.py `_main`)
PASSED_ON = ("VLMPRUNE_REPORTS", "VLMPRUNE_CACHE_HOME", "HF_HOME", faults.ENV)


@dataclass
class Outcome:
    """What a worker answers for one cell. `kind`: done (result; a `Call`'s: value), failed
    (failure: the cell's own error, recorded), fatal (failure: the results folder or store is
    unusable, the sweep stops with it), died (failure: how the worker ended; set by the
    executor)."""

    kind: Literal["done", "failed", "fatal", "died"]
    result: CellResult | None = None
    failure: str | None = None
    value: Any = None


@dataclass(frozen=True)
class Call:
    """A job that is not a grid cell, sent to a worker as a cell is: a module-level function
    (`module:function`) and its arguments; the worker answers with what it returns (a
    search's trial loop: search/parallel.py). A UserError in it is fatal for the sweep."""

    label: str
    function: str
    args: tuple = ()

    @property
    def hash(self) -> str:
        return self.label


@dataclass(frozen=True)
class Job:
    """What an executor runs: a grid cell (or a `Call`), and which attempt at it this is (a
    cell whose worker died runs again, as attempt 2). It travels to the worker whole (a
    pipe, a Ray call), which answers with `run()`'s `Outcome`."""

    work: Cell | Call
    attempt: int = 1

    @property
    def what(self) -> str:
        """The job in a worker's log: `cell 3 (...)`, or a call's label."""
        w = self.work
        return w.label if isinstance(w, Call) else f"cell {w.label}"

    def run(self) -> Outcome:
        return execute(self.work, self.attempt)


@dataclass
class Group:
    key: str
    cells: list[Cell]
    cost: float = 0.0


@dataclass
class Slot:
    """One worker's place: the group it is working through and the cell it is on."""

    index: int
    todo: deque = field(default_factory=deque)
    busy: Cell | None = None


def execute(cell: Cell | Call, attempt: int = 1,
            notify: Callable[[str], None] = lambda s: None) -> Outcome:
    """Run one cell (prune -> recover -> evaluate, through the stage cache) in this process."""
    if isinstance(cell, Call):
        return _call(cell)
    from harness.sweep import stages
    from harness.sweep.tracking import store_problem

    def stage(name: str) -> None:
        if name == "evaluate":
            faults.before_evaluate(cell.hash, attempt)  # the tests' (testing/faults.py)
        notify(name)

    try:
        return Outcome("done", stages.evaluated(cell.spec, notify=stage))
    except Exception as e:  # noqa: BLE001 - any cell failure is recorded, not raised
        problem = store_problem(e) if isinstance(e, OSError) else None
        if problem is not None:  # the results folder, not the cell: every cell would fail
            return Outcome("fatal", failure=problem)
        return _failed(e, f"cell {cell.label}")


def _failed(e: Exception, what: str) -> Outcome:
    """A job's own failure: its type and first line (the traceback in the debug log)."""
    log.debug("%s failed:\n%s", what, traceback.format_exc())
    first = first_line(e)
    return Outcome("failed", failure=f"{type(e).__name__}: {first}")


def _call(job: Call) -> Outcome:
    module, _, name = job.function.partition(":")
    try:
        return Outcome("done", value=getattr(importlib.import_module(module), name)(*job.args))
    except UserError as e:
        return Outcome("fatal", failure=str(e))
    except Exception as e:  # noqa: BLE001 - reported to the sweep, which decides
        return _failed(e, job.label)


def warm_up() -> float:
    """A new worker's set-up, done while the sweep opens its store and before the first cell
    arrives (a local sweep pays it inside its first cell): torch, the stage code, lmms-eval
    and its index of the shapes tasks. Seconds spent. A failure here is only logged: the
    first cell meets it again and records it as its own failure, with its reason."""
    t0 = time.perf_counter()
    try:
        hub_data.offline()
        for module in WORKER_MODULES:
            importlib.import_module(module)
        evaluation_suite.task_manager(False)
    except Exception as e:  # noqa: BLE001 - see above
        log.warning("worker warm-up failed (%s: %s); the cells will say more",
                    type(e).__name__, first_line(e))
    return time.perf_counter() - t0


def prepare(cells: Iterable[Cell]) -> None:
    """What every worker would otherwise make for itself at the same moment: the shapes test
    split, when a cell evaluates on a shapes suite."""
    try:
        shapes = any(t.startswith("shapes") for c in cells for t in c.spec.eval.resolved().tasks)
    except UserError:
        return  # an unknown suite: its cells fail and say so
    if shapes:
        from harness.evaluation.shapes_data import data_dir

        data_dir()


def groups(cells: Iterable[Cell]) -> list[Group]:
    """Cells grouped by prune stage, largest expected cost first."""
    by_key: dict[str, Group] = {}
    for c in cells:
        key = prune_key(c.spec) if c.spec.prune is not None else f"dense:{c.spec.model.name}"
        by_key.setdefault(key, Group(key, [])).cells.append(c)
    sizes: dict[str, float] = {}
    for g in by_key.values():
        g.cells.sort(key=lambda c: c.index)
        name = g.cells[0].spec.model.name
        if name not in sizes:
            sizes[name] = model_bytes(g.cells[0])
        g.cost = stages_to_compute(g) * sizes[name]
    return sorted(by_key.values(), key=lambda g: (-g.cost, g.cells[0].index))


def stages_to_compute(g: Group) -> int:
    """Stages of the group that the cache does not hold yet (the prune stage once)."""
    n = int(not g.key.startswith("dense:") and not cache.done("prune", g.key))
    for c in g.cells:
        if c.spec.recover.method != "none" and not cache.done("recover", recover_key(c.spec)):
            n += 1
        n += not cache.done("eval", c.hash)
    return max(n, 1)


def model_bytes(cell: Cell) -> float:
    """The weight files' size of the cell's model (1 when it cannot be found: the cell will
    fail on its own, and says why)."""
    folder = model_folder(cell.spec.model)
    if folder is None:
        return 1.0
    size = sum(p.stat().st_size for p in folder.rglob("*")
               if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return float(size or 1)


class Workers(Protocol):
    """What an executor's factory returns (executors.py): what `run` uses, and a line for the
    console."""

    size: int

    def describe(self) -> str: ...

    def submit(self, slot: int, job: Job) -> None: ...

    def wait(self, timeout: float | None = None) -> list[tuple[int, Outcome]]: ...

    def restart(self, slot: int) -> None: ...

    def retire(self, slot: int) -> None: ...

    def close(self) -> None: ...


def run(todo: Sequence[Cell], workers: Workers,
        started: Callable[[Cell], None], finished: Callable[[Cell, Outcome], None]) -> None:
    """Work through `todo` on `workers`: `started` when a cell goes out, `finished` once per
    cell with its final outcome (done, failed, or failed after its worker died twice). The
    caller owns the workers and closes them."""
    queue = deque(groups(todo))
    attempts: dict[str, int] = {}
    slots = [Slot(i) for i in range(workers.size)]

    def feed(slot: Slot) -> None:
        while not slot.todo and queue:
            slot.todo.extend(queue.popleft().cells)
        if not slot.todo:
            slot.busy = None
            return
        cell = slot.todo[0]
        attempts[cell.hash] = attempts.get(cell.hash, 0) + 1
        slot.busy = cell
        workers.submit(slot.index, Job(cell, attempts[cell.hash]))
        started(cell)

    for slot in slots:
        feed(slot)
    while any(s.busy for s in slots):
        for index, outcome in workers.wait():
            slot = slots[index]
            cell = slot.busy
            if cell is None:  # a worker with nothing left to do died (the queue is empty)
                log.warning("worker %d died while idle (%s); it is not replaced", index,
                            outcome.failure)
                workers.retire(index)
                continue
            if outcome.kind == "fatal":
                raise UserError(outcome.failure or "the results folder cannot be used")
            if outcome.kind == "died":
                workers.restart(index)
                if attempts[cell.hash] < ATTEMPTS:
                    log.warning("worker %d died (%s) on cell %s; running it again",
                                index, outcome.failure, cell.label)
                    feed(slot)
                    continue
                outcome = Outcome("failed", failure=f"WorkerDied: {outcome.failure} "
                                  f"(on all {ATTEMPTS} attempts)")
            slot.todo.popleft()
            feed(slot)  # the worker's next cell first: it computes while this one is logged
            finished(cell, outcome)


def worker_count(workers: int | None, gpus: int) -> int:
    """Workers by default: one per GPU, else two (each with half the cores' threads)."""
    if workers is not None:
        if workers < 1:
            raise UserError(f"--workers {workers}: give 1 or more")
        return workers
    return gpus if gpus else 2


def worker_env(threads: int) -> dict[str, str]:
    """What a worker process needs in its environment before it imports anything: the
    sweep's settings (the same results folder, so the same stage cache; settings.py), the
    thread policy, no hub, and the tests' fault when one is set (testing/faults.py)."""
    env = settings.current().environ() | {
        "VLMPRUNE_THREADS": str(threads), "VLMPRUNE_WORKER": "1",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    if os.environ.get("HF_HOME"):
        env["HF_HOME"] = os.environ["HF_HOME"]
    return env | faults.passed_on()

