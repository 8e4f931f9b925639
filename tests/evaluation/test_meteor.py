"""METEOR (harness/evaluation/meteor.py): scorers built and never used start no Java process;
every scorer of a process shares the one the first score starts, with the same answers; it
stops when the process exits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.search.study import alive

pytestmark = [pytest.mark.system,  # Java
              pytest.mark.skipif(shutil.which("java") is None, reason="no `java` here")]

ROOT = Path(__file__).resolve().parents[2]

# in a process of its own: its Java children are its own, none started before
SCRIPT = r'''
import gc, json, os
from harness.evaluation import meteor

def java():
    me = os.getpid()
    kids = open(f"/proc/{me}/task/{me}/children").read().split()
    return [int(p) for p in kids if b"meteor" in open(f"/proc/{p}/cmdline", "rb").read()]

meteor.make_lazy()
meteor.make_lazy()  # once per process, whoever asks again
from pycocoevalcap.meteor.meteor import Meteor
idle = [Meteor() for _ in range(3)]  # as lmms-eval builds them: one per metric
built = java()
del idle
gc.collect()
deleted = java()
gts = {1: ["a red circle above a blue square", "a circle and a square"],
       2: ["two green triangles"]}
res = {1: ["a red circle"], 2: ["two green triangles"]}  # 2: word for word
first = Meteor().compute_score(gts, res)  # the scorer is dropped at once, as lmms-eval does
after_first = java()
second = Meteor().compute_score(gts, res)
print(json.dumps({"built": built, "deleted": deleted, "after_first": after_first,
                  "after_second": java(), "first": first, "second": second}))
'''


def test_scorers_share_one_java_process_started_by_the_first_score():
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["built"] == [] and out["deleted"] == []  # nothing started, nothing to stop
    assert len(out["after_first"]) == 1
    assert out["after_second"] == out["after_first"]  # the same process for every scorer
    assert out["second"] == out["first"]  # and the same answer
    score, per_image = out["first"]
    assert 0 < score < 1 and len(per_image) == 2 and per_image[0] < per_image[1]
    (pid,) = out["after_first"]
    deadline = time.monotonic() + 300  # a hang guard: the exit stopped it, the kernel reaps
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "METEOR outlived its process"
