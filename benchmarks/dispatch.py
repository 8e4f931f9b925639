"""Executors side by side: the smoke grid widened to 9 cells (wanda and magnitude at 40-70%
sparsity, plus the dense cell; smoke's short calibration), each executor sweeping it into a
fresh results folder (everything computed, start-up included, as a user would see it):
local (one process, the thread policy's threads), pool (2 workers, threads split), ray (a
local Ray cluster, 2 workers). Wall seconds of `vlmprune sweep`; speedup of pool over local
(target >= 1.6x on 2 cores) and Ray's overhead over pool; the metrics are checked equal.

Two sizes of cell: smoke's own evaluation (the quick suite, 20 questions: about 1 s of work
a cell, so the ~10 s every sweep spends starting up decides), and the full shapes suite
(1,500 documents: about 10 s a cell, where the work decides; three rounds, the median ratio:
single runs on this shared machine vary by 10-15%). Quiet, then with a competing process
(local and pool, full-suite cells).

A search's trials through the pool (`python benchmarks/dispatch.py search`, also run by
default): the paper's search grid (modality_search: full shapes suite, median pruner) to 8
COMPLETE trials, in one process and on a pool of 2 workers, fresh results folders; wall
seconds to reach them. The trials differ (side by side, what TPE suggests depends on which
trials had finished), so this is time to 8 trials of the same search, not the same trials.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import competitor

GRID = """name: dispatch-bench
description: the smoke grid widened for the dispatch benchmark
base:
  model: {name: shapes-llava}
  prune:
    method: wanda
    sparsity: 0.5
    calibration: {samples: 16, batch_size: 16}
  recover: {method: none}
  eval: {suite: SUITE}
axes:
  - prune.method: [wanda, magnitude]
  - prune.sparsity: [0.4, 0.5, 0.6, 0.7]
include:
  - {prune: null}
"""


def sweep(grid: Path, executor: str, root: Path) -> tuple[float, dict]:
    results = Path(tempfile.mkdtemp(prefix=f"{executor}-", dir=root))
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results),
           "VLMPRUNE_REPORTS": str(results / "reports")}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, "-m", "harness.cli", "sweep", str(grid), "--no-report"]
    if executor != "local":
        argv += ["--executor", executor, "--workers", "2"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stdout[-2000:] + p.stderr[-2000:])
    return seconds, metrics(results)


def metrics(results: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dispatch-bench")
    runs = client.search_runs([exp.experiment_id], "tags.`vlmprune.kind` = 'cell'")
    return {r.data.tags["vlmprune.cell_hash"]: {k: v for k, v in r.data.metrics.items()
                                                if not k.startswith("time/")} for r in runs}


def measure(label: str, grid: Path, root: Path, executors: tuple[str, ...],
            rounds: int = 1) -> None:
    """Each round sweeps with every executor, one after the other; a ratio is taken within
    a round (the machine's speed drifts between rounds), the median over rounds reported."""
    speedups, overheads, same, cells = [], [], True, 0
    for r in range(rounds):
        out = {e: sweep(grid, e, root) for e in executors}
        t = {e: s for e, (s, _) in out.items()}
        same &= all(m == out["local"][1] for _, m in out.values())
        cells = len(out["local"][1])
        speedups.append(t["local"] / t["pool"])
        if "ray" in t:
            overheads.append(t["ray"] / t["pool"])
        print(f"   {label}, round {r + 1}: " + ", ".join(f"{e} {s:.1f} s" for e, s in t.items())
              + f"; pool speedup {speedups[-1]:.2f}x", flush=True)
    line = (f"-- {label}: pool speedup over local {statistics.median(speedups):.2f}x "
            f"(median of {rounds}; target >= 1.6)")
    if overheads:
        line += f", ray over pool {statistics.median(overheads):.2f}x"
    print(line + f"; {cells} cells, metrics {'identical' if same else 'DIFFER'}", flush=True)


def search(root: Path, trials: int = 8) -> None:
    import optuna

    grid = root / "search" / "modality_search.yaml"
    grid.parent.mkdir(parents=True)
    grid.write_text(Path("experiments/modality_search.yaml").read_text())
    t = {}
    for executor in ("local", "pool"):
        results = Path(tempfile.mkdtemp(prefix=f"search-{executor}-", dir=root))
        env = {**os.environ, "VLMPRUNE_RESULTS": str(results),
               "VLMPRUNE_REPORTS": str(results / "reports")}
        env.pop("MLFLOW_TRACKING_URI", None)
        argv = [sys.executable, "-m", "harness.cli", "search", str(grid), "--trials", str(trials)]
        if executor != "local":
            argv += ["--executor", executor, "--workers", "2"]
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        t[executor] = time.perf_counter() - t0
        if p.returncode:
            sys.exit(p.stdout[-2000:] + p.stderr[-2000:])
        study = optuna.load_study(study_name="modality_search",
                                  storage=f"sqlite:///{results / 'optuna.db'}")
        states = [tr.state.name for tr in study.trials]
        print(f"   search, {executor}: {t[executor]:.1f} s, {states.count('COMPLETE')} complete, "
              f"{states.count('PRUNED')} stopped or dropped, {states.count('FAIL')} failed",
              flush=True)
    print(f"-- search to {trials} COMPLETE trials (modality_search): pool speedup over local "
          f"{t['local'] / t['pool']:.2f}x (one round)", flush=True)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vlmprune-dispatch-"))
    if sys.argv[1:] == ["search"]:
        return search(root)
    grids: dict = {}
    for size, suite in (("smoke-sized cells (quick suite, 20 questions)", "quick, limit: 20"),
                        ("full-suite cells (shapes, 1,500 documents)", "shapes")):
        grids[size] = root / f"{len(grids)}" / "dispatch-bench.yaml"
        grids[size].parent.mkdir()
        grids[size].write_text(GRID.replace("SUITE", suite))
    sweep(grids[next(iter(grids))], "local", root)  # warm the page cache and the user cache
    small, full = grids.values()
    measure(f"quiet, {next(iter(grids))}", small, root, ("local", "pool", "ray"))
    measure(f"quiet, {list(grids)[1]}", full, root, ("local", "pool", "ray"), rounds=3)
    with competitor.running():
        measure(f"with a competing 2-thread process, {list(grids)[1]}", full, root,
                ("local", "pool"))
    search(root)


if __name__ == "__main__":
    main()
