"""The prune stage of a cell: spec -> targets -> calibration -> engine -> report."""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping

import torch

from harness.errors import UserError
from harness.models.adapter import ROLES, Adapter
from harness.models.load import ModelSpec, load, resolve
from harness.pruning import allocate, calibration, engine, registry, report
from harness.pruning.spec import PruneSpec, targets

log = logging.getLogger(__name__)


def run(adapter: Adapter, spec: PruneSpec, progress: bool = True
        ) -> tuple[MutableMapping[str, torch.Tensor], dict]:
    """Prune the adapter's model in place; returns (keep masks, sparsity report)."""
    t = targets(spec, adapter)  # validates N:M widths before any work
    t0 = time.perf_counter()
    batches = calibration.batches(spec.calibration, adapter) \
        if spec.calibration is not None else []
    t_cal = time.perf_counter()
    memory = _fits(adapter, spec, batches) if adapter.residency is not None else None
    if spec.allocation:  # OWL, ECoFLaP: a sparsity per block first
        t = allocate.per_linear(adapter, spec, t, batches)
    t1 = time.perf_counter()
    opts = spec.options(spec.method)  # the method's options, as keyword arguments
    options = opts.model_dump() if opts is not None else {}
    masks = engine.prune(adapter, t, spec.method, batches, spec.propagation, spec.seed,
                         options, progress)
    t2 = time.perf_counter()
    rep = report.measure(adapter, t)
    rep["spec"] = spec.model_dump()
    if memory is not None:
        rep["memory"] = memory
    rep["seconds"] = {"calibration_data": t_cal - t0, "allocation": t1 - t_cal,
                      "prune": t2 - t1}
    log.info("pruned %s: sparsity %.4f over %d weights in %.1fs", spec.method,
             rep["overall"]["sparsity"], rep["overall"]["params"], t2 - t1)
    return masks, rep


def _fits(adapter: Adapter, spec: PruneSpec, batches: list[dict]) -> dict:
    """An offloaded prune's expected peak (`expected`), logged; refused in one line, before
    any block is pruned, when even that exceeds the memory available."""
    from harness.models import offload

    est = expected(adapter, spec, batches, adapter.residency.dtype, adapter.residency.spill)
    free = offload.available_memory()
    log.info("offload %s: %s (%.2f GiB available)", adapter.residency.mode, est.line(),
             free / 2**30)
    if est.total > free:
        raise UserError(f"model.offload: {est.line()}, more than the {free / 2**30:.2f} GiB "
                        "available; fewer calibration samples per batch "
                        "(calibration.batch_size) or fewer samples lower it")
    # what is spare beyond the estimate, half of it up to KEEP_MAX, keeps units resident
    # across a capture's batches instead of reading them once per batch
    adapter.residency.keep = min(offload.KEEP_MAX, (free - est.total) // 2)
    return {"expected_peak": est.total, "largest_block": est.block,
            "activations": est.activations, "forward": est.forward,
            "statistics": est.statistics, "available": free}


def expected(adapter: Adapter, spec: PruneSpec, batches: list[dict], dtype: torch.dtype,
             spill: int | None = None):
    """What pruning the adapter's model one block at a time holds at most
    (models/offload.estimate); the model may be on the meta device, and so the batches."""
    from harness.models import offload

    blocks = {r: [b.module for b in adapter.blocks(r)] for r in ROLES}
    units = offload.unit_sizes(adapter.model, [m for ms in blocks.values() for m in ms])
    return offload.estimate(units, dtype, blocks, batches, registry.get(spec.method).needs,
                            _hidden(adapter, batches), spill)


def planned(model: ModelSpec, spec: PruneSpec):
    """The expected peak of pruning `model` offloaded (`expected`), before any weight is read:
    the model built on the meta device, its calibration batches prepared (their tensors on
    the meta device too)."""
    from transformers import AutoProcessor

    shapes = load(model.model_copy(update={"offload": "none"}), weights=False)
    shapes.processor = AutoProcessor.from_pretrained(resolve(model.name), local_files_only=True)
    batches = calibration.batches(spec.calibration, shapes) if spec.calibration else []
    spill = None if model.spill_activations is None else int(model.spill_activations * 2**30)
    return expected(shapes, spec, batches, next(shapes.model.parameters()).dtype, spill)


def _hidden(adapter: Adapter, batches: list[dict]) -> dict[str, tuple[int, int]]:
    """Per role, (tokens per sample, width) of its blocks' hidden states: the text's length
    for the language model, the image's patches (+1) for the vision tower."""
    seq = max((int(b["input_ids"].shape[1]) for b in batches if "input_ids" in b), default=0)
    vc = getattr(adapter.model.config, "vision_config", None)
    size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", None)
    patches = (size // patch) ** 2 + 1 if isinstance(size, int) and isinstance(patch, int) \
        else seq
    out = {}
    for role in ROLES:
        blocks = adapter.blocks(role)
        lin = next(iter(adapter.linears(blocks[0]).values()), None) if blocks else None
        if lin is not None:
            out[role] = (patches if role == "vision" else seq, lin.in_features)
    return out


def run_keeping_dense(adapter: Adapter, spec: PruneSpec, progress: bool = True
                      ) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor]]:
    """`run`, plus the dense weights of the Linears it masked (for a distillation teacher)."""
    roles = [r for r in ROLES if r in targets(spec, adapter)]  # keys are roles and paths
    dense = {p: lin.weight.detach().clone() for role in roles
             for p, lin in adapter.role_linears(role).items()}  # only the roles it prunes
    masks, rep = run(adapter, spec, progress)
    return dict(masks), rep, {p: dense[p] for p in masks}  # in memory: a dict already
