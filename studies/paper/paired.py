"""The paper study's verdicts re-read with paired tests (decision 026): for each comparison a
finding rests on, B − A in VQA exact match at each seed (exact McNemar on the 1000 questions
both answered) and over the seeds (the seed-averaged scores, paired bootstrap), each with its
95% interval; p-values Holm-corrected in two families: every per-seed test, and every
seeds-averaged one (a bootstrap p is at least 1/2001, so one family of all ~200 could never
reach 5% in the column the verdicts rest on).

Read from the MLflow store `make paper` filled (the tracking URI in force, or
VLMPRUNE_RESULTS): `python -m studies.paper.paired [--out reports/paper/paired.md]`; the summary
writes the same table (`paired.md`, and in findings.md). `--extra`: the comparisons on the grids
outside `make paper` (recovery_steps' 300-step level, ECoFLaP's block estimator), Holm over
those.
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
    *[("4", f"{b_name} vs {a_name} ({lv}, {n} steps)", "recovery",
       {"recover.method": a, "recover.steps": n, **lk},
       {"recover.method": "sparselora", "recover.steps": n, **lk})
      for a, a_name, b_name in (("lora-remask", "LoRA + mask", "SparseLoRA"),
                                ("lora", "LoRA (dense)", "SparseLoRA"))
      for lv, lk in (("2:4", {"prune.pattern": "2:4"}),
                     ("80%", {"prune.pattern": "unstructured"}))
      for n in ("10", "30", "100")],
    *[("alloc", f"{b_name} vs {a_name} ({m}, {lv})", "allocation",
       {"prune.distribution": a, "prune.method": m, "prune.sparsity": s},
       {"prune.distribution": b, "prune.method": m, "prune.sparsity": s})
      for a, a_name, b, b_name in (("equal", "uniform", "owl", "OWL"),
                                   ("equal", "uniform", "ecoflap", "ECoFLaP"),
                                   ("owl", "OWL", "ecoflap", "ECoFLaP"))
      for m in ("wanda", "sparsegpt")
      for lv, s in (("60%", "0.6"), ("70%", "0.7"))],
]

# Outside `make paper` (their grids are not in it): (finding, question, (grid A, grid B), A, B)
EXTRA = [
    *[("4", f"SparseLoRA vs {a_name} ({lv}, 300 steps)", "recovery_steps",
       {"recover.method": a, "recover.steps": "300", **lk},
       {"recover.method": "sparselora", "recover.steps": "300", **lk})
      for a, a_name in (("lora-remask", "LoRA + mask"), ("lora", "LoRA (dense)"))
      for lv, lk in (("2:4", {"prune.pattern": "2:4"}),
                     ("80%", {"prune.pattern": "unstructured"}))],
    *[("alloc", f"ECoFLaP per tensor vs per block ({m}, {lv})", ("allocation_block", "allocation"),
       {"prune.method": m, "prune.sparsity": s},
       {"prune.distribution": "ecoflap", "prune.method": m, "prune.sparsity": s})
      for m in ("wanda", "sparsegpt") for lv, s in (("60%", "0.6"), ("70%", "0.7"))],
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


def table(grids: set[str] | None = None, comparisons: list | None = None) -> str:
    """The comparisons (of `grids` only, when given; Holm over those) as a Markdown table:
    `comparisons` (default COMPARISONS) whose grids all lie in `grids`."""
    cache: dict = {}
    found = []
    for finding, question, grid, a, b in COMPARISONS if comparisons is None else comparisons:
        grid_a, grid_b = (grid, grid) if isinstance(grid, str) else grid
        if grids is not None and not {grid_a, grid_b} <= grids:
            continue
        (report_a, samples_a), (report_b, samples_b) = rows(grid_a, cache), rows(grid_b, cache)
        ra, rb = runs_of(report_a, a), runs_of(report_b, b)
        per_seed = {s: paired.compare([samples_a[ra[s]]["shapes_vqa"]],
                                      [samples_b[rb[s]]["shapes_vqa"]], EM)
                    for s in SEEDS if s in ra and s in rb}
        both = [s for s in SEEDS if s in ra and s in rb]
        if not both:
            raise SystemExit(f"{question}: no seed has both cells in {grid_a} / {grid_b} "
                             "(run their grids first)")
        pooled = paired.compare([samples_a[ra[s]]["shapes_vqa"] for s in both],
                                [samples_b[rb[s]]["shapes_vqa"] for s in both], EM)
        found.append((finding, question, per_seed, pooled))
    # two families, each Holm-corrected on its own: the per-seed tests (exact McNemar) and the
    # seeds-averaged ones (paired bootstrap, whose p is at least 1/2001: one family of all
    # would put that floor times ~200 above 5%, and the verdicts rest on this column)
    seed_ps = iter(paired.holm([d.p for *_, per_seed, _ in found for d in per_seed.values()
                               if d is not None]))
    pooled_ps = iter(paired.holm([pooled.p for *_, pooled in found if pooled is not None]))
    lines = ["| finding | B vs A | " + " | ".join(f"seed {s}: Δ [95%], p" for s in SEEDS)
             + " | seeds averaged: Δ [95%], p |", "|" + " --- |" * (len(SEEDS) + 3)]
    for finding, question, per_seed, pooled in found:
        cells = [_cell(per_seed.get(s), seed_ps) for s in SEEDS] + [_cell(pooled, pooled_ps)]
        lines.append(f"| {finding} | {question} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(d: paired.Difference | None, adjusted) -> str:
    if d is None:
        return "-"
    p = next(adjusted)
    mark = "**" if p < 0.05 else ""
    return (f"{mark}{100 * d.delta:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]{mark}, "
            f"p {p:.2g}")


HEAD = ("VQA exact match, points (B − A), with its 95% interval; bold: significant at 5% "
        "after Holm, over the per-seed columns together (exact McNemar on the questions) and "
        "over the seeds-averaged column (paired bootstrap of the three seeds' mean).\n\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--grids", help="only the comparisons of these grids (comma-separated)")
    ap.add_argument("--extra", action="store_true",
                    help="the comparisons outside make paper (recovery_steps, allocation_block)")
    a = ap.parse_args()
    text = HEAD + table(set(a.grids.split(",")) if a.grids else None,
                        EXTRA if a.extra else None)
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
