"""Prune a model role by role, block by block, through its adapter: `prune` binds the method
to its seed and options and hands the model to the pipeline the spec's `propagation` names
(`pipelines/`: sequential, blockwise, dense), which decides which inputs each Linear's
statistics come from. Methods that need no statistics (magnitude, random) skip calibration
and every pipeline. Statistics of the language role leave out padding positions
(`real_tokens`): padding is not calibration data, and a left-padded batch of short and long
samples would otherwise weigh pad states.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, MutableMapping, Sequence

import torch
from tqdm import tqdm

from harness.models.adapter import ROLES, Adapter
from harness.pruning import pipelines, registry
from harness.pruning.persist import PackedMasks
from harness.pruning.pipelines.common import Pass, prune_block, target_of
from harness.pruning.types import Target


def prune(adapter: Adapter, targets: dict[str, Target], method: str,
          batches: Sequence[dict] = (), propagation: str = "sequential", seed: int = 0,
          options: dict | None = None, progress: bool = True
          ) -> MutableMapping[str, torch.Tensor]:
    """Prune in place; returns the keep masks by Linear path."""
    m = registry.get(method)
    run = pipelines.get(propagation)
    if m.needs and not batches:
        raise ValueError(f"method {method!r} needs calibration batches")
    roles = [r for r in ROLES if r in targets]
    total = sum(len(adapter.blocks(r)) for r in roles)
    bar = tqdm(total=total, desc=f"prune {method}", disable=not progress, unit="block")
    # an offloaded model's masks are held packed (a bool mask is a byte per weight), and on
    # disk beside its shards when it is offloaded there
    streamed = adapter.residency
    masks: MutableMapping[str, torch.Tensor] = {} if streamed is None else \
        PackedMasks(streamed.work if streamed.mode == "disk" else None)
    p = Pass(_bind(m.fn, seed, options or {}), m.needs, m.stack, masks, bar, adapter.resident)
    if m.needs is None:
        for role in roles:
            for block in adapter.blocks(role):
                prune_block(p, block, target_of(targets, role), None)
                bar.update()
    else:
        run(p, adapter, roles, targets, batches)
    bar.close()
    return p.masks


def _bind(fn: Callable, seed: int, options: dict) -> Callable:
    def call(weight, stats, target, name):
        layer_seed = (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31
        return fn(weight, stats, target, seed=layer_seed, **options)

    return call
