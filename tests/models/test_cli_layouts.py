"""Any VLM from the command line: each shipped layout's architecture, saved as a folder with
random weights, through `vlmprune inspect --layout`, `prune --layout` and `eval` of the
pruned folder by its path alone (it carries its layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.testing.tiny_more import BUILDERS

LAYOUTS = Path(__file__).resolve().parents[2] / "harness" / "models" / "layouts"
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_inspect_prune_eval_from_the_command_line(name, tmp_path, results, capsys):
    model, processor = BUILDERS[name]()
    folder = tmp_path / name
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    layout = str(LAYOUTS / f"{name}.yaml")

    assert main(["inspect", str(folder), "--layout", layout]) == 0
    out = capsys.readouterr().out
    assert "family generic" in out and "vision" in out and "language" in out

    spec = tmp_path / "spec.yaml"
    spec.write_text("method: magnitude\nsparsity: 0.5\n")
    pruned = tmp_path / "pruned"
    assert main(["prune", str(spec), "--model", str(folder), "--layout", layout,
                 "--out", str(pruned)]) == 0
    meta = json.loads((pruned / "vlmprune.json").read_text())
    assert meta["family"] == "generic" and (pruned / meta["layout"]).is_file()

    capsys.readouterr()
    assert main(["inspect", str(pruned)]) == 0  # by its path alone
    assert "family generic" in capsys.readouterr().out
    answers = tmp_path / "eval.json"
    assert main(["eval", "--model", str(pruned), "--suite", "quick", "--limit", "2",
                 "--out", str(answers)]) == 0
    samples = json.loads(answers.read_text())["samples"]
    assert sum(len(v) for v in samples.values()) == 2
