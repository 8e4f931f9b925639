"""Signals and processes, with real processes and real signals: Ctrl-C stops a sweep (exit
130, its run KILLED, nothing lost on resume); a pool survives the loss of its fork server;
nothing a pool starts outlives a sweep killed while it starts."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.sweep.tracking import TAG_KIND, tracking_uri
from tests.sweep.runs import cell_runs, metrics_by_hash

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 600  # seconds: generous, for a busy machine; never a limit on how fast it is


class Sweep:
    """`vlmprune sweep smoke ...` in its own session, its stdout read line by line."""

    def __init__(self, results: Path, *args: str, ignore_sigint: bool = False) -> None:
        env = {**os.environ, "VLMPRUNE_RESULTS": str(results), "TQDM_DISABLE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        # as a script's background job starts it (`vlmprune sweep ... &`): SIGINT ignored
        pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "sweep", "smoke", "--no-report", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, preexec_fn=pre)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, prefix: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.out.append(line)
            if line.startswith(prefix):
                return line
        self.proc.kill()
        pytest.fail(f"no line '{prefix}' from the sweep: {''.join(self.out)[-2000:]}"
                    f"{self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")

    def finish(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=DEADLINE)
        return self.proc.returncode, err

    def session(self) -> list[psutil.Process]:
        """The processes of the sweep's session still running (zombies are gone)."""
        out = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.proc.pid and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return out

    def wait_session_gone(self) -> list[psutil.Process]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.session():
            time.sleep(0.2)
        return self.session()

    def cleanup(self) -> None:
        for p in self.session():
            with_suppress(p.send_signal, signal.SIGKILL)
            with_suppress(p.send_signal, signal.SIGCONT)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def with_suppress(fn, *args) -> None:
    try:
        fn(*args)
    except (psutil.Error, ProcessLookupError):
        pass


def sweep_runs(status: str | None = None):
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("smoke")
    flt = f"tags.`{TAG_KIND}` = 'sweep'"
    return client.search_runs([exp.experiment_id], filter_string=flt + (
        f" and attributes.status = '{status}'" if status else ""))


def check_interrupted(results: Path, code: int, err: str) -> None:
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("vlmprune: interrupted"), err[-3000:]
    assert "again" in lines[-1]  # how to resume
    (run,) = sweep_runs()
    assert run.info.status == "KILLED"  # what was running, marked at once
    _, running = cell_runs(status="RUNNING")
    assert not running
    _, done = cell_runs(status="FINISHED")
    assert 1 <= len(done) < 4  # stopped: the first cell was logged, not the last


def check_resumed(reference) -> None:
    assert main(["sweep", "smoke", "--no-report"]) == 0
    _, finished = cell_runs(status="FINISHED")
    assert len(finished) == len(reference[0])  # one FINISHED run per cell, none twice
    assert metrics_by_hash(finished) == reference[0]
    assert [r.info.status for r in sweep_runs()].count("FINISHED") == 1


def test_sigint_stops_a_local_sweep_even_when_started_with_it_ignored(reference, results):
    """The reported case: a sweep started as a script's background job inherits SIGINT
    ignored, and ran on to exit 0. Now it stops with 130, its run KILLED, and resumes."""
    sweep = Sweep(results, ignore_sigint=True)
    try:
        sweep.wait_for_line("[1/4]")  # the first cell is finished and logged
        sweep.proc.send_signal(signal.SIGINT)
        code, err = sweep.finish()
    finally:
        sweep.cleanup()
    check_interrupted(results, code, err)
    check_resumed(reference)


def test_ctrl_c_stops_a_pool_sweep_and_its_workers(reference, results):
    """Ctrl-C on a terminal signals the whole foreground process group: the sweep, its
    workers, the fork server. The sweep stops (130, KILLED), no worker or helper survives."""
    sweep = Sweep(results, "--executor", "pool", "--workers", "2")
    try:
        sweep.wait_for_line("[1/4]")
        os.killpg(sweep.proc.pid, signal.SIGINT)
        code, err = sweep.finish()
        left = sweep.wait_session_gone()
    finally:
        sweep.cleanup()
    check_interrupted(results, code, err)
    assert not left, [p.cmdline() for p in left]
    logs = "".join(p.read_text() for p in (results / "logs").glob("smoke-*-worker*.log"))
    assert "KeyboardInterrupt" not in logs  # the workers left the stopping to the sweep
    check_resumed(reference)


def fork_server(sweep: Sweep) -> psutil.Process:
    """The sweep's fork server, as soon as it exists."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and sweep.proc.poll() is None:
        for p in sweep.session():
            try:
                if any("multiprocessing.forkserver" in a for a in p.cmdline()):
                    return p
            except psutil.Error:
                continue
        time.sleep(0.05)
    pytest.fail("no fork server was seen")


def importing_torch(server: psutil.Process) -> None:
    """Wait until the fork server imports torch: the pool has asked it for its workers by
    then (the asks wait for its imports)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and server.is_running():
        try:
            if "libtorch" in Path(f"/proc/{server.pid}/maps").read_text():
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail("the fork server was not seen importing torch")


def test_fork_server_killed_while_the_pool_starts_costs_an_attempt(reference, results):
    """SIGKILL the fork server while the pool waits for its workers: they are lost workers
    (their cells run again, on workers of a new server), not an EOFError ending the sweep."""
    sweep = Sweep(results, "--executor", "pool", "--workers", "2")
    try:
        server = fork_server(sweep)
        importing_torch(server)
        server.kill()
        code, err = sweep.finish()
    finally:
        sweep.cleanup()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "EOFError" not in err, err[-3000:]
    assert "fork server" in err and "running it again" in err, err[-3000:]
    runs: dict[str, list] = {}
    for r in cell_runs()[1]:
        runs.setdefault(r.data.tags["vlmprune.cell_hash"], []).append(r)
    assert set(runs) == set(reference[0]) and all(len(v) == 1 for v in runs.values())
    _, finished = cell_runs(status="FINISHED")
    assert metrics_by_hash(finished) == reference[0]


def test_sweep_killed_while_its_pool_starts_leaves_nothing_running(results):
    """SIGKILL the sweep while its fork server is still importing torch (frozen there, as a
    loaded machine would keep it): the server and the resource tracker end with the sweep."""
    sweep = Sweep(results, "--executor", "pool", "--workers", "2")
    try:
        server = fork_server(sweep)
        importing_torch(server)
        server.suspend()  # SIGSTOP: still importing when the sweep dies
        helpers = [p for p in sweep.session() if p.pid != sweep.proc.pid]
        assert any("resource_tracker" in " ".join(p.cmdline()) for p in helpers)
        sweep.proc.kill()
        sweep.proc.wait()
        left = sweep.wait_session_gone()
        assert not left, [" ".join(p.cmdline())[:100] for p in left]
    finally:
        sweep.cleanup()
