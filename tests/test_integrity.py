"""Manifests: a sealed folder checks whole; any change to a listed file is named."""

import json
import os

import pytest

from harness import integrity

pytestmark = pytest.mark.unit


def damage(path, how: str) -> None:
    """Change a file the way the outside check did: same-size overwrite, truncate, delete."""
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "digit":  # a quiet edit: one digit of a number changed, same size
        data = bytearray(path.read_bytes())
        i = max(i for i, b in enumerate(data) if chr(b).isdigit())
        data[i] = ord("1") if data[i] != ord("1") else ord("2")
        path.write_bytes(bytes(data))
    elif how == "fill":
        path.write_bytes(b"\xff" * path.stat().st_size)
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "delete":
        path.unlink()
    else:
        raise ValueError(how)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(os.urandom(3000))
    (tmp_path / "sub" / "b.json").write_text(json.dumps({"x": list(range(100))}))
    integrity.seal(tmp_path, "DONE", stage="prune")
    return tmp_path


def test_sealed_folder_checks_whole_and_lists_every_file(folder):
    assert integrity.check(folder, "DONE") is None
    body = integrity.manifest(folder, "DONE")
    assert set(body["files"]) == {"a.bin", "sub/b.json"} and body["stage"] == "prune"
    assert body["files"]["a.bin"]["size"] == 3000


@pytest.mark.parametrize("how", ["flip", "digit", "fill", "truncate", "delete"])
@pytest.mark.parametrize("name", ["a.bin", "sub/b.json"])
def test_every_damage_is_named(folder, name, how):
    damage(folder / name, how)
    problem = integrity.check(folder, "DONE")
    assert problem is not None and problem.startswith(name)
    same_size = how in ("flip", "digit", "fill")
    # the cheap check (sizes) misses same-size damage; the full check never does
    assert (integrity.check(folder, "DONE", deep=False) is None) == same_size


def test_marker_without_manifest_is_not_whole(folder):
    (folder / "DONE").write_text("")  # what stages wrote before manifests
    assert "no manifest" in integrity.check(folder, "DONE")
    (folder / "DONE").unlink()
    assert not integrity.sealed(folder, "DONE")
