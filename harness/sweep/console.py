"""The terminal of a sweep or a search: one rich console, and the libraries kept quiet so that
the sweep's display (display.py) is the only progress shown."""

from __future__ import annotations

import logging

from rich.console import Console

console = Console(width=140)


def quiet_libraries() -> None:
    """One progress display: the sweep's (display.py). Library bars off where a switch
    exists (transformers' here, tqdm's by TQDM_DISABLE, which the CLI sets before tqdm is
    imported); those that ignore it (lmms-eval's "Postprocessing") go to the log file."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
