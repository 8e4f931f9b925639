"""The main table of a report, as HTML (great-tables), LaTeX (booktabs) and Markdown.

One row per setting (cells that differ only by seed are one row: mean ± std, and n), the
dense reference first; columns: the cell, the grid's varying parameters, achieved sparsity
by role, then the metrics. The best value of each metric column among pruned settings is
bold. great-tables renders the HTML (styles, labels, no external resources); its LaTeX output
drops styles (bold) and needs the `caption` package, so the LaTeX is written here, plain
booktabs with numbers as text, which compiles with a minimal TeX install.
"""

from __future__ import annotations

import html as h
import re
from dataclasses import dataclass

import polars as pl

from harness.evaluation.metrics import ranked
from harness.report.data import DENSE, Report, aggregate, takes_effect

ROLES_SHOWN = ("vision", "language", "overall")
STOPPED = "†"  # marks a setting the race stopped: its score is on fewer documents
PARTIAL = ("stopped", "group")  # race standings scored on the race's documents only


@dataclass
class Table:
    """Display strings, column labels and which cells are best, shared by all renderings."""

    columns: list[str]  # keys
    labels: dict[str, str]  # key -> header
    rows: list[dict[str, str]]  # key -> display text
    best: dict[str, set[int]]  # metric key -> row indices holding its best mean
    dense: set[int]  # row indices of the dense reference
    metric_keys: list[str]


def short(param: str) -> str:
    """`p.prune.sparsity.vision` -> `vision target`; `p.recover.method` -> `recover`."""
    name = param.removeprefix("p.")
    if name.startswith("prune.sparsity."):
        return f"{name.rsplit('.', 1)[1]} target"
    return {"recover.method": "recover", "prune.method": "method", "prune.pattern": "pattern",
            "prune.sparsity": "target", "prune.distribution": "distribution",
            "model.name": "model"}.get(name, name.removeprefix("prune."))


def metric_label(key: str) -> str:
    task, _, metric = key.partition("/")
    return f"{task.removeprefix('shapes_')} {metric.replace('_', ' ')}"


def is_dense(row: dict) -> bool:
    return bool(row.get(DENSE))


def build(report: Report, metrics: list[str] | None = None,
          agg: pl.DataFrame | None = None) -> Table:
    """The table over the given metric columns (all the grid's metrics by default), from
    the aggregated frame (`data.aggregate`; annotated with intervals and best groups by
    `significance.annotate` where it was: the report's)."""
    agg = aggregate(report) if agg is None else agg
    wanted = metrics or report.metrics
    first = [m for m in headline_metrics(report) if m in wanted]  # headline scores lead
    metric_keys = [m for m in first + [m for m in wanted if m not in first] if m in agg.columns]
    sparsity = [f"sparsity.{r}" for r in ROLES_SHOWN if f"sparsity.{r}" in agg.columns]
    seeds = agg["n"].max() if not agg.is_empty() else 0
    columns = ["cell", *report.params, *sparsity, *metric_keys] + (["n"] if seeds and
                                                                   seeds > 1 else [])
    labels = {"cell": "cell", "n": "n"} | {p: short(p) for p in report.params}
    labels |= {s: f"{s.split('.')[1]} sparsity" for s in sparsity}
    labels |= {m: metric_label(m) for m in metric_keys}
    records = agg.to_dicts()
    order = sorted(range(len(records)), key=lambda i: not is_dense(records[i]))
    records = [records[i] for i in order]
    rows = [{c: _text(r, c) for c in columns} for r in records]
    dense = {i for i, r in enumerate(records) if is_dense(r)}
    for i in dense:
        rows[i]["cell"] = "dense (not pruned)"
    best = {}
    for m in metric_keys:
        if f"{m}.best" in agg.columns:  # the group not significantly behind the top
            best[m] = {i for i, r in enumerate(records) if r[f"{m}.best"]}
            continue
        vals = [(r[m], i) for i, r in enumerate(records) if i not in dense and r[m] is not None]
        if vals:
            top = max(v for v, _ in vals)
            best[m] = {i for v, i in vals if v == top}
    return Table(columns, labels, rows, best, dense, metric_keys)


def _text(row: dict, col: str) -> str:
    v = row.get(col)
    if col == "n":
        return str(v)
    if v is None or (col.startswith("p.") and not takes_effect(row, col)):
        return "-"
    if isinstance(v, float):
        std = row.get(f"{col}.std")
        text = f"{v:.3f}" if std is None or row.get("n", 1) < 2 else f"{v:.3f} ± {std:.3f}"
        if row.get("race") in PARTIAL and "/" in col:
            text += STOPPED  # a partial score: the documents the race had reached
        lo, hi = row.get(f"{col}.lo"), row.get(f"{col}.hi")
        return text if lo is None or hi is None else f"{text} [{lo:.3f}, {hi:.3f}]"
    return str(v)


def html(table: Table) -> str:
    """The table as great-tables HTML (no external resources), best values bold."""
    from great_tables import GT, loc, style

    cols = paper_columns(table)
    df = pl.DataFrame({c: [_paper_text(table, i, c) for i in range(len(table.rows))]
                       for c in cols}, schema={c: pl.String for c in cols})
    gt = GT(df, id="cells").cols_label(**{c: table.labels[c] for c in cols})
    gt = gt.cols_align("right", columns=cols[1:])
    shown = [m for m in table.metric_keys if m in cols]
    if shown:  # a metric's interval on a second line, smaller (page.py's `.ci`)
        gt = gt.fmt(_html_interval, columns=shown)
    for m, rows in table.best.items():
        gt = gt.tab_style(style.text(weight="bold"), loc.body(columns=m, rows=sorted(rows)))
    if table.dense:
        gt = gt.tab_style([style.fill("#eef2f7"), style.text(style="italic")],
                          loc.body(rows=sorted(table.dense)))
    return gt.as_raw_html()


def _html_interval(text: str) -> str:
    """`value [lo, hi]` as HTML: the value, then the interval on its own line (escaped:
    great-tables takes a formatter's output as HTML)."""
    value, sep, interval = h.escape(text).partition(" [")
    value = value.replace(" ± ", "\u00a0±\u00a0")  # a mean and its std on one line
    return f'{value}<br><span class="ci">[{interval}</span>' if sep else value


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(s: str) -> str:
    """Text for LaTeX: its special characters as text, line breaks (a blank line ends a
    paragraph, and with it a caption) as spaces, so nothing from the store is a command."""
    return "".join(_TEX.get(ch, " " if ch.isspace() else ch) for ch in s)


def md_escape(s: str) -> str:
    """Text for a Markdown table cell: what would make a column, a link, an HTML tag or an
    escape backslash-escaped (CommonMark), line breaks as spaces."""
    return re.sub(r"([\\|<>\[\]`])", r"\\\1", " ".join(s.splitlines()))


def paper_columns(table: Table) -> list[str]:
    """The axes as columns instead of the long cell label (the dense row says "dense" in
    the first), when the grid has axes."""
    params = [c for c in table.columns if c.startswith("p.")]
    return [c for c in table.columns if c != "cell"] if params else table.columns


def _paper_text(table: Table, i: int, col: str) -> str:
    first = next(c for c in paper_columns(table))
    if i in table.dense and col == first and col.startswith("p."):
        return "dense"
    return table.rows[i][col]


def latex(table: Table, caption: str, label: str) -> str:
    """A booktabs longtable (it starts where it is put and breaks across pages, its header
    repeated: a long table never leaves a page holding only a title): best per column
    bold, mean $\\pm$ std, each metric's interval on a second line in a smaller font."""
    cols = paper_columns(table)
    spec = "l" + "r" * (len(cols) - 1)
    wide = len(cols) > 8
    header = " & ".join(_tex_head(table.labels[c]) for c in cols) + r" \\"
    lines = [r"\begingroup", r"\scriptsize" if wide else r"\small"]
    if wide:
        lines.append(r"\setlength{\tabcolsep}{3pt}")
    lines += [rf"\begin{{longtable}}{{{spec}}}",
              rf"\caption{{{tex_escape(caption)}}}\label{{{label}}}\\",
              r"\toprule", header, r"\midrule", r"\endfirsthead",
              r"\toprule", header, r"\midrule", r"\endhead"]
    for i in range(len(table.rows)):
        cells = [_tex_cell(_paper_text(table, i, c), i in table.best.get(c, ()),
                           r"\tiny" if wide else r"\scriptsize") for c in cols]
        lines.append(" & ".join(cells) + r" \\")
        if i in table.dense and i + 1 < len(table.rows) and i + 1 not in table.dense:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{longtable}", r"\endgroup"]
    return "\n".join(lines) + "\n"


def _tex_head(label: str) -> str:
    """A column header, on two lines when long (narrow columns for wide tables)."""
    words = label.split()
    if len(label) <= 12 or len(words) < 2:
        return tex_escape(label)
    cut = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k]))
                                                      - len(" ".join(words[k:]))))
    return (r"\begin{tabular}[b]{@{}c@{}}" + tex_escape(" ".join(words[:cut])) + r"\\"
            + tex_escape(" ".join(words[cut:])) + r"\end{tabular}")


def _tex_cell(text: str, bold: bool, smaller: str) -> str:
    """A body cell: `value [lo, hi]` as the value over its interval in a smaller font."""
    value, sep, interval = text.partition(" [")
    value = tex_escape(value).replace("±", r"$\pm$")
    if bold:
        value = rf"\textbf{{{value}}}"
    if not sep:
        return value
    return (r"\begin{tabular}[t]{@{}r@{}}" + value + r"\\ {" + smaller + "["
            + tex_escape(interval.removesuffix("]")) + r"]}\end{tabular}")


def markdown(table: Table) -> str:
    """A pipe table in lmms-eval's style (`|Tasks|...|`), best values in bold."""
    cols = paper_columns(table)
    head = "|" + "|".join(md_escape(table.labels[c]) for c in cols) + "|"
    rule = "|" + "|".join("-" if c == cols[0] else "-:" for c in cols) + "|"
    body = []
    for i in range(len(table.rows)):
        text = {c: md_escape(_paper_text(table, i, c)) for c in cols}
        cells = [f"**{text[c]}**" if i in table.best.get(c, ()) else text[c] for c in cols]
        body.append("|" + "|".join(cells) + "|")
    return "\n".join([head, rule, *body]) + "\n"


def headline_metrics(report: Report) -> list[str]:
    """The suite's overall scores, for paper-width tables: accuracies (exact match, acc)
    before caption scores (CIDEr), so the first is the figures' y-axis."""
    return ranked(report.metrics, report.meta.get("headline", ()))
