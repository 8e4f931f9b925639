"""`--executor pool`: one worker process per device of this machine.

Each visible GPU gets a worker with its own CUDA_VISIBLE_DEVICES (its cells then run on
`cuda`); with no GPU, `--workers N` CPU workers (2 by default) share the cores, torch's
threads split between them (harness/threads.py). Workers read cells from a pipe, run them
through the stage cache in the shared results folder, and answer with an `Outcome`. They die
with the sweep (`_die_with_sweep`), so a killed sweep leaves no worker computing for
nobody.

Workers are forked from a fork server (multiprocessing's forkserver) that imported torch,
transformers, lmms-eval and the stage code once: on 2 cores, two spawned workers importing
all that side by side, beside the sweep opening MLflow, took ~16 s before the first cell; a
fork of a process that has run no OpenMP parallel region is safe (forking after one is what
torch and OpenMP do not survive), and the server runs nothing but imports. Each worker then
sets its own environment (results folder, threads). GPU workers, and workers where there
is no forkserver, are spawned (see `_context`).

Nothing a pool starts outlives the sweep: workers watch it (`_die_with_sweep`), the fork
server gets SIGKILL when it ends (`_guard_fork_server`), and the resource tracker ends when
the last of them has. A fork server that is lost (killed, out of memory) costs the cells of
the workers it could not start one attempt each, as a dead worker does; the next start of a
worker starts a new server.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing import forkserver, resource_tracker
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import threads
from harness.paths import results_dir
from harness.sweep import dispatch
from harness.sweep.dispatch import Job, Outcome
from harness.sweep.worker import worker_setup

if TYPE_CHECKING:
    from harness.sweep.executors import Dispatch

CUDA = "CUDA_VISIBLE_DEVICES"
SWEEP_PID = "VLMPRUNE_POOL_SWEEP"  # the sweep's pid, in the environment its fork server gets


def gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (none: []). Read from
    the driver, not torch: the sweep's own process never imports torch for a pool."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    driver = Path("/proc/driver/nvidia/gpus")
    n = len(list(driver.iterdir())) if driver.is_dir() else 0
    return [str(i) for i in range(n)]


def start(how: Dispatch, tag: str) -> Pool:
    """`--executor pool` (the entry in executors.py): its log files are named after `tag`."""
    return Pool(how.workers, how.threads, log_tag=tag)


class Pool:
    def __init__(self, workers: int | None = None, thread_count: int | None = None,
                 log_tag: str = "pool") -> None:
        self.devices = gpus()
        self.size = dispatch.worker_count(workers, len(self.devices))
        self.threads = threads.count(thread_count, self.size)
        self.ctx = _context(gpu=bool(self.devices))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = [results_dir() / "logs" / f"{log_tag}-{stamp}-worker{i}.log"
                     for i in range(self.size)]
        self.procs: list[mp.process.BaseProcess | None] = [None] * self.size
        self.conns: list[Connection | None] = [None] * self.size
        self.forked = self.ctx.get_start_method() == "forkserver"
        self._starting: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._lost: dict[int, str] = {}  # workers that could not start, and why
        self._unsent: dict[int, str] = {}  # ... that were given a cell: wait() reports them
        # the processes multiprocessing starts for us (the resource tracker: it reports the
        # semaphores of killed workers, then cleans them up; the fork server) write to the
        # first worker's log, and hold no pipe of the sweep's (a caller reading the sweep's
        # output would otherwise wait for them too)
        with _output_to(self.logs[0]):
            resource_tracker.ensure_running()
            if not self.forked:
                for i in range(self.size):
                    self._start(i)
                return
        self._server()
        # a fork waits for the server's imports: the workers are started beside the sweep
        # opening MLflow, not before it (`_ready` waits for them)
        self._starting = threading.Thread(target=self._start_all, name="vlmprune-pool-start",
                                          daemon=True)
        self._starting.start()

    def _start_all(self) -> None:
        try:
            for i in range(self.size):
                self._start(i)
        except BaseException as e:  # noqa: BLE001 - raised in the sweep's thread by _ready
            self._failure = e

    def _ready(self) -> None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
            if self._failure is not None:
                raise self._failure

    def describe(self) -> str:
        where = (f"GPUs {', '.join(self.devices[:self.size])}" if self.devices
                 else f"CPU, {self.threads} thread{'s' * (self.threads > 1)} each")
        return f"pool of {self.size} workers ({where})"

    def _env(self, i: int) -> dict[str, str]:
        env = dispatch.worker_env(self.threads)
        env["VLMPRUNE_WORKER_LOG"] = str(self.logs[i].resolve())
        if self.devices:
            env[CUDA] = self.devices[i % len(self.devices)]
        elif CUDA in os.environ:  # CPU workers see the GPUs (none) the sweep sees
            env[CUDA] = os.environ[CUDA]
        return env

    def _server(self) -> None:
        """Start the fork server, or a new one when it was lost: with the workers' settings
        (libraries read some at import), its output in the first worker's log, and from the
        thread that lives as long as the pool (the server dies with the thread that started
        it: `_guard_fork_server`)."""
        if _server_alive():
            return

        with _output_to(self.logs[0]), _environ(self._env(0) | {SWEEP_PID: str(os.getpid())}):
            forkserver.ensure_running()

    def _start(self, i: int) -> None:
        env = self._env(i)
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=_main, args=(theirs, env), name=f"vlmprune-worker-{i}",
                             daemon=True)
        try:
            if self.forked:  # the fork applies env itself (`_main`)
                if not _server_alive():  # a new one is started by `restart`, not here
                    raise EOFError("not running")
                p.start()
            else:
                with _environ(env):  # the spawned interpreter starts with these already set
                    p.start()
        except (EOFError, OSError) as e:  # the fork server was lost (SIGKILL, out of memory)
            ours.close()
            theirs.close()
            why = str(e) or type(e).__name__
            self._lost[i] = (f"could not start: the fork server was lost ({why})" if self.forked
                             else f"could not start ({why})")
            return
        theirs.close()
        self.procs[i], self.conns[i] = p, ours

    def submit(self, slot: int, job: Job) -> None:
        self._ready()
        conn = self.conns[slot]
        if conn is None:  # its worker could not start: wait() says so, as for a dead one
            self._unsent[slot] = self._lost.get(slot, "worker process not running")
            return
        try:
            conn.send(job)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is gone: wait() reports it

    def wait(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """The workers that answered (or died), waiting at most `timeout` s (None: until
        one does)."""
        self._ready()
        if self._unsent:
            lost = [(i, Outcome("died", failure=why)) for i, why in self._unsent.items()]
            self._unsent.clear()
            return lost
        live = {c: i for i, c in enumerate(self.conns) if c is not None}
        out = []
        for conn in wait(list(live), timeout):
            i = live[conn]  # type: ignore[index]
            try:
                out.append((i, conn.recv()))  # type: ignore[union-attr,call-arg]
            except (EOFError, ConnectionResetError, OSError):
                out.append((i, Outcome("died", failure=self._ended(i))))
        return out  # type: ignore[return-value]

    def _ended(self, i: int) -> str:
        p = self.procs[i]
        assert p is not None
        p.join(timeout=10)
        code = p.exitcode
        if code is not None and code < 0:
            return f"worker process killed by {signal.Signals(-code).name}"
        return f"worker process exited with code {code}"

    def restart(self, slot: int) -> None:
        self._ready()
        self._stop(slot)
        self._lost.pop(slot, None)
        if self.forked:
            self._server()
        self._start(slot)

    def retire(self, slot: int) -> None:
        self._stop(slot)

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
        with contextlib.suppress(BaseException):
            self._ready()  # a worker still starting would outlive the pool
        for i in range(self.size):
            self._stop(i)
        if self.forked:
            _stop_fork_server()


def _stop_fork_server() -> None:
    """The fork server ends with its pool: killed, not asked to stop (asked, it unloads torch
    for ~2 s after the sweep is done, and in a long-lived process it would keep ~1 GB and
    the first sweep's environment). The next pool starts a fresh one (`ensure_running`
    sees it gone). Private parts of multiprocessing, checked in tests/test_private_apis.py."""
    server: Any = forkserver._forkserver
    if server._forkserver_pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(server._forkserver_pid, signal.SIGKILL)
    server._stop()  # reaps it, closes its pipe, removes its socket


def _server_alive() -> bool:
    """The fork server runs (None started, or it ended: False). Private parts of
    multiprocessing, checked in tests/test_private_apis.py."""
    from harness.search.study import alive

    pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    return pid is not None and alive(pid)


def _context(gpu: bool):
    """forkserver for CPU workers; spawn for GPU workers (an import that touched CUDA in the
    server would leave forked GPU workers unable to use it, and the GPU measurements were
    made with spawned workers) and where there is no forkserver."""
    if gpu or "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # imported once by the server for every worker it forks (a failed import is skipped:
    # the worker's warm-up then meets it); this module first (`_guard_fork_server`)
    ctx.set_forkserver_preload([__name__, *dispatch.WORKER_MODULES])
    return ctx


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


def _die_with_sweep() -> None:
    """This process gets SIGKILL when the sweep that asked for it dies, even mid-cell.

    A forked worker's parent is the fork server, which outlives the sweep as long as any
    worker lives (each worker holds the server's "alive" pipe, as multiprocessing passes it
    on), so the parent-death signal alone kept orphaned workers computing (a search's
    workers finished 20 trials for nobody). The sweep's own end is multiprocessing's
    parent sentinel: readable once the sweep has exited; a thread waits on it. The
    parent-death signal stays for spawned workers, whose parent is the sweep."""
    _die_with_parent()
    parent = mp.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="vlmprune-watch-sweep", daemon=True).start()


def _die_with_parent() -> None:
    """SIGKILL for this process when the thread that started it ends (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _guard_fork_server() -> None:
    """In a pool's fork server, which imports this module before torch and the rest: SIGKILL
    when the sweep that started it ends. Otherwise a sweep killed while its server imported
    left the server running for nobody until its imports were done, and the resource tracker
    with it (the sweep's pending requests for workers, queued at the server's socket, hold
    the tracker's pipe); on a loaded machine that is seconds to minutes of CPU. The sweep
    sends its pid: one that ended before this ran is seen here."""
    if not any(a.startswith("from multiprocessing.forkserver import") for a in sys.orig_argv):
        return
    sweep = os.environ.pop(SWEEP_PID, None)  # not the workers': they watch the sweep
    _die_with_parent()
    if sweep is not None and os.getppid() != int(sweep):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _output_to(path: Path):
    """fds 1 and 2 of this process go to `path` for the duration (children inherit them)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        for target, fd in ((1, saved[0]), (2, saved[1])):
            os.dup2(fd, target)
            os.close(fd)


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


def _say(line: str) -> None:
    """A line of this worker's log, with the time of day."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    print(f"{stamp}.{int(now * 1000) % 1000:03d} {line}", flush=True)


def _main(conn: Connection, env: dict[str, str]) -> None:
    """A worker: cells in, outcomes out, until the pipe closes or says stop."""
    # Ctrl-C signals the terminal's whole process group: the sweep decides (it stops, and
    # kills its workers); a worker interrupted mid-cell would only be a death to retry
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    for k in (*dispatch.PASSED_ON, CUDA):  # a fork server started by an earlier sweep of
        if k not in env:                     # this process may hold values this one has not
            os.environ.pop(k, None)
    _die_with_sweep()
    _to_log(env.get("VLMPRUNE_WORKER_LOG"))
    _say(f"worker {os.getpid()}: started")
    _say(f"worker {os.getpid()}: ready in {worker_setup():.1f} s")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        t0 = time.perf_counter()
        outcome = job.run()
        _say(f"{job.what} (attempt {job.attempt}): {outcome.kind} in "
             f"{time.perf_counter() - t0:.1f} s")
        conn.send(outcome)


_guard_fork_server()
