"""`--executor ray`: the cells on a Ray cluster (`pip install -e .[ray]`; imported only here).

`ray.init(address=...)` joins a running cluster (`--ray-address`, or RAY_ADDRESS), or starts
a local one. Each worker is a Ray actor holding one GPU where the cluster has GPUs (else one
CPU slot; its torch threads come from the thread policy). Actors rather than one task per
group: the sweep hands an actor one cell at a time, so it knows which cell a lost actor was
on (retried once, then failed: dispatch.py), and a warm actor keeps torch, transformers and
lmms-eval imported from one cell to the next.

Every node must have the project installed (same versions) and should see the results folder
of the driver at the same path (a shared filesystem): stages cached there are then shared by
every node. A node that cannot see it writes the folder locally and computes its stages
itself; the results come back to the driver either way, and only the driver writes to MLflow
(a tracking server, `vlmprune server`, lets several drivers share one store).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from harness import threads
from harness.errors import UserError, first_line
from harness.sweep import dispatch
from harness.sweep.dispatch import Job, Outcome
from harness.sweep.worker import worker_setup

if TYPE_CHECKING:
    from harness.sweep.executors import Dispatch

log = logging.getLogger(__name__)


def start(how: Dispatch, tag: str) -> RayWorkers:
    """`--executor ray` (the entry in executors.py); Ray names its own logs, not after `tag`."""
    return RayWorkers(how.workers, how.ray_address, how.threads)


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install "
                        "ray) in this environment and on every node") from None
    return ray


class _Worker:
    """The actor: set up as every worker is (worker.py), then cells."""

    def __init__(self) -> None:
        worker_setup()

    def run(self, job: Job) -> Outcome:
        return job.run()


class RayWorkers:
    def __init__(self, workers: int | None = None, address: str | None = None,
                 thread_count: int | None = None) -> None:
        ray = _ray()
        self.ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.threads = threads.count(thread_count, workers or 2)
        env = dispatch.worker_env(self.threads)
        self.owned = not ray.is_initialized()  # a caller's own ray.init() is used as it is
        if self.owned:
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                            "logging_level": logging.WARNING}
            if address is None:  # a local cluster: this machine's cores, a small object store
                kwargs |= {"num_cpus": threads.cores(), "object_store_memory": 256 * 2**20}
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = first_line(e, type(e).__name__)
                raise UserError(f"--ray-address {address}: cannot join the Ray cluster "
                                f"({first}); start it with `ray start --head`, or leave the "
                                "flag out for a local one") from None
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        cpus = int(res.get("CPU", 0))
        self.size = dispatch.worker_count(workers, self.gpus)
        slots = self.gpus if self.gpus else cpus
        if self.size > slots:
            self.close()
            unit = "GPUs" if self.gpus else "CPUs"
            raise UserError(f"--workers {self.size}: the Ray cluster has {slots} {unit}; "
                            f"give at most {slots}")
        self.actor_class = ray.remote(num_cpus=0 if self.gpus else 1,
                                      num_gpus=1 if self.gpus else 0,
                                      max_restarts=0, max_task_retries=0)(_Worker).options(
            runtime_env={"env_vars": env})
        self.actors = [self.actor_class.remote() for _ in range(self.size)]
        self.pending: dict = {}  # object ref -> slot

    def describe(self) -> str:
        where = (f"{self.gpus} GPUs" if self.gpus
                 else f"CPU, {self.threads} thread{'s' * (self.threads > 1)} each")
        return f"Ray cluster, {self.size} workers ({where})"

    def submit(self, slot: int, job: Job) -> None:
        self.pending[self.actors[slot].run.remote(job)] = slot

    def wait(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        ray = self.ray
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            slot = self.pending.pop(ref)
            try:
                out.append((slot, ray.get(ref)))
            except ray.exceptions.RayActorError as e:
                reason = first_line(e, "actor died")
                out.append((slot, Outcome("died", failure=f"Ray actor lost ({reason[:160]})")))
            except ray.exceptions.RayError as e:
                first = first_line(e, type(e).__name__)
                out.append((slot, Outcome("failed", failure=f"{type(e).__name__}: {first}")))
        return out

    def restart(self, slot: int) -> None:
        self.ray.kill(self.actors[slot])
        self.actors[slot] = self.actor_class.remote()

    def retire(self, slot: int) -> None:
        self.ray.kill(self.actors[slot])

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.owned:
            self.ray.shutdown()
