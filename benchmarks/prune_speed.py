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


def main(samples: int = 128, batch_size: int = 128, repeats: int = 7) -> None:
    """Each prune is timed between two medians-of-3 forwards on the same fresh model, and its
    ratio is taken against their mean, so drift in this machine's speed cancels out; the
    methods take turns within each repeat."""
    torch.manual_seed(0)
    cal = CalibrationSpec(samples=samples, batch_size=batch_size)
    methods = ("wanda", "sparsegpt", "magnitude")
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for method in methods:
            adapter = load(MODEL)
            batches = calibration.batches(cal, adapter)
            before = forward_time(batches, adapter, repeats=3)
            t = targets(PruneSpec(method=method, sparsity=0.5, calibration=cal), adapter)
            t0 = time.perf_counter()
            engine.prune(adapter, t, method, batches, "sequential", progress=False)
            took = time.perf_counter() - t0
            after = forward_time(batches, adapter, repeats=3)
            ratios[method].append(took / ((before + after) / 2))
    print(f"{MODEL}, {samples} calibration samples, batch {batch_size}, median of {repeats} "
          "prunes, each against the forwards just before and after it")
    for method, r in ratios.items():
        r = sorted(r)
        print(f"  {method:10s} prune (sequential) / one forward = {r[len(r) // 2]:.2f}  "
              f"(range {r[0]:.2f}-{r[-1]:.2f})")


if __name__ == "__main__":
    main()
