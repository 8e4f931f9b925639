"""Paper-style figures, drawn when a grid's cells allow them (matplotlib, SVG + PDF + PNG).

- `modality_split`: score vs vision sparsity, one line per vision+language total (the
  paper's 100% and 120% figure), dense reference as a dashed line;
- `modality_choice`: vision+language vs language-only vs vision-only, bars per level;
- `recovery`: none vs LoRA vs SparseLoRA per level, achieved sparsity written on each bar;
  with a steps axis, the score against the recovery steps, a panel per level;
- `methods`: score vs unstructured sparsity, one line per method;
- `question_types`: per-question-type scores of every setting as a heat map.
Each takes the seed-aggregated frame (mean, std, and each setting's 95% interval over
documents where the report computed it: the error bars) and returns a Figure, or None when
the cells do not span what it needs. Figures are registry entries (harness/registry.py: the
function as "module:attr", its caption as the entry's help); a report draws every entry's,
in the registry's order, a plugin's after the built-ins.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness import figstyle, registry  # noqa: E402
from harness.report.data import DENSE  # noqa: E402
from harness.report.tables import metric_label, short  # noqa: E402

figstyle.apply()
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save(fig: Figure, target, fmt: str, **kw) -> None:
    """`fig` as svg, pdf or png without a creation date: an unchanged figure is written
    byte-identical by every run (the committed reference report diffs clean)."""
    meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    fig.savefig(target, format=fmt, metadata=meta, **kw)


def _col(df: pl.DataFrame, name: str) -> pl.Series | None:
    return df[name] if name in df.columns else None


def _dense(df: pl.DataFrame, metric: str) -> float | None:
    d = df.filter(pl.col(DENSE))
    return None if d.is_empty() else float(d[metric][0])


def pruned(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of pruned settings (the dense reference left out)."""
    return df.filter(~pl.col(DENSE))


def _err(df: pl.DataFrame, metric: str) -> list[list[float]] | list[float] | None:
    """Error bars: each setting's 95% interval over documents, where the report has it
    (`significance.py`; with seeds, the seed-averaged score's), else the std over seeds."""
    if f"{metric}.lo" in df.columns and df[f"{metric}.lo"].null_count() < df.height:
        below, above = zip(*(_reach(r, metric) for r in df.to_dicts()), strict=True)
        return [list(below), list(above)]
    if f"{metric}.std" not in df.columns or df["n"].max() < 2:
        return None
    return [0.0 if v is None else v for v in df[f"{metric}.std"].to_list()]


def _reach(row: dict, metric: str) -> tuple[float, float]:
    """How far a row's interval reaches below and above its value (0 without one)."""
    v, lo, hi = row[metric], row.get(f"{metric}.lo"), row.get(f"{metric}.hi")
    if v is None or lo is None or hi is None:
        return 0.0, 0.0
    return max(0.0, v - lo), max(0.0, hi - v)


def level(row: dict) -> str:
    """The pruning level a row is drawn at: its N:M pattern, else its sparsity ("50%")."""
    pattern = row.get("p.prune.pattern") or "unstructured"
    if pattern != "unstructured":
        return pattern
    s = row.get("p.prune.sparsity")
    try:
        return f"{float(s):.0%}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "map"


def _dense_line(ax, value: float | None) -> None:
    if value is not None:
        ax.axhline(value, ls="--", color="0.35", lw=1, label=f"dense ({value:.3f})")


def modality_split(df: pl.DataFrame, metric: str) -> Figure | None:
    v, lang = _col(df, "p.prune.sparsity.vision"), _col(df, "p.prune.sparsity.language")
    if v is None or lang is None:
        return None
    d = pruned(df).filter(pl.col("p.prune.sparsity.vision").is_not_null()
                           & pl.col("p.prune.sparsity.language").is_not_null())
    if d.height < 3:
        return None
    d = d.with_columns(pl.col("p.prune.sparsity.vision").cast(pl.Float64).alias("v"),
                       pl.col("p.prune.sparsity.language").cast(pl.Float64).alias("l"))
    d = d.with_columns((pl.col("v") + pl.col("l")).round(3).alias("total")).sort("v")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (total,) in enumerate(sorted(d.select("total").unique().rows())):
        g = d.filter(pl.col("total") == total)
        ax.errorbar(g["v"].to_list(), g[metric].to_list(), yerr=_err(g, metric), marker="o",
                    capsize=3, color=COLORS[i % len(COLORS)],
                    label=f"vision + language = {total:.0%}")
        for x, lv, y in zip(g["v"], g["l"], g[metric], strict=True):
            ax.annotate(f"{x * 100:.0f}:{lv * 100:.0f}", (x, y), textcoords="offset points",
                        xytext=(0, 6 if i % 2 == 0 else -12), ha="center", fontsize=7,
                        color=COLORS[i % len(COLORS)])
    _dense_line(ax, _dense(df, metric))
    ax.set(xlabel="vision sparsity (labels: vision:language %)", ylabel=metric_label(metric),
           title="Sparsity split between vision and language")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _bars(df: pl.DataFrame, metric: str, key: str, order: list[str], title: str,
          annotate: Callable[[dict], str] | None = None) -> Figure | None:
    if key not in df.columns:
        return None
    d = pruned(df).filter(pl.col(key).is_in(order))
    kinds = [k for k in order if k in set(d[key].to_list())]
    if len(kinds) < 2:
        return None
    rows = d.to_dicts()
    levels = sorted({level(r) for r in rows}, key=lambda s: (not s.endswith("%"), s))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(levels) * len(kinds) / 2), 3.8))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        xs, ys, below, above, notes = [], [], [], [], []
        for i, lev in enumerate(levels):
            match = [r for r in rows if r[key] == kind and level(r) == lev]
            if match:
                r = match[0]
                xs.append(i + (k - (len(kinds) - 1) / 2) * width)
                ys.append(r[metric])
                if f"{metric}.lo" in r:
                    lo_hi = _reach(r, metric)
                else:
                    std = r.get(f"{metric}.std") or 0.0 if r.get("n", 1) > 1 else 0.0
                    lo_hi = (std, std)
                below.append(lo_hi[0])
                above.append(lo_hi[1])
                notes.append(annotate(r) if annotate else "")
        bars = ax.bar(xs, ys, width, yerr=[below, above] if any(below + above) else None,
                      capsize=3,
                      label=kind.replace("_", "-"), color=COLORS[k % len(COLORS)])
        if annotate:
            for b, note in zip(bars, notes, strict=True):
                ax.annotate(note, (b.get_x() + b.get_width() / 2, b.get_height()),
                            textcoords="offset points", xytext=(0, 3), ha="center",
                            fontsize=7)
    _dense_line(ax, _dense(df, metric))
    ax.set_xticks(range(len(levels)), levels)
    ax.set(xlabel="sparsity or N:M pattern", ylabel=metric_label(metric), title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4,
              frameon=False)
    fig.tight_layout()
    return fig


def modality_choice(df: pl.DataFrame, metric: str) -> Figure | None:
    if "p.prune.sparsity.vision" in df.columns:
        df = df.filter(pl.col("p.prune.sparsity.vision").is_null())
    return _bars(df, metric, "p.prune.distribution", ["equal", "language_only", "vision_only"],
                 "Which model to prune")


def recovery(df: pl.DataFrame, metric: str) -> Figure | None:
    """Bars per level; with a steps axis (more than one `recover.steps`), the score against
    the recovery steps instead, a panel per level (`_recovery_steps`)."""
    if "p.recover.steps" in df.columns and \
            pruned(df).filter(pl.col("p.recover.method") != "none")["p.recover.steps"] \
            .drop_nulls().n_unique() > 1:
        return _recovery_steps(df, metric)
    return _bars(df, metric, "p.recover.method", registry.names("recovery"),
                 "Recovery after pruning (bar label: sparsity after recovery)",
                 annotate=lambda r: f"s={r.get('sparsity.overall', 0.0):.2f}")


def _recovery_steps(df: pl.DataFrame, metric: str) -> Figure | None:
    """Score against recovery steps (log axis), a line per recovery method with its sparsity
    after recovery in the legend, a panel per level (each its own score axis: at a mild level
    the methods differ by tenths); the pruned model unrecovered dotted, the dense one dashed."""
    d = pruned(df).with_columns(
        pl.col("p.recover.steps").cast(pl.Float64, strict=False).alias("steps"))
    rows = d.to_dicts()
    levels = sorted({level(r) for r in rows}, key=lambda s: (not s.endswith("%"), s))
    kinds = [k for k in registry.names("recovery") if k != "none"
             and k in set(d["p.recover.method"].to_list())]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 3.8), squeeze=False)
    trained = d.filter(pl.col("p.recover.method") != "none")  # none's steps: a default
    steps = sorted(set(trained["steps"].drop_nulls().to_list()))
    for ax, lev in zip(axes[0], levels, strict=True):
        at = d.filter(pl.Series([level(r) == lev for r in rows]))
        for k, kind in enumerate(kinds):
            g = at.filter((pl.col("p.recover.method") == kind)
                          & pl.col("steps").is_not_null()).sort("steps")
            if g.is_empty():
                continue
            s = g["sparsity.overall"].to_list()[-1] if "sparsity.overall" in g.columns \
                else None
            ax.errorbar(g["steps"].to_list(), g[metric].to_list(), yerr=_err(g, metric),
                        marker="o", capsize=3, color=COLORS[(k + 1) % len(COLORS)],
                        label=kind + ("" if s is None else f" (sparsity {s:.2f})"))
        none = at.filter(pl.col("p.recover.method") == "none")
        if not none.is_empty():
            ax.axhline(float(none[metric][0]), ls=":", color=COLORS[0], lw=1.2,
                       label=f"not recovered ({float(none[metric][0]):.3f})")
        _dense_line(ax, _dense(df, metric))
        ax.set_xscale("log")
        ax.set_xticks(steps, [f"{x:g}" for x in steps])
        ax.set_xticks([], minor=True)
        ax.set(xlabel="recovery steps", title=f"wanda {lev}" if "p.prune.method" not in
               d.columns else f"{at['p.prune.method'][0]} {lev}")
        ax.legend(fontsize=7)
        ax.set_ylabel(metric_label(metric))
    fig.suptitle("Recovery against its budget (steps)", fontsize=11)
    fig.tight_layout()
    return fig


def methods(df: pl.DataFrame, metric: str) -> Figure | None:
    """Score vs unstructured sparsity, a line per method (and per allocation, when the grid
    compares uniform with layer-wise allocations)."""
    if "p.prune.method" not in df.columns or "p.prune.sparsity" not in df.columns:
        return None
    d = pruned(df).filter((pl.col("p.prune.pattern") == "unstructured")
                           & pl.col("p.prune.sparsity").is_not_null())
    d = d.with_columns(pl.col("p.prune.sparsity").cast(pl.Float64, strict=False).alias("s"))
    d = d.filter(pl.col("s").is_not_null())
    dist = "p.prune.distribution"
    by_alloc = dist in d.columns and d[dist].is_in(registry.names("allocations")).any()
    keys = ["p.prune.method", dist] if by_alloc else ["p.prune.method"]
    lines = sorted(set(d.select(keys).rows()))
    if len(lines) < 2 or d["s"].n_unique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, key in enumerate(lines):
        g = d.filter(pl.all_horizontal([pl.col(k) == v for k, v in zip(keys, key,
                                                                       strict=True)]))
        g = g.sort("s")
        name = key[0] if not by_alloc else \
            f"{key[0]} / {'uniform' if key[1] == 'equal' else key[1]}"
        ax.errorbar(g["s"].to_list(), g[metric].to_list(), yerr=_err(g, metric), marker="o",
                    capsize=3, label=name, color=COLORS[i % len(COLORS)],
                    ls="-" if not by_alloc or key[1] == "equal" else "--")
    _dense_line(ax, _dense(df, metric))
    ax.set(xlabel="unstructured sparsity", ylabel=metric_label(metric),
           title="Score vs sparsity by method" + (" and allocation" if by_alloc else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def question_types(df: pl.DataFrame, metric: str) -> Figure | None:
    typed = [c for c in df.columns if re.fullmatch(r"[\w-]+/\w+_exact_match", c)]
    if not typed or df.is_empty():
        return None
    task = metric.split("/")[0] if any(c.startswith(metric.split("/")[0] + "/")
                                       for c in typed) else typed[0].split("/")[0]
    cols = [c for c in typed if c.startswith(task + "/")]
    if len(cols) < 2:
        return None
    d = df.sort(~pl.col(DENSE), maintain_order=True)  # the dense reference first
    values = d.select(cols).to_numpy()
    labels = ["dense (not pruned)" if r[DENSE] else _short_label(r["cell"])
              for r in d.to_dicts()]
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 0.09 * max(map(len, labels)) + 2,
                                    0.3 * len(labels) + 1.6))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), [c.split("/")[1].removesuffix("_exact_match")
                                     for c in cols])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.grid(False)
    if len(labels) <= 40:
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_title(f"{task}: exact match by question type")
    fig.tight_layout()
    return fig


def _short_label(cell: str) -> str:
    """A setting's label with the table's column names (`vision target=0.1, language
    target=0.9`, not `prune.sparsity.vision=0.1, ...`), cut at 60 characters."""
    parts = []
    for part in cell.split(", "):
        key, sep, value = part.partition("=")
        parts.append(f"{short('p.' + key)}={value}" if sep else part)
    text = ", ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


def allocation(df: pl.DataFrame, metric: str) -> Figure | None:
    """Per-block sparsity each allocation chose (achieved, from the weights), vision and
    language blocks on one axis, at one method and sparsity (the first that has an
    allocation), beside the uniform split of the same method and sparsity."""
    blocks = sorted(c for c in df.columns if c.startswith("block."))
    if not blocks or "p.prune.distribution" not in df.columns:
        return None
    allocations = registry.names("allocations")
    alloc = df.filter(pl.col("p.prune.distribution").is_in(allocations))
    if alloc.is_empty():
        return None
    first = alloc.row(0, named=True)
    same = df.filter((pl.col("p.prune.method") == first["p.prune.method"])
                     & (pl.col("p.prune.sparsity") == first["p.prune.sparsity"])
                     & pl.col("p.prune.distribution").is_in(["equal", *allocations]))
    order = sorted(blocks, key=lambda b: (not b.startswith("block.vision"), b))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(order) + 2), 3.8))
    kinds = same["p.prune.distribution"].to_list()
    width = 0.8 / max(1, len(kinds))
    for k, row in enumerate(same.to_dicts()):
        ys = [row.get(b) or 0.0 for b in order]
        xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(order))]
        name = "uniform" if row["p.prune.distribution"] == "equal" else \
            row["p.prune.distribution"]
        ax.bar(xs, ys, width, label=name, color=COLORS[k % len(COLORS)])
    ax.set_xticks(range(len(order)), [b.removeprefix("block.").replace("vision.", "V")
                                      .replace("language.", "L") for b in order], fontsize=7)
    ax.set(xlabel="block (V: vision, L: language)", ylabel="sparsity (achieved)",
           title=f"Per-block sparsity, {first['p.prune.method']} at "
                 f"{float(first['p.prune.sparsity']):.0%}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4,
              frameon=False)
    fig.tight_layout()
    return fig


def draw(df: pl.DataFrame, metric: str) -> list[tuple[str, str, Figure]]:
    """(name, caption, figure) for every figure the cells allow."""
    out = []
    for entry in registry.entries("figures"):
        fig = entry.load()(df, metric)
        if fig is not None:
            out.append((entry.name, entry.help, fig))
    return out
