"""The recovery stage of a cell: wrap the pruned model in adapters, train, save the adapter,
merge, and report the sparsity the merged model keeps.

`run(adapter, masks, spec, dense)` changes `adapter.model` in place into the merged model;
`dense` holds the unpruned weights of the masked Linears (for the distillation teacher)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.models.adapter import Adapter
from harness.pruning.report import zero_share
from harness.recovery import lora
from harness.recovery.spec import RecoverySpec
from harness.recovery.teacher import Teacher
from harness.recovery.train import train


def run(adapter: Adapter, masks: dict[str, torch.Tensor], spec: RecoverySpec,
        dense: dict[str, torch.Tensor] | None = None, out: Path | None = None,
        progress: bool = True) -> dict:
    if spec.method == "none":
        return {"method": "none", **sparsity_report(adapter, masks)}
    model, teacher = prepare(adapter, masks, spec, dense)
    hist = train(adapter, model, spec, teacher, progress)
    if out is not None:
        model.save_pretrained(str(out))
    adapter.model = model.merge_and_unload()
    return {"method": spec.method, "final_loss": hist["loss"][-1], "loss": hist["loss"],
            "train_seconds": hist["seconds"], "step_seconds": hist["step_seconds"],
            **sparsity_report(adapter, masks)}


def prepare(adapter: Adapter, masks: dict[str, torch.Tensor], spec: RecoverySpec,
            dense: dict[str, torch.Tensor] | None = None) -> tuple[torch.nn.Module, Teacher | None]:
    """The model wrapped in the spec's recovery method's adapters (SparseLoRA's masked by the
    pruning masks), and the distillation teacher if the spec asks for one."""
    linears = adapter.all_linears()  # before PEFT wraps them: the same objects
    needs_teacher = spec.distill is not None and spec.distill.weight > 0
    if needs_teacher and dense is None:
        raise ValueError("distillation needs the dense weights of the pruned Linears")
    teacher = Teacher(linears, masks, dense) if needs_teacher and dense is not None else None
    # PEFT draws each LoRA A from torch's global generator: seeded here, or the adapters (and
    # every trained weight after the first step) depend on what ran before in the process
    torch.manual_seed(spec.seed)
    return lora.wrap(adapter, spec, masks), teacher


def sparsity_report(adapter: Adapter, masks: dict[str, torch.Tensor]) -> dict:
    """Sparsity of the pruned Linears now, and the share of pruned positions still zero."""
    pruned = {p: lin for p, lin in adapter.all_linears().items() if p in masks}
    kept_zero = total = 0
    for p, lin in pruned.items():
        removed = ~masks[p].to(lin.weight.device, torch.bool)
        kept_zero += int((lin.weight.data[removed] == 0).sum())
        total += int(removed.sum())
    return {"sparsity": zero_share(pruned) if pruned else 0.0,
            "pruned_still_zero": kept_zero / total if total else 1.0}
