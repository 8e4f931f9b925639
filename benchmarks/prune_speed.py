"""Pruning time relative to one forward pass, on shapes-llava, measured side by side.

Prints time(prune, sequential) / time(one forward of the model over the same calibration
set) for wanda and sparsegpt (targets: <= 1.5 and <= 4), 128 calibration samples.
"""

from __future__ import annotations

import sys
import time

import torch

from harness.models.load import load
from harness.pruning import calibration, engine
from harness.pruning.spec import CalibrationSpec, PruneSpec, targets

MODEL = sys.argv[1] if len(sys.argv) > 1 else "shapes-llava"


def forward_time(batches, adapter, repeats: int = 5) -> float:
    """Median time of one forward of the model over the whole calibration set."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            adapter.forward(b)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(samples: int = 128, batch_size: int = 128, repeats: int = 5) -> None:
    torch.manual_seed(0)
    cal = CalibrationSpec(samples=samples, batch_size=batch_size)
    rows = []
    for method in ("wanda", "sparsegpt", "magnitude"):
        ratios = []
        for _ in range(repeats):
            adapter = load(MODEL)
            batches = calibration.batches(cal, adapter)
            fwd = forward_time(batches, adapter)
            t = targets(PruneSpec(method=method, sparsity=0.5, calibration=cal), adapter)
            t0 = time.perf_counter()
            engine.prune(adapter, t, method, batches, "sequential", progress=False)
            ratios.append((time.perf_counter() - t0) / fwd)
        rows.append((method, sorted(ratios)[len(ratios) // 2]))
    print(f"shapes-llava, {samples} calibration samples, batch {batch_size}, median of "
          f"{repeats} prunes, each against the median of 5 forwards")
    for method, r in rows:
        print(f"  {method:10s} prune (sequential) / one forward = {r:.2f}")


if __name__ == "__main__":
    main()
