"""`vlmprune report --compare A B`: two grids or experiments side by side.

Settings are matched by their label (the same grid run on two models, or twice): for each
headline metric the table shows A, B and B - A. Written to reports/compare-A-B/ as
index.html and results.md.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from harness.errors import UserError
from harness.report import build, data, tables


def frame(a: str, b: str) -> tuple[pl.DataFrame, list[str]]:
    ra, rb = data.load(a), data.load(b)
    metrics = [m for m in tables.headline_metrics(ra) if m in rb.metrics]
    if not metrics:
        raise UserError(f"--compare {a} {b}: no metric in common")
    aa, ab = data.aggregate(ra), data.aggregate(rb)
    left = aa.select("cell", *metrics).rename({m: f"{m} [{a}]" for m in metrics})
    right = ab.select("cell", *metrics).rename({m: f"{m} [{b}]" for m in metrics})
    joined = left.join(right, on="cell", how="full", coalesce=True)
    joined = joined.with_columns(
        [(pl.col(f"{m} [{b}]") - pl.col(f"{m} [{a}]")).alias(f"{m} Δ") for m in metrics])
    if joined.is_empty():
        raise UserError(f"--compare {a} {b}: no setting in common")
    return joined.sort("cell"), metrics


def write(a: str, b: str, out: Path | None = None) -> Path:
    from great_tables import GT

    df, metrics = frame(a, b)
    out = Path(out) if out else build.reports_dir() / f"compare-{a}-{b}"
    build._claim(out)
    num = [c for c in df.columns if c != "cell"]
    gt = GT(df, id="cells").tab_header(title=f"{a} vs {b}").fmt_number(columns=num,
                                                                      decimals=3)
    html = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vlmprune: {a} vs {b}</title></head><body>"
            f"<h1>{a} vs {b}</h1><p>Settings matched by label; Δ = {b} − {a}.</p>"
            f"{gt.as_raw_html()}</body></html>\n")
    build._text(out / "index.html", html)
    rows = ["|" + "|".join(df.columns) + "|", "|-" + "|-:" * len(num) + "|"]
    for r in df.iter_rows():
        cells = [str(r[0])] + ["-" if v is None else f"{v:.3f}" for v in r[1:]]
        rows.append("|" + "|".join(cells) + "|")
    build._text(out / "results.md", "\n".join(rows) + "\n")
    (out / build.MARKER).write_text("compare\n")
    return out
