"""The thread policy: counts, overrides, and answers that do not depend on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import threads
from harness.errors import UserError

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]


def test_count_follows_flag_then_env_then_cores_split_among_workers(monkeypatch):
    monkeypatch.delenv("VLMPRUNE_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 8)
    assert threads.count() == 8 and threads.count(workers=3) == 2
    assert threads.count(workers=16) == 1
    monkeypatch.setenv("VLMPRUNE_THREADS", "3")
    assert threads.count() == 3 and threads.count(5) == 5
    monkeypatch.setenv("VLMPRUNE_THREADS", "many")
    with pytest.raises(UserError, match="VLMPRUNE_THREADS='many'"):
        threads.count()
    with pytest.raises(UserError, match="give 1 or more"):
        threads.count(0)


def test_cli_sets_passive_waiting_and_reads_grids_without_torch():
    """`vlmprune list` (every shipped grid expanded and validated): the wait policy is set
    before anything could load torch, and nothing did."""
    code = ("import os, sys; from harness.cli import main; main(['list']);"
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules, 'mlflow' in "
            "sys.modules, 'lmms_eval' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=ROOT)
    assert p.stdout.split()[-4:] == ["PASSIVE", "False", "False", "False"], p.stderr[-2000:]


def predictions(tmp_path, name: str, *flags: str, env: dict | None = None,
                here: bool = False) -> dict:
    """The eval command's predictions, from a process of its own (whose OpenMP reads `env`
    when torch loads) or, `here`, from `main()` in this process (which the conftest gave
    the passive policy before torch loaded)."""
    out = tmp_path / f"{name}.json"
    args = [*flags, "eval", "--model", "shapes-llava", "--suite", "shapes", "--limit", "24",
            "--out", str(out)]
    if here:
        import torch

        from harness.cli import main

        assert not env  # read when torch loaded: this process's is what it is
        before = torch.get_num_threads()
        try:
            assert main(args) == 0
        finally:
            torch.set_num_threads(before)  # the next test's, as it was
    else:
        e = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
        p = subprocess.run([sys.executable, "-m", "harness.cli", *args], env=e,
                           capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.read_text())
    return {t: [s["prediction"] for s in rows] for t, rows in data["samples"].items()} | {
        "metrics": data["metrics"]}


def test_answers_do_not_depend_on_threads_or_wait_policy(tmp_path):
    """The policy (1 or 2 threads, passive) against torch's default (2 spinning threads):
    every prediction of a VQA and a caption slice is the same string."""
    passive = os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"  # unless the caller chose one
    one = predictions(tmp_path, "one", "--threads", "1", here=passive,
                      env=None if passive else {"OMP_WAIT_POLICY": "PASSIVE"})
    two = predictions(tmp_path, "two", "--threads", "2", env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert one == two
    assert len(one["shapes_vqa"]) == 24 and len(one["shapes_caption"]) == 24
