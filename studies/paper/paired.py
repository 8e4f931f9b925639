"""The paper study's verdicts re-read with paired tests (decision 026): for each comparison a
finding rests on, B − A in VQA exact match at each seed (exact McNemar on the 1000 questions
both answered) and over the seeds (the seed-averaged scores, paired bootstrap), each with its
95% interval; p-values Holm-corrected over every comparison here.

Read from the MLflow store `make paper` filled (the tracking URI in force, or
VLMPRUNE_RESULTS): `python -m studies.paper.paired [--out reports/paper/paired.md]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.evaluation import paired
from harness.evaluation.intervals import Metric
from harness.report import data, significance
from harness.sweep.grid import EXPERIMENTS

PAPER = EXPERIMENTS / "paper"
EM = Metric("exact_match", "mean")
SEEDS = ("0", "1", "2")

# (finding, question, grid, A's parameters, B's parameters): B − A
COMPARISONS = [
    ("1", "60:40 vs 50:50 (100%)", "modality_ratio",
     {"prune.sparsity.vision": "0.5", "prune.sparsity.language": "0.5"},
     {"prune.sparsity.vision": "0.6", "prune.sparsity.language": "0.4"}),
    ("1", "60:60 vs 70:50 (120%)", "modality_ratio",
     {"prune.sparsity.vision": "0.7", "prune.sparsity.language": "0.5"},
     {"prune.sparsity.vision": "0.6", "prune.sparsity.language": "0.6"}),
    ("1", "55:46 vs 50:50 (budget 50%)", "equal_budget",
     {"prune.sparsity": "0.5", "prune.vision_share": "0.4545"},
     {"prune.sparsity": "0.5", "prune.vision_share": "0.5"}),
    ("1", "60:61 vs 66:56 (budget 60%)", "equal_budget",
     {"prune.sparsity": "0.6", "prune.vision_share": "0.5"},
     {"prune.sparsity": "0.6", "prune.vision_share": "0.4545"}),
    *[("2", f"language-only vs both ({lv})", "modality_choice",
       {"prune.distribution": "equal", **lk}, {"prune.distribution": "language_only", **lk})
      for lv, lk in (("70%", {"prune.pattern": "unstructured", "prune.sparsity": "0.7"}),
                     ("2:4", {"prune.pattern": "2:4"}))],
    *[("2", f"vision-only vs language-only ({lv})", "modality_choice",
       {"prune.distribution": "language_only", **lk},
       {"prune.distribution": "vision_only", **lk})
      for lv, lk in (("70%", {"prune.pattern": "unstructured", "prune.sparsity": "0.7"}),
                     ("2:4", {"prune.pattern": "2:4"}))],
    *[("3", f"Wanda vs magnitude ({lv})", "methods", {"prune.method": "magnitude", **lk},
       {"prune.method": "wanda", **lk})
      for lv, lk in (("50%", {"prune.pattern": "unstructured", "prune.sparsity": "0.5"}),
                     ("2:4", {"prune.pattern": "2:4"}))],
    *[("3", f"SparseGPT vs Wanda ({lv})", "methods", {"prune.method": "wanda", **lk},
       {"prune.method": "sparsegpt", **lk})
      for lv, lk in (("50%", {"prune.pattern": "unstructured", "prune.sparsity": "0.5"}),
                     ("60%", {"prune.pattern": "unstructured", "prune.sparsity": "0.6"}),
                     ("70%", {"prune.pattern": "unstructured", "prune.sparsity": "0.7"}),
                     ("2:4", {"prune.pattern": "2:4"}))],
    *[("3 probe", f"{b_name} vs {a_name} ({lv})", "sparsegpt_probe",
       {"prune.method": a, **lk}, {"prune.method": b, **lk})
      for a, a_name, b, b_name in (("wanda", "Wanda", "sparsegpt-mask", "SparseGPT's mask"),
                                   ("sparsegpt-mask", "SparseGPT's mask", "sparsegpt",
                                    "SparseGPT"))
      for lv, lk in (("50%", {"prune.pattern": "unstructured", "prune.sparsity": "0.5"}),
                     ("60%", {"prune.pattern": "unstructured", "prune.sparsity": "0.6"}),
                     ("70%", {"prune.pattern": "unstructured", "prune.sparsity": "0.7"}),
                     ("2:4", {"prune.pattern": "2:4"}))],
    *[("4", f"SparseLoRA vs LoRA ({lv})", "recovery", {"recover.method": "lora", **lk},
       {"recover.method": "sparselora", **lk})
      for lv, lk in (("2:4", {"prune.pattern": "2:4"}),
                     ("70%", {"prune.pattern": "unstructured"}))],
]


def runs_of(report: data.Report, where: dict[str, str]) -> dict[str, str]:
    """seed -> run id of the finished cells matching `where`."""
    rows = report.finished.to_dicts()
    out = {}
    for r in rows:
        if all(str(r.get(f"p.{k}")) == v for k, v in where.items()):
            seed = str(r.get("p.seed", "0"))
            out[seed] = r["run_id"]
    return out


def rows(grid: str, cache: dict) -> tuple[data.Report, dict]:
    if grid not in cache:
        report = data.load(grid, source=str(PAPER / f"{grid}.yaml"))
        ids = report.finished["run_id"].to_list()
        cache[grid] = (report, significance.samples(report.meta["uri"], ids))
    return cache[grid]


def table(grids: set[str] | None = None) -> str:
    """The comparisons (of `grids` only, when given; Holm over those) as a Markdown table."""
    cache: dict = {}
    found = []
    for finding, question, grid, a, b in COMPARISONS:
        if grids is not None and grid not in grids:
            continue
        report, samples = rows(grid, cache)
        ra, rb = runs_of(report, a), runs_of(report, b)
        per_seed = {s: paired.compare([samples[ra[s]]["shapes_vqa"]],
                                      [samples[rb[s]]["shapes_vqa"]], EM)
                    for s in SEEDS if s in ra and s in rb}
        both = [s for s in SEEDS if s in ra and s in rb]
        pooled = paired.compare([samples[ra[s]]["shapes_vqa"] for s in both],
                                [samples[rb[s]]["shapes_vqa"] for s in both], EM)
        found.append((finding, question, per_seed, pooled))
    ps = [d.p for *_, per_seed, pooled in found for d in (*per_seed.values(), pooled)
          if d is not None]
    adjusted = iter(paired.holm(ps))
    lines = ["| finding | B vs A | " + " | ".join(f"seed {s}: Δ [95%], p" for s in SEEDS)
             + " | seeds averaged: Δ [95%], p |", "|" + " --- |" * (len(SEEDS) + 3)]
    for finding, question, per_seed, pooled in found:
        cells = [_cell(per_seed.get(s), adjusted) for s in SEEDS] + [_cell(pooled, adjusted)]
        lines.append(f"| {finding} | {question} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(d: paired.Difference | None, adjusted) -> str:
    if d is None:
        return "-"
    p = next(adjusted)
    mark = "**" if p < 0.05 else ""
    return (f"{mark}{100 * d.delta:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]{mark}, "
            f"p {p:.2g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--grids", help="only the comparisons of these grids (comma-separated)")
    a = ap.parse_args()
    text = ("VQA exact match, points (B − A); bold: significant after Holm over the whole "
            "table (5%).\n\n" + table(set(a.grids.split(",")) if a.grids else None))
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
