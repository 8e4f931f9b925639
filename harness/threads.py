"""How many threads torch uses, and how its idle threads wait: chosen for a shared machine.

torch's CPU kernels run on an OpenMP team whose idle threads spin (busy-wait) between
parallel regions. Alone on a machine that is fast. When another process wants the same
cores, a spinning thread burns the time slice its partner needs to reach the barrier, and a
small model's evaluation, made of thousands of tiny parallel regions, collapses. Measured on
this 2-core machine (shapes-llava, full shapes suite; the competitor a 2-thread torch matmul
loop in another session, as another user's job would be):

| evaluation                                  | quiet        | competitor running |
| 2 threads, spinning (torch's default)       | 8.6-10.3 s   | 147-180 s          |
| 1 thread                                    | 10.7 s       | 15.9 s             |
| 2 threads, OMP_WAIT_POLICY=PASSIVE          | 11.5 s       | 13.3 s             |

Pruning (wanda / sparsegpt at 128 samples) behaves the same way: 0.82 / 1.57 s spinning and
1.18 / 2.33 s passive when quiet, 1.24 / 2.34 s passive under load. Passive waiting costs
15-45% on a quiet machine and saves a factor of ten or more on a busy one, so it is the
default: `configure()` sets OMP_WAIT_POLICY=PASSIVE before torch is imported unless the user
chose a policy (`OMP_WAIT_POLICY=ACTIVE` brings the quiet-machine speed back). The thread
count is the number of cores this process may run on, split between the workers of a pool;
`--threads N` or `VLMPRUNE_THREADS=N` sets it. A thread count never changes an answer: the
tests compare predictions at 1 and 2 threads. LAPACK's factorizations are the exception:
torch's CPU Cholesky and triangular inverse block their work by the thread count, so
SparseGPT's H⁻¹ factor came out different in its last bits at 1 and at 2 threads (on 37-42%
of its entries at 256 to 1024 columns), which moved masks at the margin: the paper study's
SparseGPT at 70% scored 94.2 at 2 threads and 94.5 at 1. They run under `one()`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from harness.errors import UserError


def configure() -> None:
    """Before torch is imported: idle OpenMP threads sleep instead of spinning."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def count(threads: int | None = None, workers: int = 1) -> int:
    """The intra-op thread count: `threads`, else VLMPRUNE_THREADS, else this process's
    cores divided among `workers`."""
    if threads is None:
        env = os.environ.get("VLMPRUNE_THREADS")
        if env:
            try:
                threads = int(env)
            except ValueError:
                threads = 0
            if threads < 1:
                raise UserError(f"VLMPRUNE_THREADS={env!r}: give a whole number of threads, "
                                "1 or more")
    elif threads < 1:
        raise UserError(f"--threads {threads}: give 1 or more")
    return threads if threads is not None else max(1, cores() // max(1, workers))


def apply(threads: int | None = None, workers: int = 1) -> int:
    """Set torch's intra-op threads by the policy; returns the count."""
    import torch

    n = count(threads, workers)
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def one() -> Iterator[None]:
    """torch's CPU kernels on one thread inside the block (a result that must not depend on
    how many cores the machine has); the count is restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
