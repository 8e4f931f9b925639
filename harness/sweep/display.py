"""One progress display for a sweep or a search; what the libraries print goes to a log file.

On a terminal: one bar (items done / total, the running item and its stage, elapsed, time
left). When stdout is not a terminal (CI, `| tee`, a log): one plain line per finished item
with its headline metric, nothing else. Either way, while the work runs, file descriptor 2
(stderr) points at `results/logs/<name>-<time>.log`: lmms-eval's and tqdm's bars,
transformers' and MLflow's INFO lines, C-level warnings all land there, whatever library
writes them and however it found stderr. The project's own warnings (a damaged stage set
aside, a report not written) still reach the user: a logging handler writes them to the
real stderr. `-v` (verbose) keeps everything on the terminal instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.paths import results_dir


class Display:
    def __init__(self, name: str, total: int, console: Console, what: str = "cells",
                 verbose: bool | None = None, bar: bool = True) -> None:
        self.name, self.total, self.console, self.what = name, total, console, what
        self.verbose = verbose if verbose is not None else \
            logging.getLogger().getEffectiveLevel() <= logging.INFO
        self.terminal = console.is_terminal and bar
        self.done = 0
        self.log_file: Path | None = None
        self._saved_fd: int | None = None
        self._handler: logging.StreamHandler | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Display:
        if not self.verbose:
            self._redirect()
        if self.terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=self.total)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._restore()
        if self.log_file is not None and kind is None:
            self.console.print(f"library output: {self.log_file}")

    def stage(self, label: str, stage: str) -> None:
        """The running item and what it is doing now."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=f"{label[:70]} [{stage}]")

    def finished(self, label: str, score: str, seconds: float) -> None:
        """One item finished (or failed: `score` says so)."""
        self.done += 1
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)
        else:
            self.console.print(f"[{self.done}/{self.total}] {label}: {score} ({seconds:.0f} s)",
                               highlight=False, soft_wrap=True)

    def _redirect(self) -> None:
        logs = results_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_file = logs / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        sys.stderr.flush()
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved_fd = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        # the project's warnings go to the real stderr; everything else to the log file
        real = os.fdopen(os.dup(self._saved_fd), "w", buffering=1)
        self._handler = logging.StreamHandler(real)
        self._handler.setLevel(logging.WARNING)
        self._handler.setFormatter(logging.Formatter("vlmprune: warning: %(message)s"))
        self._handler.addFilter(lambda r: r.name.startswith("harness"))
        logging.getLogger().addHandler(self._handler)

    def _restore(self) -> None:
        if self._saved_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.stream.close()
            self._handler = None
