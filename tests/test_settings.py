"""Settings (harness/settings.py): read from the environment and the flags in one place, a
command's flags last as long as the command, and a worker rebuilds the sweep's settings from
the environment it is given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import paths, settings
from harness.cli import main
from harness.settings import Settings
from harness.sweep import grid

pytestmark = pytest.mark.unit

BIG = ("name: big\nbase: {prune: {method: wanda, sparsity: 0.5}}\n"
       "axes: [{prune.calibration.seed: [0, 1, 2]}]\nseeds: [0, 1, 2, 3]\n")  # 12 cells


def test_a_flag_lasts_as_long_as_its_command(results, tmp_path, capsys, monkeypatch):
    """--max-cells once travelled to grid.py through os.environ and stayed there: the next
    command in the same process was limited too."""
    monkeypatch.delenv("VLMPRUNE_MAX_CELLS", raising=False)
    big = tmp_path / "big.yaml"
    big.write_text(BIG)
    assert main(["plan", str(big), "--max-cells", "5"]) == 2
    assert "12 cells" in capsys.readouterr().err
    assert "VLMPRUNE_MAX_CELLS" not in os.environ
    assert settings.current().max_cells is None and grid.max_cells() == grid.MAX_CELLS
    assert main(["plan", str(big)]) == 0  # not limited
    monkeypatch.setenv("VLMPRUNE_MAX_CELLS", "5")  # the environment still sets a limit
    assert main(["plan", str(big)]) == 2
    assert main(["plan", str(big), "--max-cells", "12"]) == 0  # and the flag wins over it


def test_settings_come_from_the_environment_and_go_to_workers(tmp_path, monkeypatch):
    env = {"VLMPRUNE_RESULTS": "out", "VLMPRUNE_REPORTS": str(tmp_path / "rep"),
           "VLMPRUNE_CACHE_HOME": str(tmp_path / "home"),
           "VLMPRUNE_EXPERIMENTS": os.pathsep.join(["a", "", "b"]), "VLMPRUNE_MAX_CELLS": "7"}
    s = Settings.from_env(env)
    assert s == Settings(Path("out"), tmp_path / "rep", tmp_path / "home",
                         (Path("a"), Path("b")), "7")
    assert Settings.from_env(env, max_cells=3).max_cells == 3
    assert Settings.from_env({}) == Settings()
    worker = Settings.from_env(s.environ())  # what a worker rebuilds from its environment
    assert worker.results == Path("out").resolve()
    assert (worker.reports, worker.cache_home) == (s.reports, s.cache_home)
    assert "VLMPRUNE_CACHE_HOME" not in Settings().environ()  # a worker uses its own default

    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "r1"))
    assert paths.results_dir() == tmp_path / "r1"  # no command running: read afresh
    with settings.using(Settings(results=tmp_path / "r2")):
        monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "r3"))
        assert paths.results_dir() == tmp_path / "r2"  # a command's own, for its duration
    assert paths.results_dir() == tmp_path / "r3"
