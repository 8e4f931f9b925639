"""Reports: from a real smoke sweep's store, and from stores holding seeds, failed and running
cells, and the paper's grids (made-up results logged through the sweep's own tracker)."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import html5lib
import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from harness.cli import main
from harness.report import data
from harness.report.tables import metric_label
from harness.sweep import result
from harness.testing import demo
from tests.report.browser import browse, console_lines, pdflatex


def parse(path):
    """index.html parsed strictly: any HTML parse error fails."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(
        path.read_text())


def text_of(doc) -> str:
    return " ".join(doc.itertext())


@pytest.fixture(scope="module")
def smoke_report(reference, tmp_path_factory):
    """The report of the reference smoke sweep, written by `vlmprune report`."""
    root = tmp_path_factory.mktemp("smoke-report")
    shutil.copytree(reference[3], root / "results")
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMPRUNE_RESULTS", str(root / "results"))
    assert main(["report", "smoke", "--out", str(root / "smoke")]) == 0
    mp.undo()
    return root / "smoke", root / "results"


@pytest.mark.integration
def test_sweep_writes_its_report_at_the_end(reference):
    assert (reference[5] / "smoke" / "index.html").is_file()


@pytest.mark.integration
def test_html_holds_every_cell_and_metric_and_no_external_url(smoke_report, reference):
    out, results = smoke_report
    html = (out / "index.html").read_text()
    doc = parse(out / "index.html")
    text = text_of(doc)
    heads = [" ".join(th.itertext()).strip() for th in
             doc.findall(".//table[@class='gt_table']/thead/tr/th")]
    rows = [[" ".join(td.itertext()).strip() for td in tr.findall("td")]
            for tr in doc.findall(".//table[@class='gt_table']/tbody/tr")]
    assert len(rows) == len(reference[0]) == 4
    settings = {(r[heads.index("recover")], r[heads.index("pattern")]) for r in rows}
    # the grid's axes as columns, in the grid's order (pattern, then recover); the dense row
    # says so in the first
    assert heads.index("pattern") < heads.index("recover")
    assert settings == {("none", "dense"), ("none", "2:4"), ("none", "unstructured"),
                        ("sparselora", "2:4")}
    metrics = {k for m in reference[0].values() for k in m if "/" in k and not
               result.split(k)[0]}  # task metrics, not a result's parts (sparsity/, lo/, ...)
    assert metrics and all(metric_label(m) in text for m in metrics)
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text)  # 95% intervals
    assert not re.search(r"https?://", html)  # offline: no CDN, font, or namespace URL
    assert not re.search(r"""(src|href)=["'](?!#|data:)""", html)  # only inline data
    assert "<svg" in html  # figures inline
    cells = pl.read_parquet(results / "smoke.parquet")
    assert cells.height == 4 and set(cells["status"]) == {"finished"}


@pytest.mark.system
def test_latex_compiles_and_figures_are_valid(smoke_report):
    out, _ = smoke_report
    tex = (out / "tables.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex
    pdf = pdflatex(out / "report.tex")
    assert pdf.read_bytes().startswith(b"%PDF")
    figs = sorted((out / "figures").iterdir())
    assert figs
    for f in figs:
        if f.suffix == ".svg":
            assert ET.parse(f).getroot().tag.endswith("svg")
        elif f.suffix == ".pdf":
            assert f.read_bytes().startswith(b"%PDF")
        else:
            assert Image.open(f).size[0] > 100


@pytest.mark.system
def test_page_renders_in_chromium_without_console_errors_and_sorts(smoke_report, tmp_path):
    out, _ = smoke_report
    url = (out / "index.html").as_uri()
    shot = tmp_path / "shot.png"
    p = browse(url, "--window-size=1280,1400", f"--screenshot={shot}")
    assert shot.is_file(), p.stderr[-2000:]
    assert console_lines(p) == []
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and figures, not blank
    # sort by the exact-match column, ascending, in the browser itself
    doc = parse(out / "index.html")
    heads = [" ".join(th.itertext()).strip() for th in
             doc.findall(".//table[@class='gt_table']/thead/tr/th")]
    col = heads.index("vqa exact match")
    dom = browse(f"{url}#sort={col}-asc", "--dump-dom").stdout
    tree = html5lib.parse(dom, namespaceHTMLElements=False)
    values = [float(" ".join(r.findall("td")[col].itertext()).split(" [")[0])
              for r in tree.findall(".//table[@class='gt_table']/tbody/tr")]
    assert values == sorted(values) and values[-1] == pytest.approx(0.95)


@pytest.mark.system
def test_console_check_sees_an_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('x')</script></body></html>")
    assert console_lines(browse(bad.as_uri(), "--dump-dom"))


def grid_file(tmp_path, name: str, text: str):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.system
def test_seeds_failed_and_running_cells(results, tmp_path):
    g = grid_file(tmp_path, "mixed", """name: mixed
description: seeds, a failure and a running cell
base: {prune: {method: wanda}, recover: {method: sparselora, steps: 5}}
axes: [{prune.sparsity: [0.5, 0.7]}]
include: [{prune: {method: magnitude, sparsity: 0.6}}]
seeds: [0, 1, 2]
""")
    n = demo.fill(g, failed=(6,), running=(7,))
    assert n == 9
    assert main(["report", "mixed"]) == 0
    out = tmp_path / "reports" / "mixed"
    text = text_of(parse(out / "index.html"))
    assert "Failed cells (1)" in text and "OutOfMemoryError: made up for a test" in text
    assert "Cells not finished (1)" in text and "running" in text
    rep = data.load("mixed")
    agg = data.aggregate(rep)
    full = agg.filter(pl.col("n") == 3)
    assert full.height == 2  # 0.5 and 0.7, each over seeds 0, 1, 2
    row = full.filter(pl.col("p.prune.sparsity") == "0.5").to_dicts()[0]
    want = rep.finished.filter(pl.col("p.prune.sparsity") == "0.5")["shapes_vqa/exact_match"]
    assert row["shapes_vqa/exact_match"] == pytest.approx(want.mean())
    assert f"{want.mean():.3f}\u00a0±\u00a0{want.std():.3f}" in text  # kept on one line
    assert "n" in [" ".join(th.itertext()).strip() for th in
                   parse(out / "index.html").findall(".//thead/tr/th")]
    tex = (out / "tables.tex").read_text()
    assert f"{want.mean():.3f} $\\pm$ {want.std():.3f}" in tex
    pdflatex(out / "report.tex")
    # the page's commands name the grid as it was given: a name, or its file
    assert "Made by vlmprune sweep mixed ; this page by vlmprune report mixed ." in \
        " ".join(text.split())
    assert main(["report", g]) == 0
    made = re.search(r"Made by\s+vlmprune sweep (\S+)\s+;", text_of(parse(out / "index.html")))
    assert made and Path(made[1]).resolve() == Path(g).resolve()


@pytest.mark.integration
@pytest.mark.parametrize("name, figure", [("modality_ratio", "modality_split"),
                                          ("modality_choice", "modality_choice"),
                                          ("recovery", "recovery"), ("methods", "methods")])
def test_shipped_grids_get_their_paper_figure(results, name, figure):
    demo.fill(name)
    assert main(["report", name]) == 0
    out = results.parent / "reports" / name
    svg = out / "figures" / f"{figure}.svg"
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert (out / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
    assert f'id="fig-{figure}"' in (out / "index.html").read_text()
    before = {f.name: f.read_bytes() for f in (out / "figures").iterdir()}
    assert main(["report", name]) == 0  # unchanged results: byte-identical figures
    assert {f.name: f.read_bytes() for f in (out / "figures").iterdir()} == before


@pytest.mark.integration
def test_a_steps_axis_draws_recovery_against_steps(results):
    """The paper's recovery grid has a steps axis: the figure is the score against the steps
    (only the trained cells' steps: `none` carries a default), a panel per level, a line per
    recovery method with its sparsity after recovery, not bars that mix the steps."""
    from harness.report import figures

    source = "experiments/paper/recovery.yaml"
    demo.fill(source)
    agg = data.aggregate(data.load("recovery", source=source))
    fig = figures.recovery(agg, "shapes_vqa/exact_match")
    assert fig is not None
    assert [a.get_title() for a in fig.axes] == ["wanda 80%", "wanda 2:4"]
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "30", "100"]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(x.startswith("lora-remask (sparsity") for x in labels)
        assert any(x.startswith("not recovered") for x in labels)
        remask = next(c for c in ax.containers if c.get_label().startswith("lora-remask"))
        assert list(remask.lines[0].get_xdata()) == [10.0, 30.0, 100.0]  # type: ignore[attr-defined]
    figures.plt.close(fig)


@pytest.mark.integration
def test_compare_two_grids(results, tmp_path):
    text = yaml.safe_load(open("experiments/modality_ratio.yaml"))
    for name, model_name in (("left", "shapes-llava"), ("right", "shapes-llava")):
        text["name"] = name
        text["description"] = model_name
        grid_file(tmp_path, name, yaml.safe_dump(text))
        demo.fill(str(tmp_path / f"{name}.yaml"))
    assert main(["report", "--compare", "left", "right"]) == 0
    md = (tmp_path / "reports" / "compare-left-right" / "results.md").read_text()
    assert "Δ" in md and md.count("\n") == 2 + 17


@pytest.mark.integration
def test_report_errors_are_one_line(results, tmp_path, capsys):
    assert main(["report", "smoke"]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    demo.fill("smoke")
    assert main(["report", "smok"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'smoke'" in err and err.count("\n") == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["report", "smoke", "--out", str(tmp_path / "mine")]) == 2
    assert "not a vlmprune report" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.integration
def test_cells_the_grid_no_longer_defines_leave_the_report(results, tmp_path):
    """A changed grid (an axis value dropped) reports the cells it defines now; the older
    runs stay in MLflow and the page says how many were left out."""
    text = """name: shrinking
base: {prune: {method: wanda}}
axes: [{prune.sparsity: [0.5, 0.6, 0.7]}]
"""
    g = grid_file(tmp_path, "shrinking", text)
    assert demo.fill(g) == 3
    grid_file(tmp_path, "shrinking", text.replace("0.5, 0.6, 0.7", "0.5, 0.7"))
    assert main(["report", g]) == 0  # the grid by its file
    rep = data.load("shrinking", source=g)
    assert sorted(rep.cells["p.prune.sparsity"].to_list()) == ["0.5", "0.7"]
    page = text_of(parse(tmp_path / "reports" / "shrinking" / "index.html"))
    assert "1 run of cells the grid no longer defines left out" in page


@pytest.mark.integration
def test_compare_gives_each_difference_its_interval_and_holm_corrected_p(results, tmp_path):
    """Made-up per-document answers (demo.py): the right grid's model answers 6 points
    fewer questions; each setting's difference is paired on the documents both answered."""
    text = yaml.safe_load(open("experiments/modality_ratio.yaml"))
    for name, shift in (("left", 0.0), ("right", -0.06)):
        text["name"] = name
        grid_file(tmp_path, name, yaml.safe_dump(text))
        demo.fill(str(tmp_path / f"{name}.yaml"), docs=400, shift=shift)
    from harness.report import compare

    df, _ = compare.frame("left", "right")
    m = "shapes_vqa/exact_match"
    rows = df.filter(pl.col(f"{m} [left]").is_between(0.2, 0.9)).to_dicts()
    assert len(rows) >= 5
    for r in rows:  # every one of these settings is significantly worse on the right
        assert r[f"{m} Δ lo"] <= r[f"{m} Δ"] <= r[f"{m} Δ hi"] < 0
        assert r[f"{m} p"] < 0.05
    assert df["shapes_caption/cider p"].null_count() == df.height  # no per-document CIDEr
    assert main(["report", "--compare", "left", "right"]) == 0
    md = (tmp_path / "reports" / "compare-left-right" / "results.md").read_text()
    assert f"{m} p" in md and f"{m} Δ lo" in md


@pytest.mark.integration
def test_rows_follow_the_grid_s_own_order(results):
    """The 100% series before the 120% one (not interleaved by vision target), recovery
    methods as the grid lists them (not alphabetically)."""
    from harness.report import tables

    demo.fill("modality_ratio")
    rows = tables.build(data.load("modality_ratio")).rows
    totals = [round(float(r["p.prune.sparsity.vision"]) + float(r["p.prune.sparsity.language"]),
                    1) for r in rows if r["p.prune.sparsity.vision"] != "-"]
    assert totals == sorted(totals) and len(set(totals)) == 2
    demo.fill("recovery")
    methods = [r["p.recover.method"] for r in tables.build(data.load("recovery")).rows
               if r["p.prune.pattern"] == "2:4"]
    assert methods == ["none", "lora", "sparselora"]
