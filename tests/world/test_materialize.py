import json

import pytest
from PIL import Image

from harness.world import splits
from harness.world.scene import render
from harness.world.splits import materialize, vqa_sample

pytestmark = pytest.mark.unit


def test_materialize_writes_pngs_and_jsonl(tmp_path):
    out = materialize("test", tmp_path / "shapes_test", n_vqa=6, n_caption=3)
    rows = [json.loads(x) for x in (out / "vqa.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert rows[2]["question"] == vqa_sample("test", 2).qa.question
    img = Image.open(out / rows[2]["image"])
    assert (img.size, img.mode) == ((64, 64), "RGB")
    import numpy as np

    assert np.array_equal(np.asarray(img), render(vqa_sample("test", 2).scene))
    caps = (out / "caption.jsonl").read_text().splitlines()
    assert len(caps) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp left"
    # second call reuses the finished folder
    assert materialize("test", tmp_path / "shapes_test", 6, 3) == out


def test_damaged_materialized_data_is_set_aside_and_written_again(tmp_path, caplog):
    out = materialize("test", tmp_path / "shapes_test", n_vqa=6, n_caption=3)
    png = out / "images" / "vqa_000002.png"
    good = png.read_bytes()
    png.write_bytes(good[:-10] + bytes(10))  # same size, last bytes zeroed
    splits._checked.clear()  # a new process: contents are checked once per process
    assert materialize("test", tmp_path / "shapes_test", 6, 3) == out
    assert png.read_bytes() == good
    (aside,) = tmp_path.glob("shapes_test.damaged-*")
    assert (aside / "images" / "vqa_000002.png").read_bytes() != good
    assert "vqa_000002.png" in caplog.text
