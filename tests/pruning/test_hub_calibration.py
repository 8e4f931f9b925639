"""Calibration from a hub dataset in the local Hugging Face cache (`hf:REPO[:CONFIG]`): a
stand-in with the real repo's config, split and columns (Flickr30k: an image and a list of
five captions) in a temporary HF home, read from a hub snapshot and from a datasets cache;
seeded samples, the caption after the model's caption prompt, one-line errors before any
model loads, and the stage key following the snapshot."""

from __future__ import annotations

import pytest
from PIL import Image

from harness.errors import UserError
from harness.pruning import calibration
from harness.pruning.spec import load as load_spec
from harness.sweep.cell import CellSpec, prune_key
from tests.evaluation import paper_standins as standins

pytestmark = pytest.mark.unit
REPO = "lmms-lab-encoder/flickr30k"
SOURCE = f"hf:{REPO}"


class Prompted:
    """What calibration asks of an adapter: its caption prompt."""

    @staticmethod
    def prompt_for(text: str) -> str:
        return "USER: <image>\nDescribe the image. ASSISTANT:" if not text else text


def spec(**calibration):
    return load_spec({"method": "wanda", "calibration": {
        "source": SOURCE, "split": "test", "text": "caption", "samples": 4, **calibration}})


def test_samples_come_from_a_hub_snapshot_by_seed(hf_home):
    standins.hub_snapshot(hf_home, REPO)
    got = calibration.samples(spec().calibration, Prompted())
    assert len(got) == 4 and all(isinstance(im, Image.Image) for im, _ in got)
    captions = {c[0] for c in standins.flickr30k()["caption"]}
    for _, text in got:
        prompt, caption = text.split("ASSISTANT: ")
        assert prompt.startswith("USER: <image>") and caption in captions
    assert calibration.samples(spec().calibration, Prompted()) == got
    other = calibration.samples(spec(seed=1).calibration, Prompted())
    assert [t for _, t in other] != [t for _, t in got]


def test_a_datasets_cache_gives_the_same_samples(hf_home, tmp_path):
    standins.hub_snapshot(tmp_path / "snap", REPO)
    import datasets
    from huggingface_hub import constants

    constants.HF_HUB_CACHE = str(tmp_path / "snap" / "hub")
    from_snapshot = calibration.samples(spec().calibration, Prompted())
    constants.HF_HUB_CACHE = str(hf_home / "hub")  # no snapshot here: the datasets cache
    standins.datasets_cache(hf_home, REPO, tmp_path / "scratch")
    assert not (hf_home / "hub").exists() and datasets.config.HF_DATASETS_CACHE
    assert [t for _, t in calibration.samples(spec().calibration, Prompted())] == \
        [t for _, t in from_snapshot]


def test_nothing_downloaded_is_one_line_naming_the_command(hf_home, tmp_path, results, capsys):
    """Before any model loads: the checks of `plan` (and of every sweep) stop in one line; the
    stage key computed meanwhile names the data unavailable, so nothing is stored under it."""
    import yaml

    from harness.cli import main

    cell = CellSpec.model_validate({"prune": spec().model_dump()})
    assert prune_key(cell)  # computed (the checks say what is missing, in their order)
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": {
        "prune": spec().model_dump(), "recover": {"method": "none"},
        "eval": {"suite": "quick", "limit": 2}}}))
    assert main(["plan", str(grid)]) == 2
    msg = capsys.readouterr().err
    assert msg.count("\n") == 1 and "prune.calibration.source hf:" in msg
    assert f"hf download {REPO} --repo-type dataset" in msg


def test_a_missing_split_or_column_names_what_there_is(hf_home):
    standins.hub_snapshot(hf_home, REPO)
    with pytest.raises(UserError, match="no split 'train' \\(has: test\\)"):
        calibration.samples(spec(split="train").calibration, Prompted())
    with pytest.raises(UserError) as e:
        calibration.samples(spec(text="sentences").calibration, Prompted())
    assert "no column 'sentences'" in str(e.value) and "caption" in str(e.value)


def test_hub_fields_need_a_hub_source_and_keys_follow_the_snapshot(hf_home):
    with pytest.raises(UserError, match="split: only with a hub source"):
        load_spec({"calibration": {"source": "shapes", "split": "test"}})
    # the other sources' specs (and keys) hold no hub fields
    assert "split" not in load_spec({}).model_dump()["calibration"]
    standins.hub_snapshot(hf_home, REPO)
    cell = CellSpec.model_validate({"prune": spec().model_dump()})
    first = prune_key(cell)
    assert prune_key(CellSpec.model_validate({"prune": spec(seed=3).model_dump()})) != first
    base = hf_home / "hub" / f"datasets--{REPO.replace('/', '--')}"
    (base / "refs" / "main").write_text("0" * 40)  # a new commit of the dataset
    (base / "snapshots" / standins.commit(REPO)).rename(base / "snapshots" / ("0" * 40))
    assert prune_key(cell) != first


def test_an_image_outside_the_dataset_is_one_line_naming_the_source(tmp_path):
    from harness import sources

    with pytest.raises(UserError) as e:
        sources.hub_image("http://images.cocodataset.org/x.jpg", str(tmp_path),
                          f"prune.calibration.source {SOURCE}")
    msg = str(e.value)
    assert msg.startswith(f"prune.calibration.source {SOURCE}: an image that is not in")
    assert "x.jpg" in msg and "\n" not in msg
