"""The shipped real-model grids (experiments/real/): `plan` passes against tiny random
stand-ins of the same architectures held as hub snapshots under their real ids, with the
calibration, recovery and paper-suite datasets as stand-ins in the same HF home; on a machine
without them it says exactly what is missing, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.sweep import cell
from harness.testing.tiny import tiny_llava
from harness.testing.tiny_more import tiny_qwen2_5_vl
from harness.world.splits import caption_sample
from tests.evaluation import paper_standins as standins

pytestmark = pytest.mark.integration
REAL = Path(__file__).resolve().parents[2] / "experiments" / "real"
GRIDS = {"llava15_modality_ratio": 17, "llava15_recovery": 7,
         "qwen25vl_modality_ratio": 17, "qwen25vl_recovery": 7}
MODELS = {"llava-hf/llava-1.5-7b-hf": tiny_llava, "Qwen/Qwen2.5-VL-7B-Instruct": tiny_qwen2_5_vl}
COCO = "lmms-lab/COCO-Caption2017"


def coco() -> dict:
    rows = [caption_sample("validation", i) for i in range(standins.ROWS)]
    return {"question_id": [str(i) for i in range(standins.ROWS)],
            "image": [standins._image(scene) for scene, _ in rows],
            "question": ["Provide a one-sentence caption for the provided image."] * len(rows),
            "answer": [[caption] * 5 for _, caption in rows]}


def model_snapshot(home: Path, repo: str) -> None:
    """What `hf download REPO` leaves: a tiny random model of the architecture."""
    base = home / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(standins.commit(repo))
    model, processor = MODELS[repo]()
    folder = base / "snapshots" / standins.commit(repo)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture
def home(hf_home, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))  # lmms-eval's reader
    cell._builtin_data.cache_clear()  # where the paper suite's data was found, per process
    yield hf_home
    cell._builtin_data.cache_clear()


def test_plan_passes_against_stand_ins_of_the_real_models(home, results, capsys, monkeypatch):
    monkeypatch.setitem(standins.REPOS, COCO, [("default", "val", "data", coco)])
    for repo in [*standins.REPOS]:
        standins.hub_snapshot(home, repo)
    for repo in MODELS:
        model_snapshot(home, repo)
    for name, n in GRIDS.items():
        capsys.readouterr()
        assert main(["plan", str(REAL / f"{name}.yaml")]) == 0, capsys.readouterr().err
        assert f"{name}: {n} cells" in capsys.readouterr().out


def test_plan_says_what_is_missing_without_the_weights(home, results, capsys):
    for name in GRIDS:
        capsys.readouterr()
        assert main(["plan", str(REAL / f"{name}.yaml")]) == 2
        err = capsys.readouterr().err
        # the first of what is missing (the checks' order: the suite's data, the model, the
        # calibration and recovery data), with the command that fetches it
        assert err.count("\n") == 1 and "not on this machine" in err, err
        assert "hf download" in err or "download it where the hub is reachable" in err, err
