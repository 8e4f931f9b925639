"""propagation: blockwise. Block by block: each block's Linears are pruned from statistics of
the block run whole and unpruned over every calibration batch, so its later Linears see the
dense outputs of its earlier ones; then the pruned block's outputs feed the next block, so
blocks see the pruned blocks before them. SparseGPT's default (without `--true-sequential`).

For each segment of each role (a layout path: one ModuleList of blocks, or one module):
  1. capture the inputs of its first block for every calibration batch (`capture`);
  2. for each block: run it over the captured inputs with pre-hooks on its Linears collecting
     the method's statistics (`Statistics`: siblings share one object); prune its Linears;
     run it again, pruned, to produce the next block's inputs (hidden state, plus what the
     layout says is carried, e.g. T5's position biases).
Cost per block: two forwards. Memory: the captured inputs, one batch's forward, one block's
statistics.

Sample grid snippet: `prune: {method: wanda, propagation: blockwise}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.models.adapter import Adapter
from harness.pruning.pipelines.common import (
    Pass,
    Statistics,
    capture,
    hooks,
    prune_block,
    run_block,
    segments,
    target_of,
    text_mask,
)
from harness.pruning.types import Target


@torch.no_grad()
def run(p: Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
        batches: Sequence[dict]) -> None:
    current: list[torch.Tensor | None] = [None]  # the attention mask of the batch running

    def now() -> torch.Tensor | None:
        return current[0]

    for role, blocks, carry in segments(adapter, roles):
        text = [text_mask(b, role) for b in batches]
        inputs = capture(adapter, blocks[0].module, batches)
        for i, block in enumerate(blocks):
            with p.resident(block.module):  # offloaded: read once for all its forwards
                st = Statistics(Adapter.linears(block), p.needs, now, adapter.device)
                with hooks(st.hooks()):
                    for (args, kwargs), mask in zip(inputs, text, strict=True):
                        current[0] = mask
                        block.module(*args, **kwargs)
                prune_block(p, block, target_of(targets, role), st.stats)
                del st
                if i + 1 < len(blocks):
                    inputs = run_block(block, inputs, carry)
            p.bar.update()
