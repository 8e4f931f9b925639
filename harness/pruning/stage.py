"""The prune stage of a cell: spec -> targets -> calibration -> engine -> report."""

from __future__ import annotations

import logging
import time

import torch

from harness.models.adapter import ROLES, Adapter
from harness.pruning import allocate, calibration, engine, report
from harness.pruning.spec import PruneSpec, targets

log = logging.getLogger(__name__)


def run(adapter: Adapter, spec: PruneSpec, progress: bool = True
        ) -> tuple[dict[str, torch.Tensor], dict]:
    """Prune the adapter's model in place; returns (keep masks, sparsity report)."""
    t = targets(spec, adapter)  # validates N:M widths before any work
    t0 = time.perf_counter()
    batches = calibration.batches(spec.calibration, adapter) \
        if spec.calibration is not None else []
    t_cal = time.perf_counter()
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
    rep["seconds"] = {"calibration_data": t_cal - t0, "allocation": t1 - t_cal,
                      "prune": t2 - t1}
    log.info("pruned %s: sparsity %.4f over %d weights in %.1fs", spec.method,
             rep["overall"]["sparsity"], rep["overall"]["params"], t2 - t1)
    return masks, rep


def run_keeping_dense(adapter: Adapter, spec: PruneSpec, progress: bool = True
                      ) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.Tensor]]:
    """`run`, plus the dense weights of the Linears it masked (for a distillation teacher)."""
    roles = [r for r in ROLES if r in targets(spec, adapter)]  # keys are roles and paths
    dense = {p: lin.weight.detach().clone() for role in roles
             for p, lin in adapter.role_linears(role).items()}  # only the roles it prunes
    masks, rep = run(adapter, spec, progress)
    return masks, rep, {p: dense[p] for p in masks}
