"""The committed reference report of the paper study (reports/paper/, written by `make paper`)
still matches what the code computes, on a cheap slice: the dense row exactly, and one seeded
cell of the paper's figure within the committed spread. A change that moves the numbers fails
here, and the reference is rebuilt with `make paper` instead of rotting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.sweep import grid
from harness.sweep.stages import evaluated
from studies.paper.summary import CIDER, PAPER, VQA

REFERENCE = Path(__file__).resolve().parents[2] / "reports" / "paper" / "findings.json"

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not REFERENCE.is_file(),
                                 reason="no reference report committed (make paper)")]


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def cells():
    _, found = grid.expand(str(PAPER / "modality_ratio.yaml"))
    return found


def test_dense_row_is_reproduced_exactly(committed, cells):
    dense = next(c for c in cells if c.spec.prune is None)
    metrics = evaluated(dense.spec).metrics
    assert metrics[VQA] == pytest.approx(committed["dense"]["vqa"]["mean"], abs=1e-12)
    assert metrics[CIDER] == pytest.approx(committed["dense"]["cider"]["mean"], abs=1e-9)


def test_a_seeded_cell_lies_within_the_committed_spread(committed, cells):
    """50:50 at seed 1. With n seeds, each seed's value lies within (n-1)/sqrt(n) sample
    standard deviations of their mean (1.155 for n = 3): a bound, not a tolerance."""
    row = next(r for r in committed["modality_ratio"]["100%"] if r["split"] == "50:50")
    n = row["vqa"]["n"]
    assert n >= 3
    cell = next(c for c in cells if c.spec.prune is not None and c.spec.seed == 1
                and c.spec.prune.sparsity == {"vision": 0.5, "language": 0.5})
    value = evaluated(cell.spec).metrics[VQA]
    bound = (n - 1) / math.sqrt(n) * row["vqa"]["std"]
    assert abs(value - row["vqa"]["mean"]) <= bound + 1e-9
