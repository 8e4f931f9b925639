"""Pipelines: how calibration data flows through the model while it is pruned, the prune
spec's `propagation`. A pipeline decides which inputs each Linear's statistics come from;
the method (the layer's math) is the same whichever runs.

| propagation | a Linear's statistics come from inputs with these already pruned |
| --- | --- |
| `sequential` (default) | every Linear that runs before it, in its block and before |
| `blockwise` | the blocks before its own; its own block runs dense |
| `dense` | nothing: the unpruned model |

The calibration batch size is a memory setting only: every pipeline sums each Linear's
statistics over all batches before pruning it, so 1 batch of 8 samples and 4 of 2 give the
same masks (`sequential` runs one batch as one forward of the model, several block by block;
on one batch both forms agree bit for bit). Up to float rounding, not bit for bit: the
model's own forward gives a sample's activations differing in the last bits in a batch of
another shape (BLAS blocks by shape), so the statistics differ by ~1e-7 and a weight whose
score sits that close to the threshold can flip; no accumulation order can undo that. On
shapes-llava, 1 vs 4 or 16 batches: Wanda and DSnoT masks identical under `sequential` and
`blockwise`, 2 of 4.9M entries differ under `dense`; SparseGPT, which carries a flipped
weight's error along its row, 0.04% (`blockwise`) to 0.3% (`sequential`). On the tiny test
models every mask agrees (tests/pruning/test_pipelines.py).

Each pipeline is `run(p, adapter, roles, targets, batches)`, one module each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.errors import unknown
from harness.models.adapter import Adapter
from harness.pruning.pipelines import blockwise, dense, sequential
from harness.pruning.pipelines.common import Pass
from harness.pruning.types import Target

Pipeline = Callable[[Pass, Adapter, list[str], dict[str, Target], Sequence[dict]], None]

PIPELINES: dict[str, Pipeline] = {
    "sequential": sequential.run,
    "blockwise": blockwise.run,
    "dense": dense.run,
}


def get(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise unknown("propagation", name, PIPELINES)
    return PIPELINES[name]
