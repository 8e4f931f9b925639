"""Recovery on shapes-llava after wanda 2:4 on both modalities: VQA accuracy and sparsity of
lora and sparselora side by side, and their training step times measured in one run.

Targets: sparselora wins back at least half of the VQA points pruning lost, with every pruned
weight still zero; step time sparselora / lora <= 1.2 (medians over alternating steps).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from harness.models.load import load
from harness.pruning import stage as prune_stage
from harness.pruning.spec import PruneSpec
from harness.recovery import stage as recovery_stage
from harness.recovery.data import encode, samples
from harness.recovery.spec import load as load_spec
from harness.recovery.train import loss_on
from harness.zoo.check import vqa_accuracy

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
PRUNE = PruneSpec(method="wanda", pattern="2:4")


def pruned():
    adapter = load("shapes-llava")
    masks, _, dense = prune_stage.run_keeping_dense(adapter, PRUNE, progress=False)
    return adapter, masks, dense


def step_times(repeats: int = 20) -> dict[str, float]:
    """Median time of one training step (forward, teacher, backward, optimizer) per method,
    the two methods alternating step by step on the same batches."""
    setups = {}
    for method in ("lora", "sparselora"):
        adapter, masks, dense = pruned()
        spec = load_spec({"method": method})
        model, teacher = recovery_stage.prepare(adapter, masks, spec, dense)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        setups[method] = (adapter, model, spec, teacher, opt)
    times: dict[str, list[float]] = {m: [] for m in setups}
    for i in range(repeats + 2):
        for method, (adapter, model, spec, teacher, opt) in setups.items():
            items = samples(spec.data, 0, i * spec.batch_size, spec.batch_size)
            t0 = time.perf_counter()
            batch, labels = encode(adapter, items)
            loss_on(adapter, model, batch, labels, spec, teacher).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:  # warm-up steps not counted
                times[method].append(time.perf_counter() - t0)
    return {m: statistics.median(t) for m, t in times.items()}


def main() -> None:
    dense_acc = vqa_accuracy(load("shapes-llava"), N)["overall"]
    adapter, masks, _ = pruned()
    pruned_acc = vqa_accuracy(adapter, N)["overall"]
    print(f"shapes-llava VQA on {N} test questions: dense {dense_acc:.3f}, wanda 2:4 "
          f"{pruned_acc:.3f} (lost {100 * (dense_acc - pruned_acc):.1f} points)")
    for method in ("lora", "sparselora"):
        adapter, masks, dense = pruned()
        spec = load_spec({"method": method, "steps": STEPS})
        rep = recovery_stage.run(adapter, masks, spec, dense, progress=False)
        acc = vqa_accuracy(adapter, N)["overall"]
        won = (acc - pruned_acc) / (dense_acc - pruned_acc) if dense_acc > pruned_acc else 0
        print(f"  {method:10s} {STEPS} steps: VQA {acc:.3f} (won back {won:.0%} of the loss), "
              f"sparsity after merge {rep['sparsity']:.4f}, pruned weights still zero "
              f"{rep['pruned_still_zero']:.2%}")
    t = step_times()
    print(f"  step time: lora {1000 * t['lora']:.0f} ms, sparselora "
          f"{1000 * t['sparselora']:.0f} ms, ratio {t['sparselora'] / t['lora']:.2f} "
          "(target <= 1.2)")


if __name__ == "__main__":
    main()
