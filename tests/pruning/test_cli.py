import json
import subprocess
import sys

import pytest

from harness.testing.tiny import tiny_llava
from harness.zoo.build import save

pytestmark = pytest.mark.system


def vlmprune(*args, cwd):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_prune_command_saves_model_masks_and_report(tmp_path):
    model, proc = tiny_llava(d=32, layers=2)
    save(model, proc, tmp_path / "tiny")
    (tmp_path / "spec.yaml").write_text(
        "prune: {method: wanda, pattern: '2:4', calibration: {samples: 4, batch_size: 4}}\n")
    # not the embedded model, and no calibration source: refused, saying how to give data
    r = vlmprune("prune", "spec.yaml", "--model", str(tmp_path / "tiny"), "--out", "out",
                 cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "prune.calibration.source" in r.stderr and "COCO-Caption2017" in r.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "spec.yaml").write_text(
        "prune: {method: wanda, pattern: '2:4', calibration: {source: shapes, samples: 4, "
        "batch_size: 4}}\n")
    r = vlmprune("prune", "spec.yaml", "--model", str(tmp_path / "tiny"), "--out", "out",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "out" / "sparsity.json").read_text())
    assert rep["roles"]["language"]["nm_valid"] is True
    assert abs(rep["overall"]["sparsity"] - 0.5) < 1e-9
    assert (tmp_path / "out" / "masks.safetensors").is_file()


def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tmp_path):
    model, proc = tiny_llava(d=32, layers=2)
    save(model, proc, tmp_path / "tiny")
    (tmp_path / "spec.yaml").write_text("prune: {method: wanda, pattern: '4:2'}\n")
    r = vlmprune("prune", "spec.yaml", "--model", str(tmp_path / "tiny"), "--out", "out",
                 cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "spec.yaml" in lines[0] and "'pattern'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_command_line_turns_the_hub_off_before_any_command(monkeypatch):
    import os

    from harness.cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert main(["list"]) == 0
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"


@pytest.mark.parametrize("text, words", [
    ("method: wanda\npattern: '3:7'\n", "M=7 does not divide the input width"),
    ("method: wanda\nsparsity: 0.9\ndistribution: budget\nvision_share: 0.95\n",
     "budget 0.90 with vision_share 0.95"),
    ("method: wanda\nsparsity: {language: [0.3, 0.4, 0.5, 0.6, 0.7, 0.7, 0.8]}\n",
     "7 groups for 6 language blocks"),
])
def test_a_spec_the_model_cannot_take_is_refused_before_it_loads(text, words, tmp_path,
                                                                 monkeypatch, capsys):
    """Found from the model built on the meta device, as a grid's cells are checked on its
    shapes, not after the weights loaded (16-26 s, three lines, the spec file not named)."""
    from harness.cli import main
    from harness.models import load as load_module

    real = load_module.load

    def shapes_only(spec, weights=True):
        assert not weights, "the model's weights were loaded"
        return real(spec, weights=weights)

    monkeypatch.setattr(load_module, "load", shapes_only)
    (tmp_path / "spec.yaml").write_text(text)
    assert main(["prune", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and "spec.yaml" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
