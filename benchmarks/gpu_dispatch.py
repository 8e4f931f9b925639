"""The pool executor on a GPU against the same machine's CPU: cells per minute.

Two grids: smoke (experiments/smoke.yaml: 4 cells, pruning, SparseLoRA and the quick suite)
and the dispatch benchmark's 9 cells on the full shapes suite (benchmarks/dispatch.py).
Each is swept into a fresh results folder (start-up included, as a user sees it) by
  - the pool on the GPU (CUDA_VISIBLE_DEVICES=0: one worker, cells on `cuda`),
  - the pool of 2 CPU workers (CUDA_VISIBLE_DEVICES=''),
  - the local executor on the CPU,
then the GPU pool's folder is swept again (a resume: every cell finished, nothing run).
Prints wall seconds, cells per minute, and how far the GPU's metrics lie from the CPU's
(not bit-identical: other kernels); the two CPU executors' metrics are checked equal.

Run where a CUDA GPU is: `python benchmarks/gpu_dispatch.py [--only GRID] [OUT_FILE]` (each
line is also appended to OUT_FILE as it is measured: a run cut short keeps what it measured).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dispatch import GRID

ROOT = Path(__file__).resolve().parent.parent


def sweep(grid: Path, results: Path, gpu: bool, executor: str) -> float:
    env = {**os.environ, "VLMPRUNE_RESULTS": str(results),
           "CUDA_VISIBLE_DEVICES": "0" if gpu else ""}
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, "-m", "harness.cli", "sweep", str(grid), "--no-report",
            "--executor", executor]
    if executor == "pool" and not gpu:
        argv += ["--workers", "2"]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(p.stdout[-3000:] + p.stderr[-3000:])
    return seconds


def metrics(results: Path, name: str) -> dict[str, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`vlmprune.kind` = 'cell'")
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    hashes = [r.data.tags["vlmprune.cell_hash"] for r in runs]
    assert len(set(hashes)) == len(hashes), "a cell logged twice"
    return {r.data.tags["vlmprune.cell_hash"]: {k: v for k, v in r.data.metrics.items()
                                                if not k.startswith("time/")} for r in runs}


def largest_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), "different cells"
    return max(abs(a[c][k] - b[c][k]) for c in a for k in a[c] if k in b[c])


def main() -> None:
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args else None
    if only:
        del args[args.index("--only"):args.index("--only") + 2]
    out = Path(args[0]) if args else None

    def say(line: str) -> None:
        print(line, flush=True)
        if out:
            with out.open("a") as f:
                f.write(line + "\n")

    import torch

    say(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, "
        f"{os.cpu_count()} CPU cores")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    root = Path(tempfile.mkdtemp(prefix="vlmprune-gpu-dispatch-"))
    wide = root / "dispatch-bench.yaml"
    wide.write_text(GRID.replace("SUITE", "shapes"))
    grids = [("smoke", ROOT / "experiments" / "smoke.yaml"), ("dispatch-bench", wide)]
    for name, grid in grids:
        if only and name != only:
            continue
        runs = {}
        for label, gpu, executor in (("GPU pool", True, "pool"), ("CPU pool x2", False, "pool"),
                                     ("CPU local", False, "local")):
            results = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
            try:
                seconds = sweep(grid, results, gpu, executor)
            except RuntimeError as e:
                say(f"{name} {label}: FAILED\n{e}")
                continue
            runs[label] = metrics(results, name)
            n = len(runs[label])
            say(f"{name} {label}: {n} cells in {seconds:.1f} s = {60 * n / seconds:.1f} "
                f"cells/min")
            if label == "GPU pool":
                again = sweep(grid, results, gpu, executor)
                same = metrics(results, name) == runs[label]
                say(f"{name} GPU pool resumed: {again:.1f} s, "
                    f"{'nothing rerun' if same else 'RUNS CHANGED'}")
        if "GPU pool" in runs and "CPU pool x2" in runs:
            say(f"{name}: largest |GPU - CPU| metric gap "
                f"{largest_gap(runs['GPU pool'], runs['CPU pool x2']):.4f}")
        if "CPU local" in runs and "CPU pool x2" in runs:
            same = runs["CPU local"] == runs["CPU pool x2"]
            say(f"{name}: CPU pool vs local metrics {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
