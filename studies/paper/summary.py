"""The paper study's summary (`make paper`, last step): the main figure and the findings.

Each grid of experiments/paper/ has its own report (its sweep wrote it under reports/paper/);
this adds, from the same MLflow store:
- `main.{svg,png,pdf}`: VQA accuracy against vision sparsity on the paper's axis (vision +
  language = 100% / 120%), beside the same question at an equal parameter-weighted budget
  (50% / 60% of the prunable weights, only vision's part moving), mean ± std over seeds;
- `findings.md` and `findings.json`: the numbers docs/REPRODUCTION.md quotes, per finding;
- `paired.md` (also the end of findings.md): each comparison a verdict rests on, B − A with
  its 95% interval per seed and seeds averaged, Holm-corrected (studies/paper/paired.py);
- `index.html`: both, and links to every grid's report.

`python -m studies.paper.summary --out reports/paper` (from the checkout).
"""

from __future__ import annotations

import argparse
import html
import io
import json
import math
from pathlib import Path

import polars as pl

from harness.report import data, figures
from harness.sweep.grid import EXPERIMENTS
from studies.paper import paired

PAPER = EXPERIMENTS / "paper"
GRIDS = ("modality_ratio", "modality_choice", "methods", "sparsegpt_probe", "recovery",
         "equal_budget", "allocation")
VQA = "shapes_vqa/exact_match"
CIDER = "shapes_caption/cider"


def aggregated(grid: str) -> pl.DataFrame:
    return data.aggregate(data.load(grid, source=str(PAPER / f"{grid}.yaml")))


def _f(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def stat(row: dict, metric: str = VQA) -> dict:
    """{"mean", "std", "n"} of a metric in an aggregated row (std 0 for one seed)."""
    return {"mean": _f(row.get(metric)), "std": _f(row.get(f"{metric}.std")) or 0.0,
            "n": int(row.get("n") or 0)}


def fmt(s: dict, scale: float = 100.0) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean'] * scale:.1f} ± {s['std'] * scale:.1f}"


def _dense(agg: pl.DataFrame) -> dict:
    rows = agg.filter(pl.col(data.DENSE)).to_dicts()
    return rows[0] if rows else {}


def _pruned(agg: pl.DataFrame) -> list[dict]:
    return figures.pruned(agg).to_dicts()


def ratio_findings(agg: pl.DataFrame) -> dict:
    """Finding 1: per split of a 100% / 120% total, the VQA accuracy and the share of all
    prunable weights it prunes."""
    out: dict[str, list] = {}
    for r in _pruned(agg):
        v = _f(r.get("p.prune.sparsity.vision")) or 0.0
        lang = _f(r.get("p.prune.sparsity.language")) or 0.0
        total = f"{round((v + lang) * 100)}%"
        out.setdefault(total, []).append({
            "split": f"{v * 100:.0f}:{lang * 100:.0f}", "vision": v, "language": lang,
            "overall": _f(r.get("sparsity.overall")), "vqa": stat(r), "cider": stat(r, CIDER)})
    for rows in out.values():
        rows.sort(key=lambda x: x["vision"])
    return out


def choice_findings(agg: pl.DataFrame) -> dict:
    out: dict[str, dict] = {}
    for r in _pruned(agg):
        out.setdefault(figures.level(r), {})[r["p.prune.distribution"]] = {
            "vqa": stat(r), "cider": stat(r, CIDER), "overall": _f(r.get("sparsity.overall"))}
    return out


def method_findings(agg: pl.DataFrame) -> dict:
    out: dict[str, dict] = {}
    for r in _pruned(agg):
        out.setdefault(figures.level(r), {})[r["p.prune.method"]] = {"vqa": stat(r),
                                                               "cider": stat(r, CIDER)}
    return out


def recovery_findings(agg: pl.DataFrame) -> dict:
    """Finding 4: per level, the pruned model unrecovered (`none`) and, per recovery budget
    (steps), each recovery method's score and sparsity after recovery."""
    out: dict[str, dict] = {}
    for r in _pruned(agg):
        at = out.setdefault(figures.level(r), {"none": None, "steps": {}})
        entry = {"vqa": stat(r), "cider": stat(r, CIDER),
                 "overall": _f(r.get("sparsity.overall"))}
        if r["p.recover.method"] == "none":
            at["none"] = entry
        else:
            at["steps"].setdefault(str(r["p.recover.steps"]), {})[r["p.recover.method"]] = entry
    for at in out.values():
        at["steps"] = dict(sorted(at["steps"].items(), key=lambda kv: int(kv[0])))
    return out


def allocation_findings(agg: pl.DataFrame) -> dict:
    """Uniform vs OWL vs ECoFLaP, per method and level."""
    out: dict[str, dict] = {}
    for r in _pruned(agg):
        out.setdefault(f"{r['p.prune.method']} {figures.level(r)}", {})[
            r["p.prune.distribution"]] = {"vqa": stat(r), "cider": stat(r, CIDER)}
    return out


def budget_findings(agg: pl.DataFrame) -> dict:
    out: dict[str, list] = {}
    for r in _pruned(agg):
        out.setdefault(f"{_f(r.get('p.prune.sparsity')):.0%}", []).append({
            "vision_share": _f(r.get("p.prune.vision_share")),
            "vision": _f(r.get("target.vision")), "language": _f(r.get("target.language")),
            "overall": _f(r.get("sparsity.overall")), "vqa": stat(r), "cider": stat(r, CIDER)})
    for rows in out.values():
        rows.sort(key=lambda x: x["vision_share"])
    return out


def main_figure(ratio: dict, budget: dict, search: dict | None = None):
    """Left: the paper's axis; right: equal parameter-weighted budgets (with the search's best
    at 50%, a star). x: vision sparsity."""
    plt = figures.plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    panels = [(axes[0], ratio, "vision + language = {}",
               "The paper's axis: vision + language sparsity fixed"),
              (axes[1], budget, "{} of all prunable weights",
               "Equal budget: pruned share of all weights fixed")]
    for ax, series, label, title in panels:
        for i, key in enumerate(sorted(series)):
            rows = series[key]
            ax.errorbar([r["vision"] for r in rows], [r["vqa"]["mean"] for r in rows],
                        yerr=[r["vqa"]["std"] for r in rows], marker="o", capsize=3,
                        color=figures.COLORS[i % len(figures.COLORS)],
                        label=label.format(key))
        ax.set(xlabel="vision sparsity", title=title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if search and "sparsity.vision" in search.get("params", {}):
        axes[1].plot([search["params"]["sparsity.vision"]], [search["vqa"]], marker="*",
                     ms=14, ls="none", color="black", label="search best, 50% (one seed)")
        axes[1].legend(fontsize=8)
    axes[0].set_ylabel("VQA exact match (shapes)")
    fig.tight_layout()
    return fig


def search_findings(name: str = "modality_search") -> dict:
    """The search's best complete trial and the trials' counts, from its Optuna storage."""
    import optuna

    from harness.search.study import info, storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage_url(None))
    except Exception:  # noqa: BLE001 - no search run: the summary says so
        return {}
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return {}
    best = max(done, key=lambda t: t.values[0])
    return {"complete": len(done), "trials": len(study.trials), "vqa": best.values[0],
            "trial": best.number, "params": {k: round(v, 4) for k, v in best.params.items()},
            "achieved": info(best).get("achieved")}


def findings() -> dict:
    aggs = {g: aggregated(g) for g in GRIDS}
    dense = _dense(aggs["modality_ratio"])
    return {"dense": {"vqa": stat(dense), "cider": stat(dense, CIDER)},
            "search": search_findings(),
            "modality_ratio": ratio_findings(aggs["modality_ratio"]),
            "equal_budget": budget_findings(aggs["equal_budget"]),
            "modality_choice": choice_findings(aggs["modality_choice"]),
            "methods": method_findings(aggs["methods"]),
            "sparsegpt_probe": method_findings(aggs["sparsegpt_probe"]),
            "recovery": recovery_findings(aggs["recovery"]),
            "allocation": allocation_findings(aggs["allocation"])}


def markdown(f: dict) -> str:
    lines = ["# The paper study on shapes-llava: findings",
             "", "VQA exact match on the shapes test split (1000 questions), in %, mean ± std "
             "over 3 seeds (sample std); CIDEr on its 500 captions. Written by "
             "`python -m studies.paper.summary` from the MLflow store `make paper` filled.", "",
             f"Dense: VQA {fmt(f['dense']['vqa'])}, CIDEr "
             f"{fmt(f['dense']['cider'], 1)}", "",
             "## 1. Vision:language split (wanda, unstructured)", "",
             "| total | split | pruned share of all weights | VQA | CIDEr |",
             "| --- | --- | --- | --- | --- |"]
    for total, rows in sorted(f["modality_ratio"].items()):
        lines += [f"| {total} | {r['split']} | {r['overall']:.3f} | {fmt(r['vqa'])} | "
                  f"{fmt(r['cider'], 1)} |" for r in rows]
    lines += ["", "## 1b. The same question at an equal parameter-weighted budget", "",
              "| budget | vision share | vision | language | VQA | CIDEr |",
              "| --- | --- | --- | --- | --- | --- |"]
    for budget, rows in sorted(f["equal_budget"].items()):
        lines += [f"| {budget} | {r['vision_share']:.2f} | {r['vision']:.3f} | "
                  f"{r['language']:.3f} | {fmt(r['vqa'])} | {fmt(r['cider'], 1)} |"
                  for r in rows]
    if f.get("search"):
        se = f["search"]
        lines += ["", f"Search (`modality_search`, 50% budget, one seed): best of {se['complete']} "
                  f"complete trials ({se['trials']} asked): trial {se['trial']}, "
                  f"{se['params']}, achieved budget {_f(se['achieved']) or 0:.4f}, "
                  f"VQA {se['vqa'] * 100:.1f}"]
    lines += _settings(f["modality_choice"], "2. Which modality to prune (wanda)",
                       ["equal", "language_only", "vision_only"])
    lines += _settings(f["methods"], "3. Methods (both modalities)",
                       ["magnitude", "random", "wanda", "sparsegpt", "dsnot"])
    lines += _settings(f["sparsegpt_probe"],
                       "3b. Probe: SparseGPT's mask without its weight update",
                       ["wanda", "sparsegpt-mask", "sparsegpt"])
    lines += _recovery_table(f["recovery"])
    lines += _settings(f["allocation"], "5. Layer-wise allocation (ECoFLaP's estimator per tensor)",
                       ["equal", "owl", "ecoflap"])
    return "\n".join(lines) + "\n"


def _settings(by_level: dict, title: str, cols: list[str]) -> list[str]:
    """A section: a row per level, a column per setting, VQA mean ± std ("-" where absent)."""
    lines = ["", f"## {title}", "", "| setting | " + " | ".join(cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for level, by in by_level.items():
        cells = [fmt(by[c]["vqa"]) if c in by else "-" for c in cols]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return lines


RECOVERY = ["lora-remask", "sparselora", "lora"]


def _recovery_table(rec: dict) -> list[str]:
    lines = ["", "## 4. Recovery against its budget (wanda, both modalities)", "",
             "VQA, and in brackets the sparsity of all prunable weights after recovery.", "",
             "| level | steps | " + " | ".join(RECOVERY) + " |",
             "| --- | --- |" + " --- |" * len(RECOVERY)]
    for level, at in rec.items():
        if at["none"]:
            n = at["none"]
            lines.append(f"| {level} | 0 (not recovered) | {fmt(n['vqa'])} "
                         f"({n['overall']:.3f}) |" + " |" * (len(RECOVERY) - 1))
        for steps, by in at["steps"].items():
            cells = [f"{fmt(by[m]['vqa'])} ({by[m]['overall']:.3f})" if m in by else "-"
                     for m in RECOVERY]
            lines.append(f"| {level} | {steps} | " + " | ".join(cells) + " |")
    return lines


def write(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    f = findings()
    fig = main_figure(f["modality_ratio"], f["equal_budget"], f.get("search"))
    svg = io.StringIO()
    figures.save(fig, svg, "svg")
    (out / "main.svg").write_text(svg.getvalue())
    figures.save(fig, out / "main.png", "png", dpi=150)
    figures.save(fig, out / "main.pdf", "pdf")
    figures.plt.close(fig)
    (out / "findings.json").write_text(json.dumps(f, indent=1) + "\n")
    comparisons = paired.HEAD + paired.table()
    (out / "paired.md").write_text(comparisons)
    md = markdown(f) + "\n## Paired comparisons (what is significant)\n\n" + comparisons
    (out / "findings.md").write_text(md)
    extra = [("modality_search/trials.txt", "the search's trials (modality_search)"),
             ("modality_search/search/history.svg", "the search's history"),
             ("modality_search/search/slice.svg", "the search's score by vision sparsity"),
             ("probe_outliers.md", "probe: magnitude vs Wanda with and without the outliers"),
             ("findings.md", "these findings as Markdown"),
             ("paired.md", "the paired comparisons (per seed and seeds averaged, Holm)"),
             ("findings.json", "and as JSON")]
    links = "".join(f'<li><a href="{g}/index.html">{g}</a> (HTML; LaTeX: {g}/report.tex)</li>'
                    for g in GRIDS if (out / g / "index.html").exists())
    links += "".join(f'<li><a href="{path}">{html.escape(text)}</a></li>'
                     for path, text in extra if (out / path).exists())
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>vlmprune: the paper study"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "pre{white-space:pre-wrap}</style></head><body><h1>The paper study on shapes-llava</h1>"
        f"<p>See docs/REPRODUCTION.md for the verdicts.</p>{svg.getvalue()}"
        f"<h2>Reports</h2><ul>{links}</ul><h2>Findings</h2><pre>{html.escape(md)}</pre>"
        "</body></html>\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.paper.summary")
    p.add_argument("--out", type=Path, default=Path("reports/paper"))
    a = p.parse_args(argv)
    print(f"paper summary written to {write(a.out)}/index.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
