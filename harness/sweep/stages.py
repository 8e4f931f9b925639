"""The three stages of a cell, each cached under its key.

- prune: masks (bit-packed) and, only for Linears whose kept weights the method rewrote
  (SparseGPT), the weights themselves; the sparsity report. Loading applies them to the
  dense model, so a cached prune stage costs one model load.
- recover: the weights of every Linear that carried an adapter (what the merge changed);
  the training report. A method that trains exactly as another (registry `shares`:
  lora-remask as lora) derives its weights from that method's stage, trained once for both.
- evaluate: metrics and per-sample predictions.

A stage is read only when the cache vouches for it (`cache.open`: every file as written);
otherwise, or when its files cannot be read, it is set aside and computed again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from harness import registry
from harness.errors import UserError
from harness.evaluation.run import evaluate
from harness.models import offload
from harness.models.adapter import ROLES, Adapter
from harness.models.load import ModelSpec, load
from harness.pruning import persist
from harness.pruning import report as sparsity_report
from harness.pruning import stage as prune_stage
from harness.pruning.apply import apply_masks
from harness.sweep import cache
from harness.sweep.cell import CellSpec, eval_key, prune_key, recover_key
from harness.sweep.result import CellResult

Notify = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class PrunedModel:
    """The prune stage's outcome: the adapter holding the pruned model, the keep masks, the
    dense weights of the masked Linears (read from the cache only when a distillation teacher
    needs them) and the prune report."""

    adapter: Adapter
    masks: dict[str, torch.Tensor]
    dense: dict[str, torch.Tensor]
    report: dict[str, Any]


@dataclass(frozen=True, eq=False)
class RecoveredModel:
    """The recover stage's outcome: the adapter holding the recovered model, the keep masks,
    and the prune and recovery reports."""

    adapter: Adapter
    masks: dict[str, torch.Tensor]
    prune: dict[str, Any]
    recover: dict[str, Any]


def pruned(cell: CellSpec, force: bool = False) -> PrunedModel:
    """The pruned model, its masks and report; computed and cached, or read from the cache."""
    t0 = time.perf_counter()
    if cell.prune is not None and cell.model.offload != "none" and (
            force or cache.open("prune", prune_key(cell)) is None):
        _prune_offloaded(cell)  # the stage written; read back below like any cached one
        force = False
    adapter = load(in_memory(cell.model))
    if cell.prune is None:
        return PrunedModel(adapter, {}, {}, {"overall": {"sparsity": 0.0},
                                             "seconds": {"prune": 0.0}})
    key = prune_key(cell)
    lins = adapter.all_linears()
    stored = None if force else _read("prune", key, lambda root: (
        persist.load_masks(root / "masks"), load_file(str(root / "weights")),
        json.loads((root / "report.json").read_text())))
    if stored is None:
        masks, report, dense = prune_stage.run_keeping_dense(adapter, cell.prune, False)
        report["seconds"]["stage"] = time.perf_counter() - t0  # model load + calibration + prune
        rewritten = {p: lins[p].weight.detach().contiguous() for p, m in masks.items()
                     if not torch.equal(lins[p].weight, dense[p] * m)}
        _store("prune", key, rewritten, report, masks)
        return PrunedModel(adapter, masks, dense, report)
    masks, rewritten, report = stored
    d = cell.recover.distill  # only a distillation teacher reads the dense weights
    teacher = cell.recover.method != "none" and d is not None and d.weight > 0
    dense = {p: lins[p].weight.detach().clone() for p in masks} if teacher else {}
    apply_masks(lins, masks, rewritten)
    return PrunedModel(adapter, masks, dense, report)


def in_memory(model: ModelSpec) -> ModelSpec:
    """The model as the stages after pruning load it: whole, in memory (`offload` prunes
    only), refused in one line when its weights cannot fit in the memory available."""
    if model.offload == "none":
        return model
    need = offload.weight_bytes(load(model, weights=False).model)
    free = offload.available_memory()
    if need > free:
        raise UserError(f"model {model.name}: {need / 2**30:.1f} GiB of weights, "
                        f"{free / 2**30:.1f} GiB of memory available: model.offload prunes it, "
                        "but recovery and evaluation load it whole; prune it with `vlmprune "
                        "prune --offload disk --out DIR` and evaluate it where it fits")
    return model.model_copy(update={"offload": "none"})


def _prune_offloaded(cell: CellSpec) -> None:
    """The prune stage of an offloaded model (models/offload.py): pruned one block at a
    time, its blocks written to a work folder inside the stage being written (removed
    before the stage is sealed); stored as an in-memory prune stores it."""
    assert cell.prune is not None
    t0 = time.perf_counter()
    with cache.writing("prune", prune_key(cell)) as tmp:
        work = tmp / "offload"
        adapter = load(cell.model, work=work)
        masks, report = prune_stage.run(adapter, cell.prune, False)
        rewritten = adapter.residency.rewritten(masks)
        adapter.residency.close()
        shutil.rmtree(work)
        report["seconds"]["stage"] = time.perf_counter() - t0
        persist.save_masks(masks, tmp / "masks")
        save_file(rewritten, str(tmp / "weights"))
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))


def _store(stage: str, key: str, weights: dict[str, torch.Tensor], report: dict[str, Any],
           masks: Mapping[str, torch.Tensor] | None = None) -> None:
    """A computed stage written whole (sealed only once every file is there): the weights it
    changed, its report, and a prune stage's masks."""
    with cache.writing(stage, key) as tmp:
        if masks is not None:
            persist.save_masks(masks, tmp / "masks")
        save_file(weights, str(tmp / "weights"))
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))


def _read(stage: str, key: str, read: Callable[[Path], T]) -> T | None:
    """`read(folder)` of a cached stage that is whole; None when it must be computed. A stage
    whose manifest holds but whose files still cannot be read (a bug, or a manifest forged
    alongside its files) is set aside like a damaged one: nothing half-read is applied."""
    root = cache.open(stage, key)
    if root is None:
        return None
    try:
        return read(root)
    except Exception as e:  # noqa: BLE001 - any unreadable stage is recomputed, not served
        cache.set_aside(stage, key, f"unreadable: {type(e).__name__}: {e}".splitlines()[0])
        return None


def recovered(cell: CellSpec, force: bool = False,
              notify: Notify = lambda s: None) -> RecoveredModel:
    """The pruned model recovered (as pruned when the cell's recovery is none), with its
    masks and the two stages' reports."""
    if cell.recover.method == "none":
        notify("prune")
        pm = pruned(cell, force)
        return RecoveredModel(pm.adapter, pm.masks, pm.report, {"method": "none", "seconds": 0.0})
    key = recover_key(cell)
    stored = None if force else _read("recover", key, lambda root: (
        load_file(str(root / "weights")), json.loads((root / "report.json").read_text())))
    shares = registry.get("recovery", cell.recover.method).shares
    if stored is None and shares is not None:
        return _shared(cell, key, shares, force, notify)
    notify("prune")
    pm = pruned(cell, force)
    adapter, masks, p_report = pm.adapter, pm.masks, pm.report
    notify("recover")
    from harness.recovery import lora  # PEFT imports transformers: only when training
    from harness.recovery import stage as recovery_stage

    if stored is None:
        adapted = lora.lora_targets(adapter, cell.recover)  # the merge changes these only
        t0 = time.perf_counter()
        r_report = recovery_stage.run(adapter, masks, cell.recover, pm.dense, progress=False)
        r_report["seconds"] = time.perf_counter() - t0
        lins = adapter.all_linears()  # the merged model's
        changed = {p: lins[p].weight.detach().contiguous() for p in adapted}
        _store("recover", key, changed, r_report)
        return RecoveredModel(adapter, masks, p_report, r_report)
    changed, r_report = stored
    lins = adapter.all_linears()
    with torch.no_grad():
        for p, w in changed.items():
            lins[p].weight.copy_(w)
    return RecoveredModel(adapter, masks, p_report, r_report)


def _shared(cell: CellSpec, key: str, shares: tuple[str, str], force: bool,
            notify: Notify) -> RecoveredModel:
    """The recover stage of a method that trains exactly as another (its registry entry's
    `shares`: lora-remask as lora): that method's stage, trained or read (one training
    serves both), its merged weights turned into this method's, stored under `key`."""
    from harness.recovery import lora
    from harness.recovery import stage as recovery_stage

    method, derive = shares
    trained_as = cell.model_copy(update={"recover": type(cell.recover).model_validate(
        {**cell.recover.model_dump(), "method": method})})
    other = recovered(trained_as, force, notify)
    t0 = time.perf_counter()
    adapted = lora.lora_targets(other.adapter, cell.recover)
    lins = other.adapter.all_linears()
    merged = {p: lins[p].weight.detach() for p in adapted}
    report = other.recover
    del other, lins  # one model in memory at a time (and these weights)
    # the prune stage the other method's recovery just used (no teacher: its dense weights
    # are not read)
    pm = pruned(cell.model_copy(update={"recover": type(cell.recover)()}))
    lins = pm.adapter.all_linears()
    changed = registry.resolve(derive)({p: lins[p].weight.detach() for p in adapted}, merged,
                                       pm.masks)
    with torch.no_grad():
        for p, w in changed.items():
            lins[p].weight.copy_(w)
    r_report = {**report, "method": cell.recover.method, "trained_as": method,
                **recovery_stage.sparsity_report(pm.adapter, pm.masks),
                "seconds": time.perf_counter() - t0}
    _store("recover", key, {p: w.contiguous() for p, w in changed.items()}, r_report)
    return RecoveredModel(pm.adapter, pm.masks, pm.report, r_report)


def evaluated(cell: CellSpec, force: bool = False, notify: Notify = lambda s: None,
              model: RecoveredModel | None = None) -> CellResult:
    """The cell's result: metrics, samples, sparsity by role, stage reports. `model` is what
    `recovered(cell)` returned, when the caller holds it already (a search evaluates one
    pruned model on a quick slice, then on the whole suite: one load, not two)."""
    key = eval_key(cell)
    stored = None if force else cached_result(key)
    if stored is not None:
        return stored
    m = model or recovered(cell, force, notify)
    notify("evaluate")
    t0 = time.perf_counter()
    res = evaluate(m.adapter, cell.eval.resolved(), run_hash=key, limit=cell.eval.limit,
                   batch_size=cell.eval.batch_size, progress=False, offset=cell.eval.offset)
    result = CellResult(
        metrics=res.metrics, sparsity=sparsity_by_role(m.adapter, m.masks), prune=m.prune,
        recover=m.recover, seconds={"prune": m.prune.get("seconds", {}).get("stage", 0.0),
                                    "recover": m.recover.get("seconds", 0.0),
                                    "evaluate": time.perf_counter() - t0},
        samples=res.samples, headline=res.headline, intervals=res.intervals)
    with cache.writing("eval", key) as tmp:
        result.write(tmp)
    return result


def cached_result(key: str) -> CellResult | None:
    """A cell's stored result (metrics, samples, reports) if its eval stage is whole."""
    return _read("eval", key, CellResult.read)


def sparsity_by_role(adapter: Adapter, masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Achieved sparsity per role and over the pruned roles (those with a mask); nonzero
    weights over every role. Measured by the pruning report."""
    roles = sparsity_report.measure(adapter)["roles"]
    pruned = [r for r in ROLES if any(p in masks for p in adapter.role_linears(r))]
    zeros = sum(roles[r]["zeros"] for r in pruned)
    total = sum(roles[r]["params"] for r in pruned)
    out = {r: roles[r]["sparsity"] for r in ROLES}
    out["overall"] = zeros / total if total else 0.0
    out["nonzero"] = float(sum(roles[r]["nonzero"] for r in ROLES))
    return out
