"""`vlmprune report --compare A B`: two grids or experiments side by side.

Settings are matched by their label (the same grid run on two models, or twice): for each
headline metric the table shows A, B and B - A. A and B are grid names, grid files (their
`name:`) or experiment names, checked as names; written to reports/compare-A-B/ as index.html
and results.md. Every string on the page is escaped: labels come from the store.
"""

from __future__ import annotations

import html as h
from pathlib import Path

import polars as pl

from harness.errors import UserError
from harness.evaluation import paired
from harness.paths import reports_dir
from harness.report import build, data, significance, tables


def frame(a: str, b: str, sources: tuple[str | None, str | None] = (None, None)
          ) -> tuple[pl.DataFrame, list[str]]:
    ra, rb = data.load(a, source=sources[0]), data.load(b, source=sources[1])
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
    joined = joined.sort("cell")
    return joined.with_columns(_tests(joined, (ra, aa), (rb, ab), metrics)), metrics


def _tests(joined: pl.DataFrame, left: tuple[data.Report, pl.DataFrame],
           right: tuple[data.Report, pl.DataFrame], metrics: list[str]) -> list[pl.Series]:
    """`m Δ lo`, `m Δ hi` and `m p` (Holm-adjusted) for each metric: the paired difference
    of each setting both sides hold, where both kept per-document scores."""
    runs = []
    for rep, agg in (left, right):
        ids = dict(zip(agg["cell"], agg[significance.RUNS], strict=True)) \
            if significance.RUNS in agg.columns else {}
        uri = rep.meta.get("uri")
        rows = significance.samples(uri, [r for rs in ids.values() for r in rs]) if uri else {}
        runs.append((ids, rows))
    found: dict[tuple[str, int], paired.Difference] = {}
    for m in metrics:
        metric, task = significance.metric_of(m), m.partition("/")[0]
        for i, cell in enumerate(joined["cell"]):
            sides = [[rows[r][task] for r in ids.get(cell, []) if task in rows.get(r, {})]
                     for ids, rows in runs]
            if metric is None or not all(sides) or any(
                    len(s) != len(ids.get(cell, [])) for s, (ids, _) in zip(sides, runs,
                                                                           strict=True)):
                continue
            d = paired.compare(sides[0], sides[1], metric)
            if d is not None:
                found[(m, i)] = d
    keys = list(found)
    adjusted = dict(zip(keys, paired.holm([found[k].p for k in keys]), strict=True))
    out = []
    for m in metrics:
        for name, pick in (("Δ lo", lambda d: d.lo), ("Δ hi", lambda d: d.hi)):
            out.append(pl.Series(f"{m} {name}", [pick(found[(m, i)]) if (m, i) in found
                                                 else None for i in range(joined.height)],
                                 dtype=pl.Float64))
        out.append(pl.Series(f"{m} p", [adjusted.get((m, i)) for i in range(joined.height)],
                             dtype=pl.Float64))
    return out


def page(df: pl.DataFrame, a: str, b: str) -> str:
    """index.html: the table (great-tables escapes its title, labels and cells) under a
    heading and a line that name A and B, escaped here."""
    from great_tables import GT

    num = [c for c in df.columns if c != "cell"]
    gt = GT(df, id="cells").tab_header(title=f"{a} vs {b}").fmt_number(columns=num,
                                                                      decimals=3)
    ea, eb = h.escape(a), h.escape(b)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vlmprune: {ea} vs {eb}</title></head><body>"
            f"<h1>{ea} vs {eb}</h1><p>Settings matched by label; Δ = {eb} − {ea}, with its "
            "95% interval (Δ lo, Δ hi) and p-value from a paired test on the documents both "
            "answered (exact McNemar for one run's exact match, else paired bootstrap), "
            "Holm-corrected over the table's comparisons; empty where a side kept no "
            "per-document scores.</p>"
            f"{gt.as_raw_html()}</body></html>\n")


def write(a: str, b: str, out: Path | None = None) -> Path:
    (na, fa), (nb, fb) = build.resolve(a, "--compare"), build.resolve(b, "--compare")
    df, _ = frame(na, nb, (str(fa) if fa else None, str(fb) if fb else None))
    out = Path(out) if out else reports_dir() / f"compare-{na}-{nb}"
    build._claim(out)
    build._text(out / "index.html", page(df, na, nb))
    rows = ["|" + "|".join(tables.md_escape(c) for c in df.columns) + "|",
            "|-" + "|-:" * (len(df.columns) - 1) + "|"]
    for r in df.iter_rows():
        cells = [tables.md_escape(str(r[0]))] + ["-" if v is None else f"{v:.3f}"
                                                 for v in r[1:]]
        rows.append("|" + "|".join(cells) + "|")
    build._text(out / "results.md", "\n".join(rows) + "\n")
    (out / build.MARKER).write_text("compare\n")
    return out
