"""Racing against scoring every cell whole, on the shipped modality_ratio, methods and
allocation grids (full shapes suite: 1000 questions, 500 captions a cell).

Each grid is swept twice, side by side in fresh results folders (each computes its own
prune stages): as shipped, and with `eval: {race: {start: 100, growth: 2, tolerance:
0.01, finish: F}}` in its base, for each F given (`--finish suite,none`; default suite:
the settings left are scored on the whole suite; none: the race's last group keeps the
documents the race used). Printed per grid and F: the full evaluation's best pruned cell (VQA exact
match) and whether the race's winner group (the settings it scored whole) holds it; the
documents evaluated (counted from the eval stages' samples, slices included) and their
ratio; the wall-time ratio of the two sweeps.

    .venv/bin/python benchmarks/racing.py [--finish suite,none] [GRID ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ("modality_ratio", "methods", "allocation")
RACE = {"start": 100, "growth": 2, "tolerance": 0.01}
METRIC = "shapes_vqa/exact_match"


def sweep(grid: Path, results: Path) -> float:
    env = os.environ | {"VLMPRUNE_RESULTS": str(results)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--no-report"],
                   env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def documents(results: Path) -> int:
    """Documents evaluated: every eval stage's samples, slices included."""
    return sum(len(rows) for f in (results / "cache" / "eval").glob("*/samples.json")
               for rows in json.loads(f.read_text()).values())


def runs(results: Path, name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`vlmprune.kind` = 'cell'")


def setting(run) -> str:
    return ", ".join(p for p in run.info.run_name.split(", ") if not p.startswith("seed="))


def bench(name: str, root: Path, finishes: list[str]) -> None:
    data = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    plain = root / f"{name}.yaml"
    plain.write_text(yaml.safe_dump(data, sort_keys=False))
    t_full = sweep(plain, root / name / "full")  # each in its own results folder
    full = [r for r in runs(root / name / "full", name) if r.data.params.get("prune") != "None"]
    best = max(full, key=lambda r: r.data.metrics[METRIC])
    d_full = documents(root / name / "full")
    print(f"{name}: {len(full)} pruned cells; full evaluation's best {setting(best)} "
          f"({best.data.metrics[METRIC]:.3f}); {d_full} documents, {t_full:.0f} s", flush=True)
    for finish in finishes:
        raced, label = root / f"{name}-{finish}.yaml", f"{name}-race-{finish}"
        data["name"] = label
        data["base"].setdefault("eval", {})["race"] = RACE | {"finish": finish}
        raced.write_text(yaml.safe_dump(data, sort_keys=False))
        t_race = sweep(raced, root / name / finish)
        race = runs(root / name / finish, label)
        group = {setting(r) for r in race
                 if r.data.tags.get("vlmprune.race") in ("survived", "group")}
        d_race = documents(root / name / finish)
        print(f"  race, finish: {finish}: winner group ({len(group)}) "
              f"{'holds it' if setting(best) in group else 'MISSES it'}; documents "
              f"{d_race}/{d_full} = {d_race / d_full:.1%}; wall time {t_race:.0f}/{t_full:.0f}"
              f" s = {t_race / t_full:.2f}x", flush=True)
        for r in sorted(race, key=lambda r: r.data.tags.get("vlmprune.race", "")):
            note = r.data.tags.get("vlmprune.race.note", "")
            print(f"    {setting(r)}: {r.data.tags.get('vlmprune.race', '-')} {note}")


def main() -> None:
    args, finishes = sys.argv[1:], ["suite"]
    if args[:1] == ["--finish"]:
        finishes, args = args[1].split(","), args[2:]
    root = Path(tempfile.mkdtemp(prefix="vlmprune-race-bench-"))
    for name in args or GRIDS:
        bench(name, root, finishes)


if __name__ == "__main__":
    main()
