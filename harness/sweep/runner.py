"""`vlmprune sweep|plan|list`: run a grid's cells (prune -> recover -> evaluate), skipping
the ones MLflow already holds as finished, sharing cached stages, recording failures.

Cells run grouped by prune stage, so consecutive cells reuse its cache. A failing cell (NaN,
out of memory, a missing model) becomes a FAILED run with its reason and the sweep goes on;
the exit code is 1 if any cell failed. Only the CLI imports this module: it also writes the
grid's report after a sweep (the sweep layer never imports the report's).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Iterator

from rich.table import Table

from harness import fingerprint
from harness.errors import UserError
from harness.evaluation.metrics import headline
from harness.paths import results_dir
from harness.sweep import cache, dispatch, grid, race
from harness.sweep.cell import Cell, digest, prune_key, recover_key
from harness.sweep.console import console, quiet_libraries
from harness.sweep.display import Display
from harness.sweep.executors import Dispatch
from harness.sweep.result import CellResult

log = logging.getLogger(__name__)


def list_grids() -> int:
    t = Table(title="grids (experiments/)")
    for col in ("grid", "cells", "description"):
        t.add_column(col)
    for name in grid.names():
        g, cells = grid.expand(name)
        t.add_row(name, str(len(cells)), g.description)
    console.print(t)
    return 0


def plan(name: str, where: dict[str, str] | None = None, keep_going: bool = False) -> int:
    """The cells and their stages; reads the store and the cache, writes nothing."""
    from harness.sweep.checks import check
    from harness.sweep.tracking import store_errors

    g, cells = grid.expand(name, where)
    check(grid.path_of(name), cells, keep_going)
    with store_errors():
        return _plan(g, cells)


def _plan(g: grid.GridFile, cells: list[Cell]) -> int:
    from harness.sweep.tracking import finished_readonly

    finished = finished_readonly(g.name)
    prunes = {prune_key(c.spec) for c in cells if c.spec.prune is not None}
    recovers = {recover_key(c.spec) for c in cells if c.spec.recover.method != "none"}
    t = Table(title=f"{g.name}: {len(cells)} cells, {len(prunes)} prune stages, "
                    f"{len(recovers)} recovery stages")
    for col in ("#", "cell", "prune stage", "recover stage", "status"):
        t.add_column(col)
    for c in cells:
        pk = prune_key(c.spec) if c.spec.prune is not None else "-"
        rk = recover_key(c.spec) if c.spec.recover.method != "none" else "-"
        status = "done" if c.hash in finished else "cached" if cache.done("eval", c.hash) \
            else "to run"
        t.add_row(str(c.index), c.label, _mark(pk, "prune"), _mark(rk, "recover"), status)
    console.print(t)
    _offloaded(cells)
    return 0


def _offloaded(cells: list[Cell]) -> None:
    """Each offloaded prune stage still to run: its expected peak (pruning/stage.planned)
    against the memory available."""
    todo = {prune_key(c.spec): c.spec for c in cells if c.spec.prune is not None
            and c.spec.model.offload != "none" and not cache.done("prune", prune_key(c.spec))}
    if not todo:
        return
    from harness.models.offload import available_memory
    from harness.pruning.stage import planned

    free = available_memory() / 2**30
    for key, spec in todo.items():
        assert spec.prune is not None
        est = planned(spec.model, spec.prune)
        fits = "" if est.total / 2**30 <= free else ": DOES NOT FIT"
        console.print(f"prune stage {key[:8]} ({spec.model.name}, offload "
                      f"{spec.model.offload}, {spec.prune.method}): {est.line()}; "
                      f"{free:.2f} GiB available{fits}", soft_wrap=True)


def _mark(key: str, stage: str) -> str:
    if key == "-":
        return key
    return f"{key[:8]} {'(cached)' if cache.done(stage, key) else ''}".strip()


def sweep(name: str, where: dict[str, str] | None = None, dry_run: bool = False,
          force: bool = False, progress: bool = True, executor: str = "local",
          workers: int | None = None, ray_address: str | None = None,
          threads: int | None = None, keep_going: bool = False) -> int:
    """The grid's cells, run (with `dry_run`, only planned); the exit code. Its report is the
    caller's to write (cli.write_report)."""
    from harness.sweep.checks import check
    from harness.sweep.tracking import store_errors

    how = Dispatch(executor, workers, ray_address, threads)
    how.check()
    if dry_run:
        return plan(name, where, keep_going)
    g, cells = grid.expand(name, where)  # a bad grid fails here, before any work
    check(grid.path_of(name), cells, keep_going)
    race.check(cells)
    with store_errors(), locked(g.name):
        return _sweep(g, cells, where, force, progress, how)


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One sweep of a grid at a time on a results folder: two would run each cell twice (two
    FINISHED runs), mark each other's run KILLED (`Tracker.close_stale`) and race on the
    report. A second one refuses at once, naming the first; waiting would only run what
    the first has just finished. The lock is the OS's (flock) on `results/locks/`: it
    goes with the process that holds it, so the file a killed sweep leaves blocks nobody."""
    from filelock import FileLock, Timeout

    folder = results_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    path = folder / f"sweep-{safe if safe == name else f'{safe}-{digest(name)[:8]}'}.lock"

    def owner(fd: int) -> None:
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%F %T')}".encode())

    lock = FileLock(str(path), fallback_to_soft=False, on_acquired=owner)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = path.read_text().strip() or "a process starting"
        except OSError:
            who = "another process"
        raise UserError(f"{path}: a sweep of '{name}' is running on this results folder "
                        f"({who}); wait for it to end, or stop it (Ctrl-C where it runs, or "
                        "kill -INT PID) and run again: it resumes") from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        log.warning("%s: this filesystem cannot lock (%s); make sure no other sweep of '%s' "
                    "runs on this results folder", path, e.strerror, name)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _sweep(g: grid.GridFile, cells: list[Cell], where: dict[str, str] | None, force: bool,
           progress: bool, how: Dispatch | None = None) -> int:
    how = how or Dispatch()
    # workers start first: they import torch while this process opens MLflow; this process
    # then imports neither torch nor transformers (its workers quiet their own libraries)
    workers = None if how.here else how.start(g.name)
    try:
        if workers is None:
            quiet_libraries()
        return _run_cells(g, cells, where, force, progress, how, workers)
    finally:
        if workers is not None:
            workers.close()


def _run_cells(g: grid.GridFile, cells: list[Cell], where: dict[str, str] | None, force: bool,
               progress: bool, how: Dispatch, workers) -> int:
    from harness.sweep.tracking import Tracker

    cache.sweep_stale()
    fingerprint.save()
    tracker = Tracker(g.name, g.description)
    tracker.close_stale()
    if force:  # recompute: drop the cells' cached stages once, then cache as usual
        for c in cells:
            for stage, key in (("prune", prune_key(c.spec)), ("recover", recover_key(c.spec)),
                               ("eval", c.hash)):
                cache.drop(stage, key)
    finished = {} if force else tracker.finished()
    todo = sorted((c for c in cells if c.hash not in finished),
                  key=lambda c: (prune_key(c.spec), c.index))
    console.print(f"[bold]{g.name}[/]: {len(cells)} cells, {len(cells) - len(todo)} already "
                  f"finished, {len(todo)} to run")
    parent = tracker.start_sweep(len(todo), where, how.executor)
    rows: list[tuple[Cell, CellResult | None, str | None]] = []
    t0 = time.perf_counter()
    try:
        if any(race.racing(c.spec) for c in cells):
            raced = [c for c in cells if race.racing(c.spec) or c.hash not in finished]
            _race(raced, {c.hash for c in todo}, tracker, parent, rows, workers)
        else:
            _cells(g, todo, tracker, parent, rows, progress, workers)
    except KeyboardInterrupt:  # Ctrl-C: stop now; finished cells are logged, stages cached
        tracker.end(parent, "KILLED")
        raise
    failed = sum(1 for _, _, f in rows if f)
    tracker.end_sweep(parent, failed, len(rows) - failed)
    earlier = [(c, finished[c.hash], None) for c in cells if c.hash in finished]
    summary(g.name, sorted(earlier + rows, key=lambda r: r[0].index), len(rows),
            time.perf_counter() - t0)
    return 1 if failed else 0


def _cells(g: grid.GridFile, todo: list[Cell], tracker, parent: str,
           rows: list[tuple[Cell, CellResult | None, str | None]], progress: bool,
           workers) -> None:
    """Run `todo` here or on `workers`, logging each cell's run as it ends (into `rows`)."""
    with Display(g.name, len(todo), console, bar=progress) as display:
        began: dict[str, float] = {}

        def on_started(cell: Cell) -> None:
            began.setdefault(cell.hash, time.perf_counter())
            display.stage(cell.label, "start")

        def on_finished(cell: Cell, outcome: dispatch.Outcome) -> None:
            tracker.log_cell(parent, cell, outcome.result, outcome.failure)
            rows.append((cell, outcome.result, outcome.failure))
            display.finished(cell.label, _score(outcome.result, outcome.failure),
                             time.perf_counter() - began.pop(cell.hash, time.perf_counter()))

        if workers is None or not todo:
            for cell in todo:
                on_started(cell)
                outcome = dispatch.execute(cell, notify=functools.partial(display.stage,
                                                                          cell.label))
                if outcome.kind == "fatal":
                    raise UserError(outcome.failure or "the results folder cannot be used")
                on_finished(cell, outcome)
        else:
            dispatch.prepare(todo)  # while the workers import torch
            console.print(f"running on a {workers.describe()}")
            dispatch.run(todo, workers, on_started, on_finished)


def _race(cells: list[Cell], log: set[str], tracker, parent: str,
          rows: list[tuple[Cell, CellResult | None, str | None]], workers) -> None:
    """Race the grid's settings (sweep/race.py; every racing cell takes part, those finished
    before too: their stages are cached), then log the cells in `log` with how they left
    the race."""

    def execute(batch: list[Cell]) -> dict[str, dispatch.Outcome]:
        got: dict[str, dispatch.Outcome] = {}
        if workers is None:
            for cell in batch:
                got[cell.hash] = outcome = dispatch.execute(cell)
                if outcome.kind == "fatal":
                    raise UserError(outcome.failure or "the results folder cannot be used")
        else:
            dispatch.run(batch, workers, lambda c: None,
                         lambda c, o: got.__setitem__(c.hash, o))
        return got

    if workers is not None:
        dispatch.prepare(cells)
        console.print(f"running on a {workers.describe()}")
    outcomes = race.run(cells, execute, progress=console.print)
    for cell in cells:
        if cell.hash not in log:
            continue
        outcome, standing = outcomes[cell.hash]
        tracker.log_cell(parent, cell, outcome.result, outcome.failure,
                         extra=standing.tags() if standing else None)
        rows.append((cell, outcome.result, outcome.failure))
        note = f" ({standing.note})" if standing else ""
        console.print(f"{cell.label}: {_score(outcome.result, outcome.failure)}{note}")


def _score(result: CellResult | None, failure: str | None) -> str:
    """A finished cell in a few words: its headline metrics and sparsity, or its failure."""
    if result is None:
        return f"FAILED {failure}"
    parts = [f"{k.split('/')[0].removeprefix('shapes_')} {k.split('/')[1]} {v:.3f}"
             for k, v in headline(result.metrics, result.headline)]
    return ", ".join(parts + [f"sparsity {result.sparsity.get('overall', 0.0):.3f}"])


def summary(name: str, rows: list[tuple[Cell, CellResult | None, str | None]], ran: int,
            seconds: float) -> None:
    metric_names: list[str] = []
    for _, r, _ in rows:
        if r is not None:
            metric_names += [k for k, _ in headline(r.metrics, r.headline) if k not in metric_names]
    t = Table(title=f"{name}: {len(rows)} cells, {ran} run now in {seconds:.0f} s")
    t.add_column("cell")
    for m in metric_names:
        t.add_column(m, justify="right")
    t.add_column("sparsity", justify="right")
    t.add_column("status")
    for cell, r, failure in rows:
        if r is None:
            status = f"failed: {failure}" if failure else "finished earlier (not cached)"
            t.add_row(cell.label, *["-"] * len(metric_names), "-", status)
            continue
        t.add_row(cell.label, *[f"{r.metrics.get(m, float('nan')):.3f}" for m in metric_names],
                  f"{r.sparsity['overall']:.3f}", "ok")
    console.print(t)
