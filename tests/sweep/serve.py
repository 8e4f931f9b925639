"""`vlmprune server` as the tests start it: on a free loopback port, over its own results
folder, ready when /health answers, killed with its process group at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# MLflow's start-up takes ~10 s on a quiet 2-core machine and far longer on a busy one: the
# deadline only keeps a server that never comes up from hanging the run
READY_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow's settings (a developer's tracking URI or
    auth variables), plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | extra


@contextmanager
def running(folder: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The server's URL, once it answers; `flags` go to `vlmprune server`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = folder.parent / f"server-{port}.log"
    with open(log_path, "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "harness.cli", "server", "--port", str(port),
                              *flags], env=clean_env(VLMPRUNE_RESULTS=str(folder), **(env or {})),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_S
            while not _healthy(uri):
                if p.poll() is not None:
                    pytest.fail(f"the server exited ({p.returncode}): "
                                f"{log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the tracking server did not answer in {READY_S} s: "
                                f"{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield uri
        finally:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False
