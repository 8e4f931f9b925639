"""What a layer-wise allocation costs: prune time (calibration data excluded) with OWL and
ECoFLaP over the uniform split, same method, side by side in one run on shapes-llava at 60%
(128 calibration samples, one batch); and ECoFLaP's zeroth-order pass over one calibration
forward of the model, for each estimator: `block` (two forwards per block, target <= 3) and
`tensor`, the default and the reference's estimate (two forwards per Linear: no target, its
cost is the reference's). Median of 3 of each, interleaved; quiet, then with a competing
process."""

from __future__ import annotations

import statistics
import time

import competitor

from harness import threads

threads.configure()  # the CLI's wait policy, before torch loads
import torch  # noqa: E402

from harness.models.load import load  # noqa: E402
from harness.pruning import allocate, calibration, stage  # noqa: E402
from harness.pruning.spec import CalibrationSpec  # noqa: E402
from harness.pruning.spec import load as load_spec  # noqa: E402

REPEATS = 3


def prune_seconds(method: str, distribution: str) -> float:
    adapter = load("shapes-llava")
    spec = load_spec({"method": method, "sparsity": 0.6, "distribution": distribution})
    _, rep = stage.run(adapter, spec, progress=False)
    return rep["seconds"]["allocation"] + rep["seconds"]["prune"]


def zeroth_order_over_forward(estimator: str) -> tuple[float, float]:
    adapter = load("shapes-llava")
    spec = load_spec({"method": "wanda", "sparsity": 0.6, "distribution": "ecoflap",
                      "ecoflap": {"estimator": estimator}})
    batches = calibration.batches(spec.calibration or CalibrationSpec(), adapter)
    with torch.no_grad():
        adapter.forward(batches[0])  # warm-up
        t0 = time.perf_counter()
        for b in batches:
            adapter.forward(b)
        forward = time.perf_counter() - t0
    blocks = [b for r in ("vision", "language") for b in adapter.blocks(r)]
    t0 = time.perf_counter()
    allocate.ecoflap_scores(adapter, blocks, batches, spec.ecoflap)
    return time.perf_counter() - t0, forward


def measure(label: str) -> None:
    print(f"-- {label}")
    for method in ("wanda", "sparsegpt"):
        times: dict[str, list[float]] = {"equal": [], "owl": [], "ecoflap": []}
        for _ in range(REPEATS):
            for dist in times:
                times[dist].append(prune_seconds(method, dist))
        med = {d: statistics.median(v) for d, v in times.items()}
        print(f"{method}: prune uniform {med['equal']:.2f} s, owl {med['owl']:.2f} s "
              f"({med['owl'] / med['equal']:.2f}x), ecoflap {med['ecoflap']:.2f} s "
              f"({med['ecoflap'] / med['equal']:.2f}x)")
    for estimator, target in (("block", " (target <= 3)"), ("tensor", " (the reference's)")):
        runs = [zeroth_order_over_forward(estimator) for _ in range(REPEATS)]
        zo = statistics.median(r[0] for r in runs)
        fwd = statistics.median(r[1] for r in runs)
        print(f"ecoflap zeroth-order pass, estimator {estimator}: {zo:.2f} s over one "
              f"calibration forward {fwd:.2f} s: {zo / fwd:.2f}x{target}")


def main() -> None:
    threads.apply()
    measure("quiet")
    with competitor.running():
        measure("with a competing 2-thread process")


if __name__ == "__main__":
    main()
