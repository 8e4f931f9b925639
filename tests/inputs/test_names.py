"""Grid, experiment and study names become file and folder names (reports/NAME/,
results/NAME.parquet, results/logs/NAME-*.log, reports/compare-A-B/): a name that is not
letters, digits, '_', '-' and '.' (or starts with a dot) is refused in one line, exit 2,
before anything is written. A grid named `../../x` wrote its report, parquet and log outside
reports/ and results/, and one with a '/' crashed with a traceback (issue "Hardening, round 2")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.fields import check_name

GOOD = ["smoke", "modality_ratio", "a.b-c_9", "A1", "x..y", "x" * 100]
BAD = ["../../x", "a/b", "/abs", "a\\b", ".", "..", "...", ".hidden", "a b", "x\ny", "<img>",
       "", "é", "C:x", "x" * 101]
HOSTILE = ["../../x", "a/b", "..", ".hidden", "<b>x</b>"]


@pytest.mark.unit
@pytest.mark.parametrize("name", GOOD)
def test_legal_names_pass(name):
    assert check_name(name) == name


@pytest.mark.unit
@pytest.mark.parametrize("name", BAD)
def test_other_names_are_refused(name):
    with pytest.raises(ValueError, match="letters, digits"):
        check_name(name)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder inside tmp_path, with results/ and reports/ in it (absent)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(folder / "results"))
    monkeypatch.setenv("VLMPRUNE_REPORTS", str(folder / "reports"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


def refused(argv: list[str], capsys, *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def grid(folder: Path, name: str, search: bool = False) -> str:
    data: dict = {"name": name, "base": {"prune": {"method": "wanda", "sparsity": 0.5}}}
    if search:
        data["search"] = {"budget": 0.5, "roles": {"vision": {"low": 0.0, "high": 0.9},
                                                  "language": {"low": 0.0, "high": 0.9}}}
    (folder / "g.yaml").write_text(json.dumps(data))  # JSON is YAML, and quotes any name
    return "g.yaml"


@pytest.mark.unit
@pytest.mark.parametrize("name", HOSTILE)
def test_grid_name_is_refused_by_every_command(name, work, tmp_path, capsys):
    g = grid(work, name, search=True)
    for argv in (["plan", g], ["sweep", g, "--dry-run"], ["sweep", g], ["report", g],
                 ["search", g], ["report", "--compare", g, "smoke"]):
        refused(argv, capsys, "g.yaml: field 'name'", "letters, digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["g.yaml"]


@pytest.mark.unit
@pytest.mark.parametrize("name", HOSTILE)
def test_report_and_search_flags_are_refused(name, work, tmp_path, capsys):
    g = grid(work, "fine", search=True)
    refused(["report", "smoke", "--experiment", name], capsys, "--experiment", "letters")
    refused(["report", name], capsys, "GRID", "letters, digits")
    refused(["report", "--compare", name, "smoke"], capsys, "--compare", "letters, digits")
    refused(["report", "--compare", "smoke", name], capsys, "--compare", "letters, digits")
    # (an executor that does not exist would be refused too: the name is checked first)
    refused(["search", g, "--study", name, "--executor", "bogus"], capsys, "--study",
            "letters, digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["g.yaml"]


@pytest.mark.integration
def test_compare_names_its_folder_by_the_grids_names(results, tmp_path):
    """`--compare A B` takes grid files too: the folder is named by their `name:` fields,
    never by their paths (here in a folder whose name would not be a legal one)."""
    from harness.testing import demo

    files = []
    for name in ("left", "right"):
        folder = tmp_path / "my grids" / name
        folder.mkdir(parents=True)
        files.append(folder / "g.yaml")
        files[-1].write_text(json.dumps({"name": name, "base": {"prune": {"method": "wanda"}},
                                         "axes": [{"prune.sparsity": [0.5, 0.6]}]}))
        demo.fill(str(files[-1]))
    assert main(["report", "--compare", *map(str, files)]) == 0
    reports = tmp_path / "reports"
    assert [p.name for p in reports.iterdir()] == ["compare-left-right"]
    assert (reports / "compare-left-right" / "results.md").read_text().count("\n") == 2 + 2
