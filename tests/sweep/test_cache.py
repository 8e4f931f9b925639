"""The stage cache serves a stage only whole; `vlmprune cache verify` finds what is not."""

import logging

import pytest

from harness.cli import main
from harness.sweep import cache
from tests.test_integrity import damage

pytestmark = pytest.mark.unit


def write_stage(stage: str, key: str) -> None:
    with cache.writing(stage, key) as tmp:
        (tmp / "masks").write_bytes(bytes(range(256)) * 8)
        (tmp / "report.json").write_text('{"overall": {"sparsity": 0.5}}')


@pytest.mark.parametrize("how", ["fill", "truncate", "delete"])
@pytest.mark.parametrize("name", ["masks", "report.json"])
def test_damaged_stage_is_set_aside_with_one_warning_and_never_served(results, caplog, name,
                                                                      how):
    write_stage("prune", "k1")
    assert cache.open("prune", "k1") == cache.path("prune", "k1")
    damage(cache.path("prune", "k1") / name, how)
    with caplog.at_level(logging.WARNING, logger="harness.sweep.cache"):
        assert cache.open("prune", "k1") is None
    assert not cache.path("prune", "k1").exists()
    aside = list((results / "cache" / "damaged" / "prune").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith("k1-")
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "prune stage k1" in msg and name in msg and str(aside[0]) in msg
    assert cache.open("prune", "k1") is None  # gone: computed again by the caller


def test_never_written_is_not_served_and_not_set_aside(results):
    assert cache.open("eval", "nope") is None
    assert not (results / "cache" / "damaged").exists()


def test_cache_verify_reports_and_repairs(results, capsys):
    for k in ("good", "bad", "old"):
        write_stage("prune", k)
    damage(cache.path("prune", "bad") / "masks", "fill")
    (cache.path("prune", "old") / "DONE").write_text("")  # no manifest: an older version's
    (results / "cache" / "eval" / "half").mkdir(parents=True)  # never finished
    (results / "cache" / "eval" / ".tmp-x-1").mkdir()  # left by a killed run
    (results / "cache" / "data" / ".tmp-shapes-1").mkdir(parents=True)  # a killed data write
    assert len(cache.stale()) == 2
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert "bad" in out and "masks: content differs" in out and "no manifest" in out
    assert "never finished" in out and "killed run" in out
    assert cache.path("prune", "bad").exists()  # verify alone changes nothing
    assert main(["cache", "verify", "--repair"]) == 0
    assert cache.sweep_stale() == 1 and not cache.stale()  # the data one: sweeps remove it
    assert {p.name for p in (results / "cache" / "prune").iterdir()} == {"good"}
    assert not (results / "cache" / "eval").exists() or not any(
        (results / "cache" / "eval").iterdir())
    assert cache.set_aside_count() == 3
    assert main(["cache", "verify"]) == 0
    assert cache.open("prune", "good") is not None
