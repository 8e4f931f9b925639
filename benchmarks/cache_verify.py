"""What checking the stage cache costs on a cached re-run of the smoke grid. Target: <= 2%.

The smoke grid is swept once into a fresh results folder. Each re-run then starts from a
fresh MLflow store, so every cell is read back from the stage cache and re-logged:
- A, fully cached: each cell's eval stage is opened, checked and re-logged; nothing is
  computed. Runs alternate with the check on and off (`cache.VERIFY`), their order flipping
  each round; the ratio of medians is printed, but at ~2 s a run its noise is several %
  either way, so the figure that decides is measured inside the verified runs: the seconds
  spent in `integrity.check` over the run's wall time.
- B, model stages cached: the eval stages are dropped first, so the prune and recovery
  stages (masks, recovered weights: the big files) are checked and read, and evaluation
  runs again.
Quiet, then with a competing process (a 2-thread torch matmul loop).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import competitor

ROUNDS = 5


def timed_checks() -> list[float]:
    """Wrap integrity.check to add up the seconds spent checking."""
    from harness import integrity

    spent = [0.0]
    plain = integrity.check

    def check(*a, **k):
        t0 = time.perf_counter()
        try:
            return plain(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    integrity.check = check
    return spent


def rerun(results: Path, verify: bool, spent: list[float]) -> tuple[float, float]:
    """(wall seconds, seconds inside checks) of a re-run with a new MLflow store, in a new
    results folder sharing the stage cache (MLflow keeps a store open by its URI, so a
    deleted database cannot be reused in one process)."""
    from harness.cli import write_report
    from harness.sweep import cache, runner

    fresh = Path(tempfile.mkdtemp(prefix="run-", dir=results.parent))
    (fresh / "cache").symlink_to(results / "cache")
    os.environ["VLMPRUNE_RESULTS"] = str(fresh)
    cache.VERIFY = verify
    before = spent[0]
    t0 = time.perf_counter()
    assert runner.sweep("smoke", progress=False) == 0
    write_report("smoke")  # as `vlmprune sweep` does
    return time.perf_counter() - t0, spent[0] - before


def measure(results: Path, label: str, spent: list[float]) -> None:
    times: dict[bool, list[float]] = {True: [], False: []}
    shares = []
    for r in range(ROUNDS):
        for verify in ((True, False) if r % 2 else (False, True)):
            wall, checking = rerun(results, verify, spent)
            times[verify].append(wall)
            if verify:
                shares.append(checking / wall)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"{label} A (fully cached): median of {ROUNDS} re-runs: check on {on:.2f} s, off "
          f"{off:.2f} s, ratio {on / off:.3f}; inside the checks: {max(shares):.2%} of the "
          "run at most (target <= 2%)")
    shares = []
    for _ in range(2):
        shutil.rmtree(results / "cache" / "eval")
        wall, checking = rerun(results, True, spent)
        shares.append(checking / wall)
    print(f"{label} B (model stages cached, evaluation recomputed): inside the checks: "
          f"{max(shares):.2%} of the run at most, {wall:.1f} s a run")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vlmprune-verify-"))
    results = root / "results"
    os.environ["VLMPRUNE_RESULTS"] = str(results)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from harness.cli import write_report
    from harness.sweep import runner

    assert runner.sweep("smoke", progress=False) == 0
    write_report("smoke")
    mb = sum(p.stat().st_size for p in (results / "cache").glob("[!d]*/*/*")) / 1e6
    print(f"stage cache of the smoke grid: {mb:.1f} MB")
    spent = timed_checks()
    measure(results, "quiet", spent)
    with competitor.running():
        measure(results, "loaded", spent)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
