"""Strings from the store reach the report's HTML, LaTeX, Markdown and figures inert.

The MLflow store is read, not trusted: an experiment's description, run names (the cell
labels), parameter values, a failure's reason and the version tags are free text anyone who
can log to it chooses. Every page is opened in Chromium, where a script or an image's
onerror that got through would log to the console. Experiment names are checked like grid
names (they name folders): a hostile one is refused in one line. `vlmprune report --compare`
wrote its names into the page unescaped, and Chromium ran an injected `<img onerror>`."""

from __future__ import annotations

import re

import html5lib
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.report import compare
from harness.sweep.tracking import TAG_HASH, TAG_KIND, tracking_uri
from tests.report.browser import browse, console_lines, pdflatex

pytestmark = pytest.mark.system


def payload(where: str) -> str:
    """Markup that breaks out of text, attributes, <title>, <script>, comments and SVG, and
    logs INJECTED-<where> when a browser runs it; then what LaTeX, mathtext and Markdown
    would read as commands."""
    return (f"</title></script>--><svg/onload=console.log('INJECTED-{where}')>"
            f"\"'><img src=x onerror=console.log('INJECTED-{where}')>"
            f"<script>console.log('INJECTED-{where}')</script>"
            "$\\input{/etc/hostname}$ 100% & #1 _x_ {y} ~ ^ \\ | [a](javascript:alert(1))")


HOSTILE_NAME = payload("experiment name") + "\nvlmprune: a second line"
# in Markdown, a '<' (a tag) or '[' (a link) not backslash-escaped
RAW_MD = re.compile(r"(?<!\\)(?:\\\\)*[<\[]")


def fill(client: MlflowClient, name: str) -> None:
    """An experiment (no grid file: one kept after its grid was deleted) whose free text is
    hostile: description, cell labels, parameter values, failure, versions. Two methods at
    two sparsities, so the table, the methods figure and the question-type map all draw."""
    exp = client.create_experiment(name, tags={
        "mlflow.note.content": payload("description") + "\n\nsecond paragraph"})
    tags = {TAG_KIND: "cell", "vlmprune.git_commit": payload("commit"),
            "vlmprune.version.torch": payload("version")}
    i = 0
    for m in range(2):
        for s in (0.5, 0.6):
            i += 1
            run = client.create_run(exp, run_name=f"${m}$ {payload('cell')} {s}",
                                    tags=tags | {TAG_HASH: f"h{i}"})
            rid = run.info.run_id
            for k, v in {"prune": "wanda", "prune.method": f"${m}$ {payload('param')}",
                         "prune.pattern": "unstructured", "prune.sparsity": str(s)}.items():
                client.log_param(rid, k, v)
            for k, v in {"shapes_vqa/exact_match": 0.9 - s / 2 - m / 10,
                         "shapes_vqa/color_exact_match": 0.8, "shapes_vqa/shape_exact_match":
                         0.7, "sparsity/overall": s}.items():
                client.log_metric(rid, k, v)
            client.set_terminated(rid, "FINISHED")
    failed = client.create_run(exp, run_name=payload("failed cell"),
                               tags=tags | {TAG_HASH: "hf", "vlmprune.failure":
                                            payload("failure")})
    client.set_terminated(failed.info.run_id, "FAILED")
    client.create_run(exp, run_name=payload("running cell"), tags=tags | {TAG_HASH: "hr"})


@pytest.fixture
def store(results):
    client = MlflowClient(tracking_uri())
    for name in ("hostile-a", "hostile-b", HOSTILE_NAME):
        fill(client, name)
    return results.parent / "reports"


def inert(page) -> str:
    """Open the page in Chromium: nothing logs to the console, the only script is the
    page's own and no injected element exists; returns the page's text."""
    p = browse(page.as_uri(), "--dump-dom")
    assert p.returncode == 0 and "<body" in p.stdout, p.stderr[-2000:]
    assert console_lines(p) == []
    dom = html5lib.parse(p.stdout, namespaceHTMLElements=False)
    assert dom.findall(".//img") == [] and dom.findall(".//svg/svg") == []
    assert len(dom.findall(".//script")) <= 1
    return " ".join(dom.itertext())


def test_the_console_check_sees_an_injection(tmp_path):
    raw = tmp_path / "raw.html"
    raw.write_text(f"<!doctype html><html><head><title>x</title></head><body>"
                   f"<h1>{payload('raw')}</h1></body></html>")
    lines = console_lines(browse(raw.as_uri(), "--dump-dom"))
    assert any("INJECTED-raw" in line for line in lines), lines


def test_report_of_hostile_store_is_inert(store):
    assert main(["report", "hostile-a"]) == 0
    out = store / "hostile-a"
    text = inert(out / "index.html")
    for where in ("description", "param", "failure", "failed cell", "running cell", "commit",
                  "version"):
        assert f"console.log('INJECTED-{where}')" in text  # shown as text, not run
    pdflatex(out / "report.tex")  # compiles: nothing in it is a command or a paragraph break
    tex = (out / "tables.tex").read_text()
    assert "\\input{" not in tex and "\\textbackslash{}input\\{/etc/hostname\\}" in tex
    assert not RAW_MD.search((out / "results.md").read_text())
    assert {f.suffix for f in (out / "figures").iterdir()} == {".svg", ".pdf", ".png"}


def test_compare_of_hostile_store_is_inert(store):
    assert main(["report", "--compare", "hostile-a", "hostile-b"]) == 0
    out = store / "compare-hostile-a-hostile-b"
    text = inert(out / "index.html")
    assert "console.log('INJECTED-cell')" in text and "hostile-a vs hostile-b" in text
    assert not RAW_MD.search((out / "results.md").read_text())


def test_compare_page_escapes_its_names(tmp_path):
    """Defence in depth: names are checked before they get here, but the page escapes them
    anyway (and so would a caller of compare.page)."""
    a, b = payload("a"), payload("b")
    df = pl.DataFrame({"cell": [payload("cell")], f"vqa [{a}]": [0.5], f"vqa [{b}]": [0.6],
                       "vqa Δ": [0.1]})
    page = tmp_path / "index.html"
    page.write_text(compare.page(df, a, b))
    text = inert(page)
    assert "console.log('INJECTED-a')" in text and "console.log('INJECTED-b')" in text


def test_hostile_experiment_names_are_refused(store, capsys):
    for argv in (["report", HOSTILE_NAME], ["report", "hostile-a", "--experiment", HOSTILE_NAME],
                 ["report", "--compare", HOSTILE_NAME, "hostile-b"],
                 ["report", "--compare", "hostile-a", HOSTILE_NAME]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "letters, digits" in err, err
    # a misspelt name: the names one could mean, and only those (one line still)
    assert main(["report", "hostile-c"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INJECTED" not in err
    assert "(known: Default, hostile-a, hostile-b)" in err
    assert not store.exists()  # nothing written
