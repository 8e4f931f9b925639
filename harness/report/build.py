"""`vlmprune report GRID`: read MLflow, write reports/<grid>/ and results/<grid>.parquet.

Files (each written whole: a temporary file renamed into place):
- `index.html`: the self-contained page (page.py);
- `tables.tex`: booktabs tables (headline metrics; every metric), `report.tex`: a wrapper
  that compiles alone with pdflatex, figures included;
- `results.md`: the main table as Markdown; `figures/<name>.svg|.pdf|.png`;
- `results/<grid>.parquet`: one row per cell, every column (data.py).
A folder given with `--out` that holds something other than a report is refused.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from harness import registry
from harness.errors import UserError
from harness.fields import name_flag
from harness.paths import reports_dir, results_dir
from harness.report import data, figures, page, significance, tables

MARKER = ".vlmprune-report"


def resolve(grid: str, flag: str = "GRID") -> tuple[str, Path | None]:
    """A grid as a user gives it (a name in experiments/, a grid file, or the name of an
    experiment whose grid is gone): its name, which names its folders and its MLflow
    experiment, and its file if it has one. A file's name is checked when the file is read;
    a bare name here (fields.check_name)."""
    from harness.sweep.grid import path_of, read

    path = path_of(grid)
    if path.is_file():
        return read(grid).name, path
    if Path(grid).suffix in (".yaml", ".yml"):
        raise UserError(f"{grid}: no such grid file")
    return name_flag(grid, flag), None


def write(grid: str, out: Path | None = None, experiment: str | None = None) -> Path:
    """Build the report of a grid from the tracking store; returns its folder."""
    from harness.sweep.grid import path_of

    if experiment is not None:
        name_flag(experiment, "--experiment")
    name, file = resolve(grid)  # the experiment is the grid's name
    report = data.load(name, experiment, source=str(file) if file else None)
    report.meta["command"] = _as_typed(grid, path_of(grid))
    out = Path(out) if out else reports_dir() / name
    _claim(out)
    t0 = time.perf_counter()
    parquet = results_dir() / f"{name}.parquet"
    _atomic(parquet, lambda f: report.cells.drop(data.DENSE).write_parquet(f))
    agg = significance.annotate(report, data.aggregate(report), report.metrics)
    full = tables.build(report, agg=agg)
    head = tables.build(report, tables.headline_metrics(report), agg)
    metric = next(iter(tables.headline_metrics(report) or report.metrics), None)
    drawn = figures.draw(agg, metric) if metric and not agg.is_empty() else []
    (out / "figures").mkdir(parents=True, exist_ok=True)
    inline = []
    for fig_name, caption, fig in drawn:
        svg = io.StringIO()
        figures.save(fig, svg, "svg")
        _atomic(out / "figures" / f"{fig_name}.svg", lambda f, s=svg: Path(f).write_text(
            s.getvalue()))
        _atomic(out / "figures" / f"{fig_name}.pdf",
                lambda f, fig=fig: figures.save(fig, f, "pdf"))
        _atomic(out / "figures" / f"{fig_name}.png",
                lambda f, fig=fig: figures.save(fig, f, "png", dpi=150))
        inline.append((fig_name, f"{caption} (figures/{fig_name}.svg, .pdf, .png)",
                       page.inline_svg(svg.getvalue())))
        figures.plt.close(fig)
    _drop_stale(out / "figures", {n for n, _, _ in drawn})
    files = ["index.html", "tables.tex", "report.tex", "results.md", str(parquet),
             *[f"figures/{n}.{ext}" for n, _, _ in drawn for ext in ("svg", "pdf", "png")]]
    search = sorted((out / "search").glob("*.svg")) if (out / "search").is_dir() else []
    inline += [(f"search-{f.stem}", f"Search, {f.stem.replace('_', ' ')}: `vlmprune search "
                f"{name}` (search/{f.name})", page.inline_svg(f.read_text())) for f in search]
    files += [f"search/{f.name}" for f in search]
    _text(out / "index.html", page.render(report, tables.html(full), inline, files))
    _text(out / "tables.tex", _tex_tables(name, report, head, full))
    _text(out / "report.tex", _wrapper(name, [n for n, _, _ in drawn]))
    _text(out / "results.md",
          f"# {name}\n\n{tables.md_escape(report.description)}\n\n{tables.markdown(head)}")
    (out / MARKER).write_text(f"{time.strftime('%F %T')} {time.perf_counter() - t0:.1f}s\n")
    return out


def _as_typed(grid: str, path: Path) -> str:
    """How the page names the grid in its commands: the name a user typed, or the grid file
    (relative to the working folder when under it), since `sweep NAME` would find another."""
    if path != Path(grid):  # found by name
        return grid
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _claim(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; name a folder for the report")
    foreign = [p for p in out.iterdir() if p.name != "search"] if out.is_dir() else []
    if foreign and not (out / MARKER).exists():  # a search's figures are ours too
        raise UserError(f"--out {out}: holds files that are not a vlmprune report; name an "
                        "empty or new folder")
    out.mkdir(parents=True, exist_ok=True)


def _atomic(path: Path, write_to) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write_to(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _text(path: Path, text: str) -> None:
    _atomic(path, lambda f: Path(f).write_text(text))


def _drop_stale(folder: Path, keep: set[str]) -> None:
    for f in folder.iterdir():
        if f.is_file() and f.stem not in keep:
            f.unlink()


def _tex_tables(name: str, report: data.Report, head: tables.Table, full: tables.Table) -> str:
    label = "".join(ch if ch.isalnum() else "-" for ch in name)
    parts = [f"% vlmprune report {name}: generated from MLflow, do not edit by hand.\n",
             "% Needs \\usepackage{booktabs} and \\usepackage{longtable}.\n",
             tables.latex(head, f"{name}: {report.description}".rstrip(": "), f"tab:{label}")]
    if full.metric_keys != head.metric_keys:
        parts.append(tables.latex(full, f"{name}: every metric", f"tab:{label}-all"))
    return "\n".join(parts)


def _wrapper(name: str, figs: list[str]) -> str:
    body = "\n".join(
        "\\begin{figure}[ht]\\centering\n"
        f"\\includegraphics[width=0.85\\linewidth]{{figures/{f}.pdf}}\n"
        f"\\caption{{{tables.tex_escape(registry.get('figures', f).help)}}}\n"
        "\\end{figure}"
        for f in figs)
    return ("\\documentclass[10pt]{article}\n\\usepackage[margin=2cm,landscape]{geometry}\n"
            "\\usepackage{booktabs}\n\\usepackage{longtable}\n\\usepackage{graphicx}\n"
            "\\usepackage[T1]{fontenc}\n"
            "\\begin{document}\n"
            f"\\section*{{vlmprune report: {tables.tex_escape(name)}}}\n"
            "\\input{tables.tex}\n" + body + "\n\\clearpage\n\\end{document}\n")
