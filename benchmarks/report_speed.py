"""How long a report takes on a big grid: 301 cells, 150 settings x 2 calibration seeds plus
dense (made-up results logged through the sweep's tracker, harness/testing/demo.py), read
from MLflow and rendered whole (page, LaTeX, Markdown, every figure). Target: under 20 s."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

GRID = """name: big
description: 300 cells, made-up results, for the report benchmark
base: {prune: {method: wanda}, recover: {method: none}}
axes:
  - prune.method: [wanda, sparsegpt, dsnot]
  - zip:
      prune.sparsity.vision:   [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.3]
      prune.sparsity.language: [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.9]
  - prune.calibration.samples: [16, 32, 64, 128, 256]
  - prune.calibration.seed: [0, 1]
include: [{prune: null}]
"""


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vlmprune-report-bench-"))
    os.environ["VLMPRUNE_RESULTS"] = str(root / "results")
    os.environ["VLMPRUNE_REPORTS"] = str(root / "reports")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    grid = root / "big.yaml"
    grid.write_text(GRID)
    from harness.report import build, data
    from harness.testing import demo

    t0 = time.perf_counter()
    n = demo.fill(str(grid))
    filled = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = data.load("big")
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = build.write("big")
    total = time.perf_counter() - t0
    figs = len(list((out / "figures").glob("*.svg")))
    print(f"{n} cells logged in {filled:.1f} s; report: read MLflow {loaded:.1f} s "
          f"({report.cells.height} rows), whole report {total:.1f} s (target < 20 s), "
          f"{figs} figures, index.html {(out / 'index.html').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
