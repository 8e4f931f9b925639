"""A competing process for the "loaded" half of a benchmark: a 2-thread torch matmul loop in
its own session, as another user's job on a shared machine would run."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

LOAD = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
        "while True:\n    a = (a @ a).tanh()\n")


@contextlib.contextmanager
def running() -> Iterator[None]:
    load = subprocess.Popen([sys.executable, "-c", LOAD], start_new_session=True)
    try:
        time.sleep(2)  # let it import torch and start spinning
        yield
    finally:
        load.kill()
        load.wait()
