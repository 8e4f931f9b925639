"""Harness overhead of a sweep: P = 2 prune settings x 3 recovery methods (none, lora,
sparselora) on shapes-llava, swept into a fresh results folder.

Checks that it runs P prune stages, not 3P, and prints wall time / (sum of the unique stages'
own times: model load + prune, recovery training, evaluation). Target <= 1.1.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

GRID = """name: overhead
description: 2 prune settings x 3 recovery methods
base:
  prune: {method: wanda}
  recover: {steps: 60, batch_size: 16}
  eval: {suite: quick, limit: 200}
axes:
  - zip: {prune.pattern: [unstructured, "2:4"], prune.sparsity: [0.6, 0.5]}
  - recover.method: [none, lora, sparselora]
"""


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vlmprune-overhead-"))
    os.environ["VLMPRUNE_RESULTS"] = str(root / "results")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    grid = root / "overhead.yaml"
    grid.write_text(GRID)
    from harness.cli import write_report
    from harness.paths import cache_dir
    from harness.sweep import runner

    t0 = time.perf_counter()
    code = runner.sweep(str(grid), progress=False)
    write_report(str(grid))  # as `vlmprune sweep` does
    wall = time.perf_counter() - t0
    stages = {s: list(cache_dir(s).glob("[!.]*")) for s in ("prune", "recover", "eval")}
    own = 0.0
    for d in stages["prune"]:
        own += json.loads((d / "report.json").read_text())["seconds"]["stage"]
    for d in stages["recover"]:
        own += json.loads((d / "report.json").read_text())["seconds"]
    for d in stages["eval"]:
        own += json.loads((d / "result.json").read_text())["seconds"]["evaluate"]
    print(f"sweep exit {code}: {len(stages['eval'])} cells, {len(stages['prune'])} prune stages "
          f"(not {len(stages['eval'])}), {len(stages['recover'])} recovery stages")
    print(f"wall {wall:.1f} s, unique stages' own time {own:.1f} s, ratio {wall / own:.3f} "
          "(target <= 1.1)")
    sys.exit(code)


if __name__ == "__main__":
    main()
