"""Prune a model role by role, block by block, through its adapter.

propagation: sequential (default). With one calibration batch (the default), a single
forward of the whole model prunes each Linear in a pre-hook just before it runs (see
`_single_forward`). With several batches, for each role (vision, then bridge, then language)
and each of its segments (a layout path: one ModuleList of blocks, or one module):
  1. capture the inputs of the segment's first block: a forward pre-hook records its args
     and kwargs and stops the forward (the blocks before are already pruned, so the language
     blocks see the image tokens of the pruned vision tower);
  2. for each block: run it over the captured inputs with hooks on its Linears collecting the
     method's statistics; prune its Linears; run it again, pruned, to produce the inputs of
     the next block (hidden state, plus what the layout says is carried, e.g. T5's biases).
Only one block's statistics exist at a time.

propagation: dense. One pass of the dense model collects every Linear's statistics, then all
are pruned (the paper's recovery path did this).

Methods that need no statistics (magnitude, random) skip calibration entirely. Statistics
of the language role leave out padding positions (`real_tokens`): padding is not calibration
data, and a left-padded batch of short and long samples would otherwise weigh pad states.
"""

from __future__ import annotations

import functools
import logging
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from harness.models.adapter import ROLES, Adapter, Block
from harness.pruning import registry
from harness.pruning.apply import apply_mask
from harness.pruning.masks import Target
from harness.pruning.stats import InputStats

log = logging.getLogger(__name__)
Inputs = tuple[tuple, dict[str, Any]]


class _Stop(Exception):
    """Raised by the capture hook to end a forward once the wanted inputs are recorded."""


@dataclass
class _Pass:
    """What every way of pruning shares: the method (bound to its seed and options), the
    statistics it needs, whether Linears reading one input are pruned in one call (`stack`),
    where the masks go, and the progress bar."""

    fn: Callable
    needs: str | None
    stack: bool
    masks: dict[str, torch.Tensor]
    bar: Any


def prune(adapter: Adapter, targets: dict[str, Target], method: str,
          batches: Sequence[dict] = (), propagation: str = "sequential", seed: int = 0,
          options: dict | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """Prune in place; returns the keep masks by Linear path."""
    m = registry.get(method)
    fn = _bind(m.fn, seed, options or {})
    if m.needs and not batches:
        raise ValueError(f"method {method!r} needs calibration batches")
    roles = [r for r in ROLES if r in targets]
    total = sum(len(adapter.blocks(r)) for r in roles)
    bar = tqdm(total=total, desc=f"prune {method}", disable=not progress, unit="block")
    p = _Pass(fn, m.needs, m.stack, {}, bar)
    if m.needs is None:
        for role in roles:
            for block in adapter.blocks(role):
                _prune_block(p, block, _target_of(targets, role), None)
                bar.update()
    elif propagation == "dense":
        _dense(p, adapter, roles, targets, batches)
    elif len(batches) == 1:
        _single_forward(p, adapter, roles, targets, batches[0])
    else:
        for role in roles:
            for path in adapter.layout.paths(role):
                blocks = [b for b in adapter.blocks(role) if _in_segment(b, path)]
                _sequential(p, adapter, blocks, adapter.layout.carry_for(path),
                            _target_of(targets, role), batches,
                            [_text_mask(b, role) for b in batches])
    bar.close()
    return p.masks


def _bind(fn: Callable, seed: int, options: dict) -> Callable:
    def call(weight, stats, target, name):
        layer_seed = (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31
        return fn(weight, stats, target, seed=layer_seed, **options)

    return call


def _in_segment(block: Block, path: str) -> bool:
    return block.name == path or block.name.startswith(path + ".")


@torch.no_grad()
def _prune_linear(lin: nn.Linear, name: str, stats: InputStats | None, target: Target,
                  fn: Callable, masks: dict) -> None:
    out = fn(lin.weight.data, stats, target, name)
    if out.weight is not None:  # SparseGPT's reconstruction
        lin.weight.data.copy_(out.weight)
    apply_mask(lin, out.mask)
    masks[name] = out.mask


@torch.no_grad()
def _prune_group(group: list[tuple[str, nn.Linear]], stats: InputStats | None, target: Target,
                 fn: Callable, masks: dict) -> list[str]:
    """Linears reading one input, pruned by one call on their weights stacked by rows (for
    methods whose rows are independent given the statistics, e.g. SparseGPT) when the target
    allows it (per row or N:M); otherwise only the first. Returns the names pruned."""
    if len(group) == 1 or not (target.scope == "row" or target.structured):
        name, lin = group[0]
        _prune_linear(lin, name, stats, target, fn, masks)
        return [name]
    weight = torch.cat([lin.weight.data for _, lin in group])
    out = fn(weight, stats, target, group[0][0])
    sizes = [lin.out_features for _, lin in group]
    weights = out.weight.split(sizes) if out.weight is not None else [None] * len(group)
    for (name, lin), keep, w in zip(group, out.mask.split(sizes), weights, strict=True):
        if w is not None:
            lin.weight.data.copy_(w)
        keep = keep.clone()  # its own storage, so that it can be saved alone
        apply_mask(lin, keep)
        masks[name] = keep
    return [name for name, _ in group]


def siblings(adapter: Adapter, batch: dict, names: dict[str, nn.Linear]) -> dict[str, list[str]]:
    """Linears that read one and the same tensor (q, k, v; gate, up), found by a forward of
    the batch's first sample: the first of each group to run -> the whole group, in order."""
    n = batch["input_ids"].shape[0]
    one = {k: v[:1] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v
           for k, v in batch.items()}
    readers: dict[int, tuple[torch.Tensor, list[str]]] = {}

    def record(name: str, x: torch.Tensor) -> None:
        if id(x) in readers and readers[id(x)][0] is x:
            readers[id(x)][1].append(name)
        else:
            readers[id(x)] = (x, [name])

    hooks = [lin.register_forward_pre_hook(lambda mod, args, name=name: record(name, args[0]))
             for name, lin in names.items()]
    try:
        with torch.no_grad():
            adapter.forward(one)
    finally:
        for h in hooks:
            h.remove()
    return {group[0]: group for _, group in readers.values()}


def _target_of(targets: dict[str, Target], role: str) -> Callable[[str], Target]:
    """A Linear's target: its own (keyed by its path: per-group or per-layer sparsity), else
    its role's."""
    return lambda name: targets.get(name, targets[role])


def _prune_block(p: _Pass, block: Block, target_of: Callable[[str], Target],
                 stats: dict[str, InputStats] | None) -> None:
    """Prune a block's Linears; with `stack`, those sharing one statistics object (they read
    one tensor, see `_collect`) and one target in one call when the target is per row or
    N:M."""
    linears = Adapter.linears(block)
    names = {rel: f"{block.name}.{rel}" if rel else block.name for rel in linears}
    for rel in linears:
        if names[rel] in p.masks:
            continue
        st = stats[rel] if stats is not None else None
        target = target_of(names[rel])
        group = [r for r in linears if stats is not None and stats[r] is st
                 and names[r] not in p.masks and target_of(names[r]) == target] \
            if p.stack and st is not None else [rel]
        _prune_group([(names[r], linears[r]) for r in group], st, target, p.fn, p.masks)


def real_tokens(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Which of x's tokens count: for a language Linear's input laid out like the batch's
    text (batch, seq, cols), the attention mask (padding does not); otherwise None, all."""
    if attention_mask is not None and x.dim() == 3 and x.shape[:2] == attention_mask.shape:
        return attention_mask
    return None


def _text_mask(batch: dict, role: str) -> torch.Tensor | None:
    """Padding positions matter for the language role only (vision tokens are never padded)."""
    return batch.get("attention_mask") if role == "language" else None


def _collect(linears: dict[str, nn.Linear], needs: str | None,
             mask: Callable[[], torch.Tensor | None]) -> tuple[dict[str, InputStats], list]:
    """Forward hooks accumulating each Linear's input statistics. Linears that read one
    tensor (q, k, v; gate, up: they run in a row) share one `InputStats`, so its XᵀX is
    computed once; the first batch shows which, and every later batch must agree."""
    stats = {rel: InputStats(lin.in_features, needs, lin.weight.device)
             for rel, lin in linears.items()}
    alias: dict[str, str] = {}  # reader -> the Linear whose statistics it shares
    last: list = [lambda: None, ""]  # weak reference to the latest input, and its first reader

    def hook(rel: str, x: torch.Tensor) -> None:
        if last[0]() is x and last[1] != rel:
            if alias.get(rel) != last[1]:
                if stats[rel].tokens:
                    raise RuntimeError(f"{rel} read its own input before sharing {last[1]}'s")
                alias[rel], stats[rel] = last[1], stats[last[1]]
            return
        if rel in alias:
            raise RuntimeError(f"{rel} and {alias[rel]} read one tensor in one batch and "
                               "different ones in another")
        stats[rel].add(x, real_tokens(x, mask()))
        last[:] = [weakref.ref(x), rel]

    hooks = [lin.register_forward_hook(lambda mod, inp, out, rel=rel: hook(rel, inp[0]))
             for rel, lin in linears.items()]
    return stats, hooks


@torch.no_grad()
def capture(adapter: Adapter, module: nn.Module, batches: Sequence[dict]) -> list[Inputs]:
    """The (args, kwargs) `module` receives for each calibration batch."""
    records: list[Inputs] = []

    def hook(mod, args, kwargs):
        records.append((args, kwargs))
        raise _Stop

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                adapter.forward(batch)
            except _Stop:
                pass
    finally:
        handle.remove()
    if len(records) != len(batches):
        raise RuntimeError("the calibration forward did not reach the block being pruned")
    return records


def _advance(inputs: Inputs, output: Any, carry) -> Inputs:
    """Next block's inputs: this block's output as hidden state, plus what the layout carries."""
    args, kwargs = list(inputs[0]), dict(inputs[1])
    outs = output if isinstance(output, tuple) else (output,)
    if args:
        args[0] = outs[0]
    else:
        kwargs["hidden_states"] = outs[0]
    for out_idx, where in carry:
        if isinstance(where, int) and where < len(args):
            args[where] = outs[out_idx]
        else:
            kwargs[str(where)] = outs[out_idx]
    return tuple(args), kwargs


@torch.no_grad()
def _sequential(p: _Pass, adapter: Adapter, blocks: list[Block], carry,
                target_of: Callable[[str], Target], batches: Sequence[dict],
                text_masks: list) -> None:
    """Several calibration batches: per block, statistics from one dense pass of the block
    over all batches, prune, then the pruned block's outputs feed the next block."""
    inputs = capture(adapter, blocks[0].module, batches)
    current: list[torch.Tensor | None] = [None]
    for i, block in enumerate(blocks):
        stats, hooks = _collect(Adapter.linears(block), p.needs, lambda: current[0])
        try:
            for (args, kwargs), text_mask in zip(inputs, text_masks, strict=True):
                current[0] = text_mask
                block.module(*args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        _prune_block(p, block, target_of, stats)
        del stats
        if i + 1 < len(blocks):
            inputs = [_advance((a, k), block.module(*a, **k), carry) for a, k in inputs]
        p.bar.update()


@torch.no_grad()
def _single_forward(p: _Pass, adapter: Adapter, roles: list[str],
                    targets: dict[str, Target], batch: dict) -> None:
    """One calibration batch: one forward of the whole model, each Linear pruned by a
    pre-hook from the batch it is about to receive. Execution order makes this sequential
    propagation (the language blocks read the pruned vision tower's tokens), and within a
    block later Linears see the pruned outputs of earlier ones (SparseGPT's true-sequential
    mode). q, k and v read one tensor and share its statistics; with `stack` (a method whose
    rows are independent) and a per-row or N:M target, they are pruned in one call, the
    groups found beforehand by `siblings`."""
    linears: dict[str, tuple[nn.Linear, Target, torch.Tensor | None]] = {}
    left: dict[str, int] = {}  # block name -> Linears not yet pruned, for the progress bar
    owner: dict[str, str] = {}
    for role in roles:
        for block in adapter.blocks(role):
            for rel, lin in Adapter.linears(block).items():
                name = f"{block.name}.{rel}" if rel else block.name
                linears[name] = (lin, targets.get(name, targets[role]), _text_mask(batch, role))
                owner[name] = block.name
                left[block.name] = left.get(block.name, 0) + 1
    groups = siblings(adapter, batch, {n: lin for n, (lin, _, _) in linears.items()}) \
        if p.stack else {}
    masks = p.masks
    last: list[tuple[torch.Tensor, InputStats]] = []  # the latest input and its statistics

    def prune_now(name: str, x: torch.Tensor | None) -> None:
        lin, target, text_mask = linears[name]
        if x is not None and last and last[0][0] is x:  # readers of one tensor run in a row
            st = last[0][1]
        else:
            st = InputStats(lin.in_features, p.needs, lin.weight.device)
            if x is not None:
                st.add(x, real_tokens(x, text_mask))
                last[:] = [(x, st)]
        # a group may span blocks (a Q-Former's or a decoder's cross-attention k and v read
        # the same encoder states in every layer); it never mixes targets
        group = [n for n in groups.get(name, [name])
                 if n in linears and n not in masks and linears[n][1] == target]
        for n in _prune_group([(n, linears[n][0]) for n in group], st, target, p.fn, masks):
            left[owner[n]] -= 1
            if not left[owner[n]]:
                p.bar.update()

    hooks = [lin.register_forward_pre_hook(
        lambda mod, args, name=name: None if name in masks else prune_now(name, args[0]))
        for name, (lin, _, _) in linears.items()]
    try:
        adapter.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    for name in linears:  # never ran (BLIP-2's text FFN in the Q-Former): no statistics
        if name not in masks:
            prune_now(name, None)


@torch.no_grad()
def dense_statistics(adapter: Adapter, blocks: Sequence[Block], needs: str,
                     batches: Sequence[dict]) -> dict[str, dict[str, InputStats]]:
    """One pass of the unpruned model over the batches with every block's Linears hooked:
    each block's input statistics, by block name, then by the Linear's path in the block."""
    current: dict[str, torch.Tensor | None] = {}
    out, hooks = {}, []
    for block in blocks:
        out[block.name], h = _collect(Adapter.linears(block), needs,
                                      functools.partial(current.get, block.role))
        hooks += h
    roles = list(dict.fromkeys(b.role for b in blocks))
    try:
        for batch in batches:
            current.update({role: _text_mask(batch, role) for role in roles})
            adapter.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def _dense(p: _Pass, adapter: Adapter, roles: list[str], targets: dict[str, Target],
           batches: Sequence[dict]) -> None:
    blocks = [block for role in roles for block in adapter.blocks(role)]
    stats = dense_statistics(adapter, blocks, p.needs, batches)
    for block in blocks:
        _prune_block(p, block, _target_of(targets, block.role), stats[block.name])
        p.bar.update()
