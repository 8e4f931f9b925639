"""propagation: dense. One pass of the unpruned model over the calibration batches collects
every Linear's statistics, then all are pruned: no Linear sees a pruned one (the paper's
recovery path did this; OWL's allocation reads the same pass, `statistics`).

Cost: one forward per batch. Memory: every Linear's statistics at once.

Sample grid snippet: `prune: {method: wanda, propagation: dense}`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from harness.models.adapter import Adapter, Block
from harness.pruning.pipelines.common import (
    Pass,
    Statistics,
    hooks,
    prune_block,
    target_of,
    text_mask,
)
from harness.pruning.stats import InputStats
from harness.pruning.types import Target


@torch.no_grad()
def statistics(adapter: Adapter, blocks: Sequence[Block], needs: str | None,
               batches: Sequence[dict]) -> dict[str, dict[str, InputStats]]:
    """One pass of the model over the batches with every block's Linears hooked: each
    block's input statistics, by block name, then by the Linear's path in the block."""
    current: dict[str, torch.Tensor | None] = {}
    stats = {b.name: Statistics(Adapter.linears(b), needs, functools.partial(current.get, b.role),
                                adapter.device) for b in blocks}
    roles = list(dict.fromkeys(b.role for b in blocks))
    with hooks(pair for st in stats.values() for pair in st.hooks()), adapter.keeping():
        for batch in batches:
            current.update({role: text_mask(batch, role) for role in roles})
            adapter.forward(batch)
    return {name: st.stats for name, st in stats.items()}


def run(p: Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
        batches: Sequence[dict]) -> None:
    blocks = [block for role in roles for block in adapter.blocks(role)]
    stats = statistics(adapter, blocks, p.needs, batches)
    for block in blocks:
        prune_block(p, block, target_of(targets, block.role), stats[block.name])
        p.bar.update()
