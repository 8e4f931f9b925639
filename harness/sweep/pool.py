"""`--executor pool`: one worker process per device of this machine.

Each visible GPU gets a worker with its own CUDA_VISIBLE_DEVICES (its cells then run on
`cuda`); with no GPU, `--workers N` CPU workers (2 by default) share the cores, torch's
threads split between them (harness/threads.py). Workers are spawned (not forked: torch and
OpenMP do not survive a fork), read cells from a pipe, run them through the stage cache in
the shared results folder, and answer with an `Outcome`. They die with the sweep
(PR_SET_PDEATHSIG), so a killed sweep leaves no worker computing for nobody.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from harness import threads
from harness.paths import results_dir
from harness.sweep import dispatch
from harness.sweep.dispatch import Outcome
from harness.sweep.grid import Cell


def gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (none: []). Read from
    the driver, not torch: the sweep's own process never imports torch for a pool."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    driver = Path("/proc/driver/nvidia/gpus")
    n = len(list(driver.iterdir())) if driver.is_dir() else 0
    return [str(i) for i in range(n)]


class Pool:
    def __init__(self, workers: int | None = None, thread_count: int | None = None,
                 log_tag: str = "pool") -> None:
        self.devices = gpus()
        self.size = dispatch.worker_count(workers, len(self.devices))
        self.threads = threads.count(thread_count, self.size)
        self.ctx = mp.get_context("spawn")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = [results_dir() / "logs" / f"{log_tag}-{stamp}-worker{i}.log"
                     for i in range(self.size)]
        self.procs: list[mp.process.BaseProcess | None] = [None] * self.size
        self.conns: list[Connection | None] = [None] * self.size
        # the processes multiprocessing starts for us (the resource tracker: it reports the
        # semaphores of killed workers, then cleans them up) write to the first worker's log
        with _stderr_to(self.logs[0]):
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
            for i in range(self.size):
                self._start(i)

    def describe(self) -> str:
        where = (f"GPUs {', '.join(self.devices[:self.size])}" if self.devices
                 else f"CPU, {self.threads} thread{'s' * (self.threads > 1)} each")
        return f"pool of {self.size} workers ({where})"

    def _start(self, i: int) -> None:
        env = dispatch.worker_env(str(results_dir().resolve()), self.threads)
        env["VLMPRUNE_WORKER_LOG"] = str(self.logs[i].resolve())
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices[i % len(self.devices)]
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=_main, args=(theirs, env), name=f"vlmprune-worker-{i}",
                             daemon=True)
        with _environ(env):  # the spawned interpreter starts with these already set
            p.start()
        theirs.close()
        self.procs[i], self.conns[i] = p, ours

    def submit(self, slot: int, cell: Cell, attempt: int) -> None:
        conn = self.conns[slot]
        assert conn is not None
        try:
            conn.send((cell, attempt))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is gone: wait() reports it

    def wait(self) -> list[tuple[int, Outcome]]:
        live = {c: i for i, c in enumerate(self.conns) if c is not None}
        out = []
        for conn in wait(list(live)):
            i = live[conn]  # type: ignore[index]
            try:
                out.append((i, conn.recv()))  # type: ignore[union-attr]
            except (EOFError, ConnectionResetError, OSError):
                out.append((i, Outcome("died", failure=self._ended(i))))
        return out

    def _ended(self, i: int) -> str:
        p = self.procs[i]
        assert p is not None
        p.join(timeout=10)
        code = p.exitcode
        if code is not None and code < 0:
            return f"worker process killed by {signal.Signals(-code).name}"
        return f"worker process exited with code {code}"

    def restart(self, slot: int) -> None:
        self._stop(slot)
        self._start(slot)

    def _stop(self, i: int) -> None:
        """A worker holds nothing to save between cells (stages are written whole or not at
        all), so it is killed rather than asked to unwind torch and lmms-eval (seconds)."""
        p, conn = self.procs[i], self.conns[i]
        if conn is not None:
            conn.close()
        if p is not None:
            p.kill()
            p.join()
        self.procs[i], self.conns[i] = None, None

    def close(self) -> None:
        for i in range(self.size):
            self._stop(i)


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the sweep that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _stderr_to(path: Path):
    """fd 2 of this process goes to `path` for the duration (children inherit it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield
        return
    saved = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _to_log(path: str | None) -> None:
    """What the libraries print in this worker goes to its own log file (the sweep's display
    owns the terminal; the worker may start before it)."""
    if not path:
        return
    with contextlib.suppress(OSError):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def _main(conn: Connection, env: dict[str, str]) -> None:
    """A worker: cells in, outcomes out, until the pipe closes or says stop."""
    os.environ.update(env)
    _die_with_parent()
    if os.getppid() == 1:  # the sweep died before the line above took effect
        return
    _to_log(env.get("VLMPRUNE_WORKER_LOG"))
    threads.configure()
    threads.apply()
    from harness.sweep import runner

    runner.quiet_libraries()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        cell, attempt = msg
        conn.send(dispatch.execute(cell, attempt))
