"""What every pipeline shares: the pass (the bound method and where masks go), the one hooks
context manager, the one sibling detector (`Readers`), capture of a block's inputs, the
step from one block to the next, statistics collection, and pruning a group of Linears."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.models.adapter import Adapter, Block
from harness.models.layout import linear_path, under
from harness.pruning.apply import apply_mask
from harness.pruning.pipelines.activations import Activations, Inputs
from harness.pruning.stats import InputStats
from harness.pruning.types import Target

Hook = Callable[[nn.Module, tuple, dict], Any]  # a forward pre-hook with keyword arguments
TargetOf = Callable[[str], Target]


class Stop(Exception):
    """Raised by a hook to end a forward once what it wanted is recorded."""


@dataclass
class Pass:
    """What every pipeline needs: the method (bound to its seed and options), the statistics
    it needs, whether Linears reading one input are pruned in one call (`stack`), where the
    masks go, and the progress bar."""

    fn: Callable
    needs: str | None
    stack: bool
    masks: MutableMapping[str, torch.Tensor]  # PackedMasks for an offloaded model
    bar: Any
    # a block's weights in place while the context runs (an offloaded model: Adapter.resident)
    resident: Callable[[nn.Module], AbstractContextManager] = lambda module: nullcontext()


@contextmanager
def hooks(pairs: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Forward pre-hooks `fn(module, args, kwargs)` on their modules while the block runs,
    removed however it ends (an exception, a `Stop`)."""
    handles = []
    try:
        for module, fn in pairs:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def reads(fn: Callable[[str, torch.Tensor], Any], name: str) -> Hook:
    """A pre-hook handing `name` and the module's input to fn."""

    def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        fn(name, args[0])

    return hook


class Readers:
    """The sibling detector: Linears that read one and the same tensor object (q, k, v; gate,
    up; a cross-attention's k and v, which read the encoder's states). Names are never
    guessed: a pre-hook reports each read to `see`, and the first Linear to read a tensor
    leads its readers. Only weak references are kept, so no activation outlives its forward
    (and a dead tensor's reused id is never mistaken for it)."""

    def __init__(self) -> None:
        self._first: dict[int, tuple[weakref.ref, str]] = {}

    def see(self, name: str, x: torch.Tensor) -> str:
        """The leader of x's readers: the first Linear that read x, else `name`."""
        got = self._first.get(id(x))
        if got is not None and got[0]() is x:
            return got[1]
        self._first[id(x)] = (weakref.ref(x), name)
        return name


class Statistics:
    """Input statistics of some Linears (by name), accumulated by pre-hooks (`hooks()`) over
    calibration forwards, on `device` (the model's: an offloaded Linear has no weights
    between its turns). Siblings (`Readers`) share one `InputStats`, so q, k and v cost one
    XᵀX: the leader adds, the others point at its object. The first forward decides who leads;
    a later one that disagrees is an error (the model's control flow changed)."""

    def __init__(self, linears: dict[str, nn.Linear], needs: str | None,
                 mask: Callable[[], torch.Tensor | None], device: torch.device):
        self.linears = linears
        self.stats = {rel: InputStats(lin.in_features, needs, device)
                      for rel, lin in linears.items()}
        self._mask = mask  # the current batch's attention mask where padding must not count
        self._readers = Readers()
        self._lead: dict[str, str] = {}

    def hooks(self) -> list[tuple[nn.Module, Hook]]:
        return [(lin, reads(self._see, rel)) for rel, lin in self.linears.items()]

    def _see(self, rel: str, x: torch.Tensor) -> None:
        lead = self._readers.see(rel, x)
        if self._lead.setdefault(rel, lead) != lead:
            raise RuntimeError(f"{rel} shares its input with {self._lead[rel]} in one batch "
                               f"and with {lead} in another")
        if lead == rel:
            self.stats[rel].add(x, real_tokens(x, self._mask()))
        else:
            self.stats[rel] = self.stats[lead]


def real_tokens(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Which of x's tokens count: for a language Linear's input laid out like the batch's
    text (batch, seq, cols), the attention mask (padding does not); otherwise None, all."""
    if attention_mask is not None and x.dim() == 3 and x.shape[:2] == attention_mask.shape:
        return attention_mask
    return None


def text_mask(batch: dict, role: str) -> torch.Tensor | None:
    """Padding positions matter for the language role only (vision tokens are never padded)."""
    return batch.get("attention_mask") if role == "language" else None


def target_of(targets: dict[str, Target], role: str) -> TargetOf:
    """A Linear's target: its own (keyed by its path: per-group or per-layer sparsity), else
    its role's."""
    return lambda name: targets.get(name, targets[role])


def full_names(block: Block) -> dict[str, str]:
    """A block's Linears: path in the block -> path in the model."""
    return {rel: linear_path(block.name, rel) for rel in Adapter.linears(block)}


def segments(adapter: Adapter, roles: Sequence[str]
             ) -> Iterator[tuple[str, list[Block], tuple]]:
    """(role, blocks, carry) for each layout path of each role, in execution order: one
    ModuleList of blocks, or one module, and what the layout says passes between its blocks
    besides the hidden state."""
    for role in roles:
        for path in adapter.layout.paths(role):
            blocks = [b for b in adapter.blocks(role) if in_segment(b, path)]
            yield role, blocks, adapter.layout.carry_for(path)


def in_segment(block: Block, path: str) -> bool:
    return under(block.name, path)


@torch.no_grad()
def capture(adapter: Adapter, module: nn.Module, batches: Sequence[dict]) -> Activations:
    """The (args, kwargs) `module` receives for each calibration batch: a pre-hook records
    them and stops the forward (the blocks before are already pruned, so the language blocks
    see the image tokens of the pruned vision tower). Held as `model.spill_activations`
    says (pipelines/activations.py)."""
    streamed = adapter.residency
    records = Activations() if streamed is None or streamed.spill is None else \
        Activations(streamed.work / "activations", streamed.spill)

    def record(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        records.append((args, kwargs))
        raise Stop

    with hooks([(module, record)]), adapter.keeping():
        for batch in batches:
            try:
                adapter.forward(batch)
            except Stop:
                pass
    if len(records) != len(batches):
        raise RuntimeError("the calibration forward did not reach the block being pruned")
    return records


def advance(inputs: Inputs, output: Any, carry) -> Inputs:
    """Next block's inputs: this block's output as hidden state, plus what the layout carries
    (T5's position biases)."""
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
def run_block(block: Block, inputs: Activations, carry) -> Activations:
    """The (pruned) block over every batch's inputs: the next block's inputs."""
    out = inputs.like()
    for a, k in inputs:
        out.append(advance((a, k), block.module(*a, **k), carry))
    return out


@torch.no_grad()
def prune_linear(lin: nn.Linear, name: str, stats: InputStats | None, target: Target,
                 fn: Callable, masks: dict) -> None:
    out = fn(lin.weight.data, stats, target, name)
    if out.weight is not None:  # SparseGPT's reconstruction
        lin.weight.data.copy_(out.weight)
    apply_mask(lin, out.mask)
    masks[name] = out.mask


@torch.no_grad()
def prune_group(group: list[tuple[str, nn.Linear]], stats: InputStats | None, target: Target,
                fn: Callable, masks: dict) -> list[str]:
    """Linears reading one input, pruned by one call on their weights stacked by rows (for
    methods whose rows are independent given the statistics, e.g. SparseGPT) when the target
    allows it (per row or N:M); otherwise only the first. Returns the names pruned."""
    if len(group) == 1 or not (target.scope == "row" or target.structured):
        name, lin = group[0]
        prune_linear(lin, name, stats, target, fn, masks)
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


def prune_readers(p: Pass, group: list[tuple[str, nn.Linear]], stats: InputStats | None,
                  target_of: TargetOf) -> None:
    """Prune Linears that read one input (or one Linear) from its statistics; with `stack`,
    those of one target in one call. A group never mixes targets."""
    left = list(group)
    while left:
        target = target_of(left[0][0])
        same = [(n, lin) for n, lin in left if target_of(n) == target] if p.stack \
            else left[:1]
        done = prune_group(same, stats, target, p.fn, p.masks)
        left = [(n, lin) for n, lin in left if n not in done]


def prune_block(p: Pass, block: Block, target_of: TargetOf,
                stats: dict[str, InputStats] | None) -> None:
    """Prune a block's Linears from statistics collected by `Statistics` (None: a method
    that needs none); siblings, which share one statistics object, together."""
    linears, names = Adapter.linears(block), full_names(block)
    groups: dict[object, list[str]] = {}  # one statistics object (or one Linear) -> readers
    for rel in linears:
        groups.setdefault(id(stats[rel]) if stats is not None else rel, []).append(rel)
    with p.resident(block.module):
        for rels in groups.values():
            prune_readers(p, [(names[r], linears[r]) for r in rels],
                          stats[rels[0]] if stats is not None else None, target_of)
