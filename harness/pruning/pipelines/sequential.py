"""propagation: sequential (the default). Linear by Linear, in execution order: each Linear
is pruned from the inputs it receives with everything before it already pruned, the earlier
blocks (the language blocks read the image tokens of the pruned vision tower) and the earlier
Linears of its own block (o_proj reads the attention of the pruned q, k and v). SparseGPT
(arXiv 2301.00774) calls this "true sequential" and found it slightly better.

For each segment of each role (a layout path: one ModuleList of blocks, or one module):
  1. capture the inputs of its first block for every calibration batch (`capture`);
  2. for each block, until its Linears are all pruned: run it over every batch's inputs with
     pre-hooks on the Linears not yet pruned. The first of them to run leads; those reading
     the very same tensor join it (q, k, v: `Readers`); the first reading another tensor
     stops the forward. The group's statistics over all batches prune it, in one call with
     `stack`. A Linear the block never runs (BLIP-2's text FFN in the Q-Former) is pruned
     without statistics;
  3. run the pruned block to produce the next block's inputs (`advance`).
Cost per block: one partial forward per group of readers, plus one whole. Memory: the
captured inputs, one batch's forward, one statistics object.

With one calibration batch the same algorithm runs as one forward of the whole model
(`one_forward`, 2-3x faster on shapes-llava): a pre-hook prunes each Linear from the batch it
is about to receive, and execution order does the rest, with no capture and no carried
values. Siblings are pruned together there, found beforehand by a probe forward of one
sample (`siblings`). Both forms give the same masks and weights, bit for bit (a test runs
`block_by_block` on one batch beside `one_forward`), so the batch size stays a memory
setting: it picks how, never what.

Sample grid snippet: `prune: {method: sparsegpt, propagation: sequential}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness.models.adapter import Adapter, Block
from harness.pruning.pipelines.common import (
    Inputs,
    Pass,
    Readers,
    Stop,
    TargetOf,
    capture,
    full_names,
    hooks,
    prune_group,
    prune_readers,
    reads,
    real_tokens,
    run_block,
    segments,
    target_of,
    text_mask,
)
from harness.pruning.stats import InputStats
from harness.pruning.types import Target


def run(p: Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
        batches: Sequence[dict]) -> None:
    if len(batches) == 1:
        one_forward(p, adapter, roles, targets, batches[0])
    else:
        block_by_block(p, adapter, roles, targets, batches)


def block_by_block(p: Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
                   batches: Sequence[dict]) -> None:
    for role, blocks, carry in segments(adapter, roles):
        text = [text_mask(b, role) for b in batches]
        inputs = capture(adapter, blocks[0].module, batches)
        for i, block in enumerate(blocks):
            with p.resident(block.module):  # offloaded: read once, pruned, run, written
                _prune_in_order(p, block, inputs, text, target_of(targets, role))
                if i + 1 < len(blocks):
                    inputs = run_block(block, inputs, carry)
            p.bar.update()


def _prune_in_order(p: Pass, block: Block, inputs: Sequence[Inputs], text: list,
                    target_of: TargetOf) -> None:
    linears, names = Adapter.linears(block), full_names(block)
    while True:
        left = {rel: lin for rel, lin in linears.items() if names[rel] not in p.masks}
        if not left:
            return
        group, stats = _next_readers(p.needs, block, left, inputs, text)
        if not group:  # none of them runs: no statistics
            for rel, lin in left.items():
                prune_readers(p, [(names[rel], lin)], None, target_of)
            return
        prune_readers(p, [(names[r], left[r]) for r in group], stats, target_of)


@torch.no_grad()
def _next_readers(needs: str | None, block: Block, left: dict[str, nn.Linear],
                  inputs: Sequence[Inputs], text: list) -> tuple[list[str], InputStats | None]:
    """The first of `left` to run and the others reading its input, in the order they run,
    with that input's statistics over every batch."""
    group: list[str] | None = None
    stats = None
    for (args, kwargs), mask in zip(inputs, text, strict=True):
        names, x = _first_readers(block, left, args, kwargs)
        if group is None:
            group = names
        elif names != group:
            raise RuntimeError(f"{block.name}: {group} ran first in one calibration batch, "
                               f"{names} in another")
        if x is not None:
            if stats is None:
                lin = left[names[0]]
                stats = InputStats(lin.in_features, needs, lin.weight.device)
            stats.add(x, real_tokens(x, mask))
    return group or [], stats


def _first_readers(block: Block, left: dict[str, nn.Linear], args: tuple, kwargs: dict
                   ) -> tuple[list[str], torch.Tensor | None]:
    """Run the block on one batch until a Linear of `left` reads a tensor other than the first
    one read: the readers of that first tensor, and the tensor."""
    readers = Readers()
    seen: list[str] = []
    held: list[torch.Tensor] = []

    def see(rel: str, x: torch.Tensor) -> None:
        lead = readers.see(rel, x)
        if seen and (lead != seen[0] or rel in seen):
            raise Stop
        seen.append(rel)
        held[:1] = [x]

    with hooks((lin, reads(see, rel)) for rel, lin in left.items()):
        try:
            block.module(*args, **kwargs)
        except Stop:
            pass
    return seen, held[0] if held else None


@torch.no_grad()
def one_forward(p: Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
                batch: dict) -> None:
    """One forward of the whole model, each Linear pruned by a pre-hook from the batch it is
    about to receive. Readers of one tensor share its statistics; with `stack` and a per-row
    or N:M target they are pruned in one call, the groups found beforehand by `siblings`
    (a group may span blocks: a Q-Former's or a decoder's cross-attention k and v read the
    same encoder states in every layer; it never mixes targets)."""
    linears: dict[str, tuple[nn.Linear, Target, torch.Tensor | None]] = {}
    left: dict[str, int] = {}  # block name -> Linears not yet pruned, for the progress bar
    owner: dict[str, str] = {}
    for role in roles:
        for block in adapter.blocks(role):
            names = full_names(block)
            for rel, lin in Adapter.linears(block).items():
                name = names[rel]
                linears[name] = (lin, targets.get(name, targets[role]), text_mask(batch, role))
                owner[name] = block.name
                left[block.name] = left.get(block.name, 0) + 1
    groups = siblings(adapter, batch, {n: lin for n, (lin, _, _) in linears.items()}) \
        if p.stack else {}
    masks = p.masks
    readers = Readers()
    latest: list[tuple[str, InputStats]] = []  # the latest input's first reader, its statistics

    def prune_now(name: str, x: torch.Tensor | None) -> None:
        lin, target, mask = linears[name]
        lead = readers.see(name, x) if x is not None else name
        if latest and latest[0][0] == lead:  # readers of one tensor run in a row
            st = latest[0][1]
        else:
            st = InputStats(lin.in_features, p.needs, lin.weight.device)
            if x is not None:
                st.add(x, real_tokens(x, mask))
                latest[:] = [(lead, st)]
        group = [n for n in groups.get(name, [name])
                 if n in linears and n not in masks and linears[n][1] == target]
        for n in prune_group([(n, linears[n][0]) for n in group], st, target, p.fn, masks):
            left[owner[n]] -= 1
            if not left[owner[n]]:
                p.bar.update()

    def first_touch(name: str, x: torch.Tensor) -> None:
        if name not in masks:
            prune_now(name, x)

    with hooks((lin, reads(first_touch, name)) for name, (lin, _, _) in linears.items()):
        adapter.forward(batch)
    for name in linears:  # never ran (BLIP-2's text FFN in the Q-Former): no statistics
        if name not in masks:
            prune_now(name, None)


@torch.no_grad()
def siblings(adapter: Adapter, batch: dict, linears: dict[str, nn.Linear]
             ) -> dict[str, list[str]]:
    """Linears that read one and the same tensor (`Readers`), found by a forward of the
    batch's first sample: the first of each group to run -> the whole group, in order."""
    n = batch["input_ids"].shape[0]
    one = {k: v[:1] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
           for k, v in batch.items()}
    readers = Readers()
    groups: dict[str, list[str]] = {}

    def see(name: str, x: torch.Tensor) -> None:
        groups.setdefault(readers.see(name, x), []).append(name)

    with hooks((lin, reads(see, name)) for name, lin in linears.items()):
        adapter.forward(one)
    return groups
