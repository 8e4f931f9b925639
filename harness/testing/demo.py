"""Fill an MLflow experiment with made-up results for a grid, through the sweep's own tracker.

For tests and benchmarks of reports, which must see every shape a store can hold (seeds,
failed cells, cells still running, hundreds of cells) without running hundreds of cells.
Scores are a smooth made-up function of each cell's sparsity plus seeded noise; nothing
here is a measurement, and no report built from it is evidence of anything.
"""

from __future__ import annotations

import random

from harness.sweep import grid
from harness.sweep.cell import CellSpec
from harness.sweep.result import CellResult
from harness.sweep.tracking import TAG_HASH, TAG_KIND, Tracker

TYPES = ("color", "shape", "size", "count", "spatial")


def _mean(v: float | list[float]) -> float:
    return sum(v) / len(v) if isinstance(v, list) else v


def _levels(spec: CellSpec) -> dict[str, float]:
    p = spec.prune
    if p is None:
        return {"vision": 0.0, "language": 0.0}
    if isinstance(p.sparsity, dict):
        return {r: _mean(p.sparsity.get(r, 0.0)) for r in ("vision", "language")}
    s = p.sparsity
    return {"vision": 0.0 if p.distribution == "language_only" else s,
            "language": 0.0 if p.distribution == "vision_only" else s}


def result(spec: CellSpec, label: str, docs: int = 0, shift: float = 0.0) -> CellResult:
    """A made-up result with the sweep's shape: metrics, sparsity, seconds, reports; with
    `docs`, per-document VQA answers too (a document is answered when its made-up
    difficulty is below the cell's score, so two cells differ on the documents between
    their scores: paired, as real cells are), and the exact match their mean. `shift` moves
    every score (another model's grid)."""
    lv = _levels(spec)
    rng = random.Random(f"{label}|{spec.seed}")
    recovered = {"none": 0.0, "lora": 0.5, "sparselora": 0.7,
                 "lora-remask": 0.3}.get(spec.recover.method, 0.5)
    if spec.recover.method != "none":  # more steps recover more (up to 300)
        recovered *= min(1.0, (spec.recover.steps / 300) ** 0.25)
    drop = (0.8 * lv["vision"] ** 3 + 1.1 * lv["language"] ** 3) * (1 - recovered)
    score = max(0.0, min(1.0, 0.95 - drop + shift + rng.gauss(0, 0.01)))
    samples = {}
    if docs:
        hard = random.Random("difficulty")
        hits = [float(hard.random() < score) for _ in range(docs)]
        samples = {"shapes_vqa": [{"doc_id": i, "exact_match": h}
                                  for i, h in enumerate(hits)]}
        score = sum(hits) / docs
    metrics = {"shapes_vqa/exact_match": score,
               "shapes_caption/cider": max(0.0, 9.5 * (1 - 1.3 * drop) + rng.gauss(0, 0.1))}
    metrics |= {f"shapes_vqa/{t}_exact_match": max(0.0, min(1.0, score + rng.gauss(0, 0.03)))
                for t in TYPES}
    overall = (lv["vision"] + lv["language"]) / 2
    if spec.recover.method == "lora":
        overall = 0.0  # a plain LoRA merge makes the weights dense
    return CellResult(metrics=metrics,
                      sparsity={"vision": lv["vision"], "language": lv["language"],
                                "bridge": 0.0, "overall": overall,
                                "nonzero": 5e6 * (1 - overall)},
                      seconds={"prune": 3.0, "recover": 0.0, "evaluate": 12.0},
                      prune={"roles": {r: {"target": v} for r, v in lv.items()}},
                      recover={"method": spec.recover.method}, samples=samples)


def fill(grid_name: str, failed: tuple[int, ...] = (), running: tuple[int, ...] = (),
         artifacts: bool = False, docs: int = 0, shift: float = 0.0) -> int:
    """Log every cell of a grid with a made-up result; cells whose index is in `failed` as
    FAILED with a reason, in `running` as left RUNNING; `docs` and `shift` as `result`
    takes them (per-document answers are logged as the samples artifact). Returns the
    number of cells."""
    g, cells = grid.expand(grid_name)
    tracker = Tracker(g.name, g.description)
    parent = tracker.start_sweep(len(cells), None)
    for cell in cells:
        if cell.index in running:
            run = tracker.client.create_run(tracker.experiment_id, run_name=cell.label,
                                            tags={TAG_KIND: "cell", TAG_HASH: cell.hash,
                                                  "mlflow.parentRunId": parent})
            tracker.client.log_param(run.info.run_id, "prune", str(cell.spec.prune))
            continue
        if cell.index in failed:
            tracker.log_cell(parent, cell, None, "OutOfMemoryError: made up for a test")
            continue
        # a benchmark of hundreds of cells skips the JSON artifacts
        tracker.log_cell(parent, cell, result(cell.spec, cell.label, docs, shift),
                         artifacts=artifacts or docs > 0)
    tracker.end_sweep(parent, len(failed), len(cells) - len(failed))
    return len(cells)
