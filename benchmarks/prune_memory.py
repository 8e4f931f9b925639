"""Peak memory of pruning a ~1B-parameter random-weight LLaVA with wanda, block at a time.

Runs in a fresh process so that its peak RSS is its own; prints peak RSS growth over the
model's weight bytes (target <= 1.5).
"""

from __future__ import annotations

import argparse
import resource
import time

import psutil
import torch

from harness.models.load import adapter_for
from harness.pruning import calibration, engine
from harness.pruning.spec import CalibrationSpec, PruneSpec, targets
from harness.testing.tiny import tiny_llava


def rss() -> int:
    return psutil.Process().memory_info().rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    base = rss()
    t0 = time.perf_counter()
    model, proc = tiny_llava(d=a.d, layers=a.layers, vision_d=1024, vision_layers=12,
                             intermediate=int(a.d * 2.6875))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    adapter = adapter_for(model, proc)
    loaded = rss()
    cal = CalibrationSpec(samples=a.samples, batch_size=4)
    batches = calibration.batches(cal, adapter)
    t = targets(PruneSpec(method="wanda", sparsity=0.5, calibration=cal), adapter)
    t1 = time.perf_counter()
    engine.prune(adapter, t, "wanda", batches, "sequential", progress=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"random LLaVA: {params / 1e9:.2f}B parameters, {weights / 2**30:.2f} GiB of weights; "
          f"build {t1 - t0:.0f}s, prune {time.perf_counter() - t1:.0f}s")
    print(f"  RSS after build {(loaded - base) / 2**30:.2f} GiB, peak {(peak - base) / 2**30:.2f}"
          f" GiB -> peak / weights = {(peak - base) / weights:.2f}")


if __name__ == "__main__":
    main()
