"""A pruning method from another package: tests/plugins/vlmprune_plugin_demo (one module with
the method and its options, one entry point in its pyproject.toml), installed by pip into a
folder of its own (the venv is left as it is) and put on the PYTHONPATH of `vlmprune`
subprocesses, which find it through its .dist-info. A grid sweeps it at two values of its
option; a bad option is refused in one line naming the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import registry
from tests.plugin_site import install, vlmprune
from tests.sweep.runs import cell_runs

pytestmark = pytest.mark.system

PLUGIN = Path(__file__).parent / "plugins" / "vlmprune_plugin_demo"
GRID = """\
name: plugin_demo
description: a pruning method from an installed plugin, at two values of its option
base:
  model: {name: shapes-llava}
  prune: {method: half_magnitude, sparsity: {language: 0.5}}
  eval: {suite: quick, limit: 4}
axes:
  - prune.half_magnitude.fraction: %s
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin installed into a folder; pip builds it from a copy (its build files stay
    out of the repository) and needs no index."""
    tmp = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, tmp / "src")
    return install(tmp / "src", tmp / "site")


def test_the_plugin_is_not_installed_in_the_test_process():
    assert "half_magnitude" not in registry.names("methods")


def test_a_plugin_method_with_options_runs_from_a_grid(site, tmp_path, results):
    (tmp_path / "grid.yaml").write_text(GRID % "[0.5, 0.75]")
    r = vlmprune(site, "sweep", "grid.yaml", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _, runs = cell_runs("plugin_demo", status="FINISHED")
    got = sorted((float(run.data.params["prune.half_magnitude.fraction"]),
                  run.data.metrics["sparsity/language"], run.data.metrics["sparsity/vision"])
                 for run in runs)
    # the spec asks for 0.5 of the language model; the plugin prunes `fraction` of that, per
    # row (shapes-llava's widths, 192 and 512, give exact counts at both)
    assert got == [(0.5, 0.25, 0.0), (0.75, 0.375, 0.0)]


@pytest.mark.parametrize("values, words", [
    ("[0.5, 1.5]", "cell 1 (prune.half_magnitude.fraction=1.5): field "
                   "'prune.half_magnitude.fraction': Input should be less than or equal to 1"),
    ("[{fracton: 0.5}]", "field 'prune.half_magnitude.fracton': unknown key"),
])
def test_a_bad_plugin_option_is_one_line_naming_the_field(site, tmp_path, results, values,
                                                          words):
    grid = GRID % values
    if "fracton" in values:
        grid = grid.replace("prune.half_magnitude.fraction:", "prune.half_magnitude:")
    (tmp_path / "grid.yaml").write_text(grid)
    r = vlmprune(site, "plan", "grid.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "grid.yaml" in lines[0] and words in lines[0], lines
