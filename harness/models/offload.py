"""`model.offload`: prune a model larger than memory, one block resident at a time.

The model is built on the meta device: its parameters have shapes and no storage; its
buffers are real (the model computes them, or they are read from its files). Its
parameters fall into *units*: each block of each role (`Adapter.blocks`), and every other
module holding parameters of its own (embeddings, norms, the bridge, the head). A unit is
*resident* while it runs (a forward pre-hook acquires it, a forward hook that runs however
the forward ends releases it) and while a pipeline holds it (`resident(module)`: pruning a
block, reading its weights). Units count who holds them; the last release lets a unit go.

- `disk`: acquiring reads the unit's tensors from the model folder's safetensors files
  (memory-mapped, in the model's dtype, onto the compute device); letting go of a unit
  whose tensors changed (pruning masks them in place: a tensor's version counter moves)
  writes them to a shard of the work folder first, and later acquisitions read that copy.
  `save` copies the tensors never written and writes the shards' index: an ordinary
  safetensors folder.
- `cpu`: the model sits in CPU memory; a unit moves to the compute device (a GPU) while
  resident and its changes are copied back. On a CPU-only machine nothing moves.

What passes between blocks (the captured calibration inputs) stays where the pipeline keeps
it, on the compute device's host memory when that is the CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from harness.errors import UserError

INDEX = "model.safetensors.index.json"
TRIM_EVERY = 32 * 2**20  # bytes let go between two trims of the heap (`_trimmer`)
KEEP_MAX = 256 * 2**20  # bytes `keeping` may hold beyond the estimate, at most
SINGLE = "model.safetensors"


@dataclass
class Param:
    """One parameter (tied ones are one): its name in the files, its meta stand-in, the
    modules holding it, and while resident its live tensor and how many hold it."""

    key: str
    meta: nn.Parameter
    owners: list[tuple[nn.Module, str]]
    home: torch.Tensor | None = None  # `cpu` offload: the tensor in CPU memory
    live: nn.Parameter | None = None
    holders: int = 0
    version: int = 0


@dataclass
class Unit:
    """A block, or a module with parameters of its own: what is resident together."""

    name: str
    module: nn.Module
    params: list[Param]
    own: list[Param]  # the ones whose first owner is here: written with this unit
    shard: str
    holders: int = 0


@dataclass
class Streamed:
    """The model's units and where their tensors are (module docstring)."""

    mode: str  # disk | cpu
    device: torch.device
    dtype: torch.dtype
    units: list[Unit]
    files: dict[str, tuple[Path, str]]  # name -> the source file holding it, its key there
    work: Path
    written: dict[str, Path] = field(default_factory=dict)  # name -> the shard holding it
    peak: int = 0  # bytes resident at most (parameters)
    trim: Callable[[], object] = lambda: None  # memory freed returned to the system
    keep: int = 0  # bytes `keeping` may hold (the prune stage sets it from the memory spare)
    spill: int | None = None  # calibration inputs held past this are written (activations.py)
    _resident: int = 0
    _held: list[Unit] | None = None  # units `keeping` holds
    _kept: int = 0
    _freed: int = 0  # bytes let go since the last trim
    _of: dict[int, Unit] = field(default_factory=dict)
    _handles: list = field(default_factory=list)

    def attach(self) -> None:
        """Hooks that make a unit resident while it runs."""
        for u in self.units:
            self._of[id(u.module)] = u
            self._handles.append(u.module.register_forward_pre_hook(
                lambda mod, args, u=u: self.acquire(u)))
            self._handles.append(u.module.register_forward_hook(
                lambda mod, args, out, u=u: self.release(u), always_call=True))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextmanager
    def resident(self, module: nn.Module) -> Iterator[None]:
        """`module` (a unit) resident while the context runs."""
        u = self._of.get(id(module))
        if u is None:
            raise RuntimeError(f"{type(module).__name__} is not a unit of the offloaded model")
        self.acquire(u)
        try:
            yield
        finally:
            self.release(u)

    def acquire(self, u: Unit) -> None:
        u.holders += 1
        if u.holders > 1:
            return
        load = [p for p in u.params if p.holders == 0]
        for p, t in zip(load, self._read(load), strict=True):
            p.live = nn.Parameter(t, requires_grad=False)
            p.version = p.live._version
            for owner, leaf in p.owners:
                owner._parameters[leaf] = p.live
            self._resident += t.numel() * t.element_size()
        for p in u.params:
            p.holders += 1
        self.peak = max(self.peak, self._resident)
        if self._held is not None and load:
            size = sum(p.meta.numel() for p in load) * self.dtype.itemsize
            if self._kept + size <= self.keep:  # first come, kept: a scan never thrashes
                u.holders += 1
                self._held.append(u)
                self._kept += size

    @contextmanager
    def keeping(self) -> Iterator[None]:
        """Units read while the context runs stay resident until it ends, up to `keep`
        bytes: a capture running the same modules once per calibration batch reads them
        once (the vision tower, before the language blocks' inputs)."""
        if self._held is not None or not self.keep:
            yield
            return
        self._held, self._kept = [], 0
        try:
            yield
        finally:
            held, self._held, self._kept = self._held, None, 0
            for u in reversed(held):
                self.release(u)

    def release(self, u: Unit) -> None:
        u.holders -= 1
        if u.holders > 0:
            return
        if any(p.live is not None and p.live._version != p.version for p in u.params):
            self._write(u)
        for p in u.params:
            p.holders -= 1
            if p.holders:
                continue
            assert p.live is not None
            if self.mode == "cpu" and p.home is not None and p.live._version != p.version:
                p.home.copy_(p.live.detach())
            size = p.live.numel() * p.live.element_size()
            self._resident -= size
            for owner, leaf in p.owners:
                owner._parameters[leaf] = p.meta
            p.live = None
            self._freed += size
        if self._freed >= TRIM_EVERY:  # not per small unit: a forward lets go of many
            self.trim()
            self._freed = 0

    def _read(self, params: Sequence[Param], source: bool = False) -> list[torch.Tensor]:
        """The params' tensors on the compute device: their latest copy, or with `source`
        the one the model's own files hold."""
        if self.mode == "cpu" and not source:
            return [p.home.to(self.device) for p in params]  # type: ignore[union-attr]
        by_file: dict[Path, list[int]] = {}
        for i, p in enumerate(params):
            latest = None if source else self.written.get(p.key)
            by_file.setdefault(latest or self.files[p.key][0], []).append(i)
        out: list[torch.Tensor | None] = [None] * len(params)
        for file, idx in by_file.items():
            with safe_open(str(file), "pt", device="cpu") as f:
                for i in idx:
                    t = f.get_tensor(self.files[params[i].key][1])
                    dtype = self.dtype if t.is_floating_point() else t.dtype
                    out[i] = t.to(self.device, dtype, copy=True)
        return out

    def _write(self, u: Unit) -> None:
        """The unit's own tensors (resident: it is being let go) to its shard."""
        if self.mode == "cpu" or not u.own:
            return
        self._save(u, [p.live for p in u.own])

    def _save(self, u: Unit, tensors: Sequence[torch.Tensor]) -> None:
        path = self.work / u.shard
        tmp = path.with_suffix(".tmp")
        save_file({self.files[p.key][1]: t.detach().cpu().contiguous()
                   for p, t in zip(u.own, tensors, strict=True)},
                  str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)  # an acquisition reading the old one has its own copy
        for p in u.own:
            self.written[p.key] = path

    def rewritten(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pruned Linears (masks by Linear path) whose kept weights the method changed
        (SparseGPT): their weights, by path; found as the prune stage finds them in memory,
        weight != dense weight * mask, the dense one read again from the source."""
        weights = {f"{path}.weight": path for path in masks}
        out: dict[str, torch.Tensor] = {}
        for u in self.units:
            mine = [p for p in u.own if p.key in weights]
            if not mine:
                continue
            self.acquire(u)
            try:
                for p, dense in zip(mine, self._read(mine, source=True), strict=True):
                    path = weights[p.key]
                    w = p.live.detach()  # type: ignore[union-attr]
                    if not torch.equal(w, dense * masks[path].to(w.device, w.dtype)):
                        out[path] = w.cpu().contiguous()
            finally:
                self.release(u)
        return out

    def close(self) -> None:
        """Hooks off; `cpu`: each parameter back in its module, in CPU memory (the model
        is an ordinary one again)."""
        self.detach()
        if self.mode == "cpu":
            for u in self.units:
                for p in u.params:
                    for owner, leaf in p.owners:
                        owner._parameters[leaf] = nn.Parameter(p.home, requires_grad=False)

    def save(self, out: Path) -> None:
        """`disk`: the model's weights as a sharded safetensors folder in `out`, the shards
        written while pruning and the units never changed copied from the source, one
        unit at a time."""
        out.mkdir(parents=True, exist_ok=True)
        weight_map, total = {}, 0
        for u in self.units:
            if not u.own:
                continue
            if any(p.key not in self.written for p in u.own):
                self._save(u, self._read(u.own))
            if (self.work / u.shard).resolve() != (out / u.shard).resolve():
                os.replace(self.work / u.shard, out / u.shard)
            for p in u.own:
                weight_map[self.files[p.key][1]] = u.shard
                total += p.meta.numel() * torch.empty((), dtype=self.dtype).element_size() \
                    if p.meta.is_floating_point() else p.meta.numel() * p.meta.element_size()
        (out / INDEX).write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
            indent=2) + "\n")


def weight_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters (tied ones once), as built (the meta device too)."""
    seen = {id(p): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in seen.values())


def available_memory() -> int:
    """Bytes this process may still use: the machine's available memory, or less where its
    cgroup's limit says so (a container's, `systemd-run -p MemoryMax`, a benchmark's)."""
    free = psutil.virtual_memory().available
    for limit, used in _cgroup_files():
        try:
            cap = limit.read_text().strip()
            if cap != "max" and int(cap) < 2**60:
                free = min(free, int(cap) - int(used.read_text()))
        except (OSError, ValueError):
            continue
    return free


def _cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's memory cgroup and its parents (v1 and v2)."""
    out: list[tuple[Path, Path]] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, where = line.split(":", 2)
        root, files = (Path("/sys/fs/cgroup/memory"), ("memory.limit_in_bytes",
                                                        "memory.usage_in_bytes")) \
            if "memory" in controllers.split(",") else \
            (Path("/sys/fs/cgroup"), ("memory.max", "memory.current")) if controllers == "" \
            else (None, ("", ""))
        if root is None:
            continue
        here = root / where.lstrip("/")
        while True:
            out.append((here / files[0], here / files[1]))
            if here == root:
                break
            here = here.parent
    return out


@dataclass(frozen=True)
class Estimate:
    """The expected peak of pruning one block at a time, in bytes, by what holds it."""

    block: int  # the largest unit's weights
    activations: int  # the calibration inputs of a segment's block, and the next block's
    forward: int  # one batch through one block
    statistics: int  # the method's statistics of one input (SparseGPT's Hessian and its work)

    @property
    def total(self) -> int:
        return self.block + self.activations + self.forward + self.statistics

    def line(self) -> str:
        g = 2**30
        return (f"expected peak {self.total / g:.2f} GiB: largest block {self.block / g:.2f} + "
                f"calibration activations {self.activations / g:.2f} + one batch's forward "
                f"{self.forward / g:.2f} + statistics {self.statistics / g:.2f} GiB")


def unit_sizes(model: nn.Module, blocks: Sequence[nn.Module]) -> list[int]:
    """Parameters of each unit `stream` would make: each block, and each other module with
    parameters of its own (the model may be on the meta device)."""
    inside = {id(p) for m in blocks for p in m.parameters()}
    sizes = [sum(p.numel() for p in m.parameters()) for m in blocks]
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if id(p) not in inside]
        if own:
            sizes.append(sum(p.numel() for p in own))
    return sizes


def estimate(units: Sequence[int], dtype: torch.dtype,
             blocks_by_role: dict[str, list[nn.Module]], batches: Sequence[dict],
             needs: str | None, hidden: dict[str, tuple[int, int]],
             spill: int | None = None) -> Estimate:
    """What pruning an offloaded model holds at most: its largest unit (`units`: each
    one's parameters), a segment's captured calibration inputs twice (a block's inputs and
    the next one's), one batch through the widest block, and the statistics of the widest
    input. `hidden`: per role, (tokens per sample, width) of its blocks' hidden states.
    With `spill`, the captured inputs held in memory stop at it (plus one batch), twice."""
    size = torch.empty((), dtype=dtype).element_size()
    block = max(units, default=0) * size
    samples = sum(int(next(iter(b.values())).shape[0]) for b in batches) if batches else 0
    biggest = max((int(next(iter(b.values())).shape[0]) for b in batches), default=0)
    acts = [tokens * width for tokens, width in hidden.values()] or [0]
    widths = [max((m.in_features for m in mod.modules() if isinstance(m, nn.Linear)),
                  default=0) for mods in blocks_by_role.values() for mod in mods] or [0]
    outs = [max((m.out_features for m in mod.modules() if isinstance(m, nn.Linear)),
                default=0) for mods in blocks_by_role.values() for mod in mods] or [0]
    tokens = max((t for t, _ in hidden.values()), default=0)
    stats = 0
    if needs is not None and batches:
        stats = 3 * max(widths) ** 2 * 4 if needs == "hessian" else 4 * max(widths) * 4
    held = samples * max(acts) * size
    if spill is not None:
        held = min(held, spill + biggest * max(acts) * size)
    return Estimate(block, 2 * held,
                    3 * biggest * tokens * max(max(outs), max(widths)) * size, stats)


def source_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file of `folder` holding it."""
    index = folder / INDEX
    if index.is_file():
        return {k: folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    single = folder / SINGLE
    if not single.is_file():
        raise UserError(f"{folder}: model.offload reads safetensors weights ({SINGLE} or "
                        f"{INDEX}); this folder has neither")
    with safe_open(str(single), "pt") as f:
        return dict.fromkeys(f.keys(), single)


def _by_model_name(model: nn.Module, files: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    """The files' tensors by the model's own names: transformers renames a checkpoint's keys
    as it loads (LLaVA's `language_model.model.*` are `model.language_model.*` in
    transformers 5), with its own functions here. A key that a converter merges or splits
    (a fused projection) has no one tensor to stream: one line."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        rename_source_key,
    )

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta = model.state_dict()
    out: dict[str, tuple[Path, str]] = {}
    for key, file in files.items():
        name, converted = rename_source_key(key, renamings, converters,
                                            getattr(model, "base_model_prefix", None), meta)
        if converted is not None:
            raise UserError(f"{file}: model.offload: tensor '{key}' is converted as it loads "
                            f"({converted}); offload streams one tensor per parameter: load "
                            "this model once with offload: none and save it")
        out[name] = (file, key)
    return out


def stream(model: nn.Module, blocks: Sequence[tuple[str, nn.Module]], mode: str,
           folder: Path | None, device: torch.device, dtype: torch.dtype,
           work: Path) -> Streamed:
    """Units of `model` (built on the meta device for `disk`, in CPU memory for `cpu`):
    its `blocks` (name, module), then each other module with parameters of its own. Every
    parameter's tensor must be in the folder's files (`disk`), under its own name or a
    tied one's: else one line naming the first that is not."""
    files = _by_model_name(model, source_files(folder)) if folder is not None else {}
    params: dict[int, Param] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        mod_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(mod_name)
        entry = params.get(id(p))
        if entry is None:
            entry = params[id(p)] = Param(name, p, [])
            if mode == "cpu":
                entry.home = p.data
                entry.meta = nn.Parameter(torch.empty_like(p, device="meta"),
                                          requires_grad=False)
        entry.owners.append((owner, leaf))
        if entry.key not in files and name in files:
            entry.key = name
    if mode == "disk":
        missing = [e.key for e in params.values() if e.key not in files]
        if missing:
            raise UserError(f"{folder}: model.offload: no tensor '{missing[0]}' in its "
                            f"safetensors files ({len(missing)} missing); offload reads a "
                            "folder saved by this transformers version's save_pretrained "
                            "(load it once with offload: none and save it)")
    if mode == "cpu":  # the live tensors leave: each owner holds the meta stand-in
        for e in params.values():
            for owner, leaf in e.owners:
                owner._parameters[leaf] = e.meta
    unit_of: dict[int, str] = {}
    modules: dict[str, nn.Module] = {}
    names = {id(m): n for n, m in model.named_modules()}
    for name, module in blocks:
        modules[name] = module
        for m in module.modules():
            unit_of[id(m)] = name
    members: dict[str, list[Param]] = {}
    for e in params.values():
        for owner, _ in e.owners:
            u = unit_of.get(id(owner))
            if u is None:
                u = names[id(owner)]
                modules.setdefault(u, owner)
                unit_of[id(owner)] = u
            if e not in members.setdefault(u, []):
                members[u].append(e)
    units = []
    for i, (name, ps) in enumerate(members.items()):
        own = [e for e in ps if unit_of[id(e.owners[0][0])] == name]
        units.append(Unit(name, modules[name], ps, own, f"model-{i + 1:05d}.safetensors"))
    work.mkdir(parents=True, exist_ok=True)
    s = Streamed(mode, device, dtype, units, files, work, trim=_trimmer())
    _buffers(model, s, folder)
    s.attach()
    return s


def _trimmer() -> Callable[[], object]:
    """glibc's `malloc_trim(0)`, or a no-op off glibc. Freed tensors' pages stay with the
    process in glibc's heaps and arenas (its mmap threshold rises as large blocks are freed,
    and torch's threads allocate in arenas of their own): RSS grew by about a block's worth
    per block pruned (a 0.2B fp32 model: 1.2x its weights by the end). Trimming once every
    `TRIM_EVERY` bytes let go returns them (0.06 GiB over start-up on that model when
    trimmed after every unit)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return lambda: None
    return lambda: trim(0)


def _buffers(model: nn.Module, s: Streamed, folder: Path | None) -> None:
    """Buffers stay resident (they are small): those in the files read from them, the others
    as the model computed them; all on the compute device."""
    names = dict(model.named_buffers())
    stored = [n for n in names if n in s.files]
    by_file: dict[Path, list[str]] = {}
    for n in stored:
        by_file.setdefault(s.files[n][0], []).append(n)
    for file, keys in by_file.items():
        with safe_open(str(file), "pt", device="cpu") as f:
            for k in keys:
                mod_name, _, leaf = k.rpartition(".")
                t = f.get_tensor(s.files[k][1])
                dtype = s.dtype if t.is_floating_point() else t.dtype
                model.get_submodule(mod_name)._buffers[leaf] = t.to(s.device, dtype)
    for n, b in names.items():
        if n not in stored and b.device != s.device:
            mod_name, _, leaf = n.rpartition(".")
            model.get_submodule(mod_name)._buffers[leaf] = b.to(s.device)
