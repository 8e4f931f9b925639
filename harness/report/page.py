"""index.html: one self-contained page (no CDN, no external resource; figures inline SVG).

The grid's description and command, the table of every setting (click a header to sort; a
few lines of plain JavaScript), failed and unfinished cells with their reasons, the figures,
and the versions that produced the numbers.
"""

from __future__ import annotations

import html as h
import re

import polars as pl

from harness.report.data import Report

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1280px; padding: 0 1.5em; color: #1d2330; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; }
code { background: #f2f4f7; padding: 0 .3em; border-radius: 3px; }
.lead { color: #4a5263; } .table-wrap { overflow-x: auto; }
.ci { font-size: .8em; color: #5a6472; white-space: nowrap; }
.gt_table th.gt_col_heading { cursor: pointer; white-space: nowrap; }
.gt_table th.sorted-asc::after { content: " \\25B2"; font-size: .7em; }
.gt_table th.sorted-desc::after { content: " \\25BC"; font-size: .7em; }
figure { margin: 1.5em 0; } figure svg { width: 100%; max-width: 900px; height: auto; }
figcaption { color: #4a5263; font-size: .9em; }
ul.failed li { margin-bottom: .3em; } .status { font-weight: 600; }
table.versions td { padding: .1em 1em .1em 0; }
"""

SORT = r"""
document.querySelectorAll("table.gt_table").forEach(function (table) {
  var heads = table.querySelectorAll("thead tr.gt_col_headings th");
  heads.forEach(function (th, col) {
    th.title = "click to sort";
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var desc = !th.classList.contains("sorted-desc");
      heads.forEach(function (o) { o.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(desc ? "sorted-desc" : "sorted-asc");
      function key(row) {
        var text = row.cells[col] ? row.cells[col].textContent.trim() : "";
        var num = parseFloat(text);
        return isNaN(num) ? text : num;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        var c = x < y ? -1 : x > y ? 1 : 0;
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  // index.html#sort=COLUMN sorts on load (descending; #sort=COLUMN-asc ascending)
  var m = location.hash.match(/sort=(\d+)(-asc)?/);
  if (m && heads[+m[1]]) {
    heads[+m[1]].click();
    if (m[2]) { heads[+m[1]].click(); }
  }
});
"""


def inline_svg(svg: str) -> str:
    """An SVG file's text made fit to sit inside HTML: no XML prolog, no metadata block, no
    namespace URLs (HTML parses inline <svg> without them)."""
    svg = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", "", svg)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    return svg.strip()


def render(report: Report, table_html: str, figures: list[tuple[str, str, str]],
           files: list[str]) -> str:
    """The page; `figures` are (name, caption with its file, inline SVG)."""
    cells = report.cells
    counts = {s: cells.filter(pl.col("status") == s).height
              for s in ("finished", "failed", "running", "killed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    typed = report.meta.get("command", report.grid)  # the grid as the user names it
    outdated = report.meta.get("outdated", 0)
    if outdated:
        summary += (f" ({outdated} run{'s' * (outdated > 1)} of cells the grid no longer "
                    "defines left out; they stay in MLflow)")
    parts = [
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vlmprune report: {h.escape(report.grid)}</title>", f"<style>{CSS}</style>",
        "</head>", "<body>", f"<h1>{h.escape(report.grid)}</h1>",
        f'<p class="lead">{h.escape(report.description or "(no description)")}</p>',
        f"<p>Made by <code>vlmprune sweep {h.escape(typed)}</code>; this page by "
        f"<code>vlmprune report {h.escape(typed)}</code>. {cells.height} cells: "
        f"{summary}.</p>",
        "<p>One row per setting (cells that differ only by seed are averaged: mean ± std "
        "over seeds, n runs), with its 95% interval over documents in brackets (bootstrap; "
        "with seeds, of the seed-averaged score; also the figures' error bars). In "
        "<b>bold</b>: the pruned settings not significantly different from the best one "
        "(paired test on the documents they share: exact McNemar for one run's exact match, "
        "else paired bootstrap; Holm-corrected, 5%). The dense reference in <i>italics</i>. "
        "Click a column header to sort (or link to "
        "<code>index.html#sort=3</code>).</p>",
        f'<div class="table-wrap">{table_html}</div>',
    ]
    parts += _problems(cells)
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, caption, svg in figures:
            parts.append(f'<figure id="fig-{h.escape(name)}">{svg}<figcaption>'
                         f"{h.escape(caption)}</figcaption></figure>")
    parts += _versions(cells)
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li><code>{h.escape(f)}</code></li>"
                                                for f in files) + "</ul>")
    parts += [f"<script>{SORT}</script>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _problems(cells: pl.DataFrame) -> list[str]:
    out = []
    failed = cells.filter(pl.col("status") == "failed")
    if failed.height:
        out.append(f"<h2>Failed cells ({failed.height})</h2>")
        out.append('<ul class="failed">' + "".join(
            f'<li><span class="status">{h.escape(r["cell"])}</span>: '
            f'<code>{h.escape(r["failure"] or "no reason recorded")}</code></li>'
            for r in failed.to_dicts()) + "</ul>")
    stopped = cells.filter(pl.col("race") == "stopped") if "race" in cells.columns else None
    if stopped is not None and stopped.height:
        out.append(f"<h2>Stopped by the race ({stopped.height})</h2>")
        out.append("<p>Scored on the documents the race had reached when they fell "
                   "significantly behind (marked † in the table): partial scores.</p><ul>"
                   + "".join(f"<li>{h.escape(r['cell'])}: {h.escape(r['race_note'])}</li>"
                             for r in stopped.to_dicts()) + "</ul>")
    group = cells.filter(pl.col("race") == "group") if "race" in cells.columns else None
    if group is not None and group.height:
        out.append(f"<h2>The race's last group ({group.height})</h2>")
        out.append("<p>None significantly behind the leader when the race ended; scored "
                   "on the race's documents only (<code>finish: none</code>, marked † in "
                   "the table).</p><ul>"
                   + "".join(f"<li>{h.escape(r['cell'])}: {h.escape(r['race_note'])}</li>"
                             for r in group.to_dicts()) + "</ul>")
    other = cells.filter(pl.col("status").is_in(["running", "killed"]))
    if other.height:
        out.append(f"<h2>Cells not finished ({other.height})</h2>")
        out.append("<p>Running now, or stopped by a killed sweep (the next sweep runs them "
                   "again).</p><ul>" + "".join(
                       f'<li><span class="status">{h.escape(r["status"])}</span>: '
                       f'{h.escape(r["cell"])}</li>' for r in other.to_dicts()) + "</ul>")
    return out


def _versions(cells: pl.DataFrame) -> list[str]:
    rows = []
    for col, label in (("commit", "vlmprune commit"), ("versions", "libraries")):
        if col in cells.columns:
            values = sorted({v for v in cells[col].to_list() if v})
            rows.append(f"<tr><td>{label}</td><td>"
                        f"{'<br>'.join(h.escape(v) for v in values) or 'unknown'}</td></tr>")
    return ["<h2>Versions</h2>", '<table class="versions">', *rows, "</table>"]
