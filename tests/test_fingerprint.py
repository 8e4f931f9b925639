"""Content fingerprints: what a path holds, not the path; memoized without going stale."""

import json
import os

import pytest
from PIL import Image

from harness import fingerprint

pytestmark = pytest.mark.unit


def test_file_fingerprint_follows_content_not_path(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "results"))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("vision: [x]\n")
    b.write_text("vision: [x]\n")
    assert fingerprint.of_file(a) == fingerprint.of_file(b)
    before = fingerprint.of_file(a)
    a.write_text("vision: [y]\n")  # same size, new content
    assert fingerprint.of_file(a) != before
    assert fingerprint.of_file(tmp_path / "nope") == f"missing:{tmp_path / 'nope'}"


def test_memo_is_written_only_by_save_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "results"))
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(1000))
    h = fingerprint.of_file(f)
    assert not fingerprint.memo_file().exists()  # plan and dry runs write nothing
    fingerprint.save()
    memo = json.loads(fingerprint.memo_file().read_text())
    assert memo[str(f.resolve())][3] == h


def test_folder_fingerprint_sees_any_file_and_skips_hidden_and_pycache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "results"))
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "w.safetensors").write_bytes(b"1234")
    h0 = fingerprint.of_folder(d)
    (d / ".cache").mkdir()
    (d / ".cache" / "x").write_text("lock")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "m.pyc").write_bytes(b"x")
    fingerprint.fresh()
    assert fingerprint.of_folder(d) == h0
    (d / "sub" / "w.safetensors").write_bytes(b"1235")
    assert fingerprint.of_folder(d) == h0  # memoized within one grid expansion ...
    fingerprint.fresh()
    assert fingerprint.of_folder(d) != h0  # ... and seen at the next


def test_hub_blob_symlinks_count_by_their_name(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    assert fingerprint.of_file(link) == "ab" * 32


def test_jsonl_source_includes_the_images_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMPRUNE_RESULTS", str(tmp_path / "results"))
    Image.new("RGB", (8, 8), "red").save(tmp_path / "0.png")
    src = tmp_path / "cal.jsonl"
    src.write_text(json.dumps({"image": "0.png", "text": "a red square"}) + "\n")
    h0 = fingerprint.of_source(src)
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "0.png")
    fingerprint.fresh()
    assert fingerprint.of_source(src) != h0
