"""Harness overhead of a search: wall time of `vlmprune search` (a fresh results folder, 12
trials on shapes-llava, wanda, a 50% budget, quick evaluations of 50 documents per task for
the pruner, the full shapes suite per trial as in experiments/modality_search.yaml) over the
sum of its trials' own stage times (model load + prune, evaluation, the quick evaluations
included). Target: <= 1.10.

Everything else is overhead: process start and imports, counting the model's weights on the
meta device, Optuna's storage, MLflow logging, the summary and the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """name: overhead_search
description: search overhead benchmark
base:
  model: {name: shapes-llava}
  prune: {method: wanda, pattern: unstructured}
  recover: {method: none}
  eval: {suite: shapes}
search:
  budget: 0.5
  roles: {vision: {low: 0.0, high: 0.95}, language: {low: 0.0, high: 0.95}}
  trials: 12
  pruner: median
  quick_limit: 50
"""


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vlmprune-search-bench-"))
    grid = root / "overhead_search.yaml"
    grid.write_text(GRID)
    env = {**os.environ, "VLMPRUNE_RESULTS": str(root / "results"),
           "VLMPRUNE_REPORTS": str(root / "reports"), "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "search", str(grid)], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr[-3000:])
    import optuna

    study = optuna.load_study(study_name="overhead_search",
                              storage=f"sqlite:///{root / 'results' / 'optuna.db'}")
    from harness.search.study import info

    own = sum(info(t).get("seconds", 0.0) + info(t).get("quick_seconds", 0.0)
              for t in study.trials)
    states = {s: sum(t.state.name == s for t in study.trials)
              for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"search: {len(study.trials)} trials {states}; wall {wall:.1f} s, trials' own stage "
          f"time {own:.1f} s, ratio {wall / own:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
