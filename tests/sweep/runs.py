"""Reading a sweep's cell runs back from MLflow, for the sweep tests."""

import os
import random
import signal
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.sweep.tracking import TAG_HASH, TAG_KIND, tracking_uri


def cell_runs(name: str = "smoke", status: str | None = None):
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name)
    flt = f"tags.`{TAG_KIND}` = 'cell'"
    if status:
        flt += f" and attributes.status = '{status}'"
    return client, client.search_runs([exp.experiment_id], filter_string=flt)


def metrics_by_hash(runs, times: bool = False) -> dict[str, dict[str, float]]:
    return {r.data.tags[TAG_HASH]: {k: v for k, v in r.data.metrics.items()
                                   if times or not k.startswith("time/")} for r in runs}


def kill_once_working(proc, results: Path, within: float) -> None:
    """SIGKILL the process group of `proc` at a random moment up to `within` seconds after its
    first prune stage starts being written (its folder appears in the cache): the kill
    lands in the middle of the work, wherever the draw puts it, without sleeping through the
    start-up first. The draw is seeded by the test process."""
    stages = results / "cache" / "prune"
    while proc.poll() is None and not (stages.is_dir() and any(stages.iterdir())):
        time.sleep(0.05)
    time.sleep(random.Random(os.getpid()).uniform(0, within))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
