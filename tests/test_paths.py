"""The user cache's JSON memos (harness.paths.memo_json): made once, read back, remade when
damaged or not what the reader expects, and never a failure when the cache is unwritable."""

from __future__ import annotations

import os

import pytest

from harness.paths import memo_json

pytestmark = pytest.mark.unit


def test_memo_is_made_once_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(tmp_path))
    calls = []

    def make():
        calls.append(1)
        return {"a": len(calls)}

    assert memo_json("kind", "k1", make) == {"a": 1}
    assert memo_json("kind", "k1", make) == {"a": 1} and len(calls) == 1
    assert sorted(os.listdir(tmp_path / "kind")) == ["k1.json"]  # no temporary file left
    (tmp_path / "kind" / "k1.json").write_text('{"a": ')  # torn write
    assert memo_json("kind", "k1", make) == {"a": 2}
    (tmp_path / "kind" / "k1.json").write_text('[1, 2]')  # valid JSON, not what it holds
    assert memo_json("kind", "k1", make, lambda v: isinstance(v, dict)) == {"a": 3}
    assert memo_json("kind", "k1", make, lambda v: isinstance(v, dict)) == {"a": 3}


def test_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VLMPRUNE_CACHE_HOME", str(blocker))
    assert memo_json("kind", "k", lambda: [1]) == [1]
