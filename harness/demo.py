"""A small end-to-end run until the sweep runner lands: shapes-llava, magnitude pruning at
vision:language splits of a 100% total (the paper's modality-ratio figure), VQA accuracy."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from harness.models.load import load
from harness.zoo.check import prune_magnitude, vqa_accuracy

SPLITS = ((0.0, 0.0), (0.1, 0.9), (0.3, 0.7), (0.5, 0.5), (0.7, 0.3), (0.9, 0.1))


def main(model: str = "shapes-llava", grid: str = "modality_ratio", questions: int = 500) -> int:
    console = Console(width=120)
    console.print(f"[bold]vlmprune demo[/] ({grid}: the sweep runner is not built yet; this runs "
                  f"its modality-ratio cells with magnitude pruning on {model})")
    table = Table("vision", "language", "sparsity", "VQA", "color", "shape", "size", "count",
                  "spatial", "seconds")
    for v, lang in SPLITS:
        t0 = time.perf_counter()
        adapter = load(model)
        achieved = prune_magnitude(adapter, {"vision": v, "language": lang})
        acc = vqa_accuracy(adapter, questions)
        table.add_row(f"{v:.0%}", f"{lang:.0%}", f"{achieved:.3f}", f"{acc['overall']:.3f}",
                      *(f"{acc[t]:.3f}" for t in ("color", "shape", "size", "count", "spatial")),
                      f"{time.perf_counter() - t0:.1f}")
    console.print(table)
    return 0
