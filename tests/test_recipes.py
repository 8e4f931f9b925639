"""CONTRIBUTING.md's recipes, followed as written: each writes the one file the recipe names
and its one registration, then runs `vlmprune` on it.

- a pruning method: tests/test_plugins.py follows that recipe (tests/plugins/
  vlmprune_plugin_demo); here only a check that the recipe points at it;
- a model family: a layout YAML for a tiny random PaliGemma, named with --layout;
- a report figure and an executor: a plugin package written here (one module, one entry
  point in its pyproject.toml), installed by pip into a folder of its own and put on the
  PYTHONPATH of `vlmprune` subprocesses, as a user's package would be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import registry
from harness.cli import main
from harness.testing import demo
from tests import plugin_site
from tests.plugin_site import vlmprune
from tests.sweep.runs import cell_runs

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
requires-python = ">=3.11"

[project.entry-points."vlmprune.{kind}"]
{name} = "{module}:ENTRY"

[tool.setuptools]
py-modules = ["{module}"]
"""

# Recipe 3: a report figure (draw(df, metric) -> Figure | None; the entry's help is its caption)
FIGURE = '''\
from matplotlib.figure import Figure

from harness.registry import Entry


def draw(df, metric):
    """The headline metric of every cell, sorted: None when there is nothing to draw."""
    if metric not in df.columns or df.height < 2:
        return None
    values = sorted(v for v in df[metric].to_list() if v is not None)
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.plot(range(len(values)), values, marker="o")
    ax.set(xlabel="cell (sorted)", ylabel=metric)
    return fig


ENTRY = Entry("figures", "sorted_cells", "vlmprune_figure_demo:draw",
              "Every cell's headline metric, sorted: a made-up caption for a test.")
'''

# Recipe 4: an executor (start(dispatch, tag) -> Workers, harness/sweep/dispatch.py)
EXECUTOR = '''\
from harness.registry import Entry


class Serial:
    """One worker: the sweep's own process, which runs a cell when asked for outcomes."""

    size = 1

    def __init__(self):
        self.sent = []

    def describe(self):
        return "1 worker, this process (the serial plugin)"

    def submit(self, slot, job):
        self.sent.append((slot, job))

    def wait(self, timeout=None):
        done = [(slot, job.run()) for slot, job in self.sent]
        self.sent.clear()
        return done

    def restart(self, slot):
        pass

    def retire(self, slot):
        pass

    def close(self):
        pass


def start(how, tag):
    return Serial()


ENTRY = Entry("executors", "serial", "vlmprune_executor_demo:start",
              "here, through the dispatch loop (a plugin)")
'''

# Recipe 2: a model family (a layout file; the registration is --layout or model.layout)
LAYOUT = """\
vision: [model.vision_tower.encoder.layers]
bridge: [model.multi_modal_projector]
language: [model.language_model.layers]
exclude: [lm_head]
prompts:
  vqa: "<image>answer en {question}"
  caption: "<image>caption en"
"""

GRID = """\
name: recipe_executor
description: the executor recipe's grid
base:
  model: {name: shapes-llava}
  prune: {method: magnitude}
  eval: {suite: quick, limit: 2}
axes:
  - prune.sparsity: [0.3, 0.5]
"""


def install(tmp: Path, module: str, source: str, kind: str, name: str) -> Path:
    """The one-module plugin package, installed by pip into a folder of its own."""
    src = tmp / "src"
    src.mkdir(parents=True)
    (src / f"{module}.py").write_text(source)
    (src / "pyproject.toml").write_text(PYPROJECT.format(
        dist=module.replace("_", "-"), kind=kind, name=name, module=module))
    return plugin_site.install(src, tmp / "site")


def recipe(title: str) -> str:
    """The text of one recipe of CONTRIBUTING.md (from its heading to the next)."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_method_recipe_is_the_one_test_plugins_follows():
    text = recipe("A new pruning method")
    assert "tests/plugins/vlmprune_plugin_demo" in text and "tests/test_plugins.py" in text
    demo_pkg = ROOT / "tests" / "plugins" / "vlmprune_plugin_demo"
    assert sorted(p.name for p in demo_pkg.iterdir() if p.suffix in (".py", ".toml")) == [
        "pyproject.toml", "vlmprune_plugin_demo.py"]
    assert '"vlmprune.methods"' in (demo_pkg / "pyproject.toml").read_text()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_the_model_family_recipe(tmp_path, results, capsys, monkeypatch):
    from harness.models import locate
    from harness.testing.tiny_more import tiny_paligemma

    assert "--layout" in recipe("A new model family")
    model, processor = tiny_paligemma()
    folder = tmp_path / "tiny-paligemma"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    layout = tmp_path / "my_vlm.yaml"  # the one file
    layout.write_text(LAYOUT)

    assert main(["inspect", str(folder), "--layout", str(layout)]) == 0
    out = capsys.readouterr().out
    assert "family generic" in out and "vision" in out and "language" in out
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: wanda\nsparsity: 0.5\ncalibration: {source: shapes}\n")
    pruned = tmp_path / "pruned"
    assert main(["prune", str(spec), "--model", str(folder), "--layout", str(layout),
                 "--out", str(pruned)]) == 0
    meta = json.loads((pruned / "vlmprune.json").read_text())
    assert meta["family"] == "generic" and (pruned / meta["layout"]).read_text()

    # shipped under its model_type instead, the same file needs no flag
    assert "layouts/<model_type>.yaml" in recipe("A new model family")
    shipped = tmp_path / "layouts"
    shipped.mkdir()
    (shipped / "paligemma.yaml").write_text(LAYOUT)
    monkeypatch.setattr(locate, "LAYOUTS", shipped)
    assert main(["prune", str(spec), "--model", str(folder), "--out", str(tmp_path / "p2")]) == 0
    assert main(["inspect", str(folder)]) == 0
    assert "family generic" in capsys.readouterr().out
    again = json.loads((tmp_path / "p2" / "vlmprune.json").read_text())
    assert again["family"] == "generic" and again["layout"] == meta["layout"]
    assert (tmp_path / "p2" / again["layout"]).read_text() == \
        (pruned / meta["layout"]).read_text()


def test_the_figure_recipe(tmp_path, results):
    assert "vlmprune.figures" in recipe("A new report figure")
    assert "sorted_cells" not in registry.names("figures")  # not installed in this process
    site = install(tmp_path / "plugin", "vlmprune_figure_demo", FIGURE, "figures",
                   "sorted_cells")
    demo.fill("methods")
    r = vlmprune(site, "report", "methods", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = results.parent / "reports" / "methods"
    assert (out / "figures" / "sorted_cells.svg").is_file()
    assert (out / "figures" / "methods.svg").is_file()  # the built-ins are still drawn
    html = (out / "index.html").read_text()
    assert 'id="fig-sorted_cells"' in html and "a made-up caption for a test" in html


def test_the_executor_recipe(tmp_path, results):
    assert "vlmprune.executors" in recipe("A new executor")
    site = install(tmp_path / "plugin", "vlmprune_executor_demo", EXECUTOR, "executors",
                   "serial")
    r = vlmprune(site, "sweep", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "serial" in r.stdout, r.stdout
    (tmp_path / "grid.yaml").write_text(GRID)
    r = vlmprune(site, "sweep", "grid.yaml", "--executor", "serial", "--no-report",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _, runs = cell_runs("recipe_executor", status="FINISHED")
    assert sorted(round(run.data.metrics["sparsity/language"], 1) for run in runs) == [0.3,
                                                                                       0.5]
