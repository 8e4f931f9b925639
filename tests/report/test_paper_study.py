"""The paper study's own code (studies/paper/): the summary and its paired comparisons, on the
paper's grids filled with made-up results that carry per-document answers (harness.testing.demo),
read back through the same MLflow store a real `make paper` fills."""

from __future__ import annotations

import json

import pytest

from harness.testing import demo
from studies.paper import paired, summary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    mp = pytest.MonkeyPatch()
    mp.setenv("VLMPRUNE_RESULTS", str(root / "results"))
    mp.setenv("VLMPRUNE_REPORTS", str(root / "reports"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    for g in summary.GRIDS:
        demo.fill(str(summary.PAPER / f"{g}.yaml"), docs=200)
    assert summary.main(["--out", str(root / "out")]) == 0
    yield root / "out"
    mp.undo()


def test_every_comparison_is_a_row_with_both_families_corrected(written):
    table = (written / "paired.md").read_text()
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and "B vs A" not in line and "---" not in line]
    assert len(rows) == len(paired.COMPARISONS)
    assert [r.split(" | ")[1] for r in rows] == [c[1] for c in paired.COMPARISONS]
    # made up: sparselora recovers more than lora-remask at every budget; at 80% by about
    # 20 points on 200 documents, significant per seed and seeds averaged after Holm
    row = next(r for r in rows if "LoRA + mask (80%, 100 steps)" in r)
    cells = row.strip("| ").split(" | ")[2:]
    assert all(c.startswith("**+") for c in cells), row
    assert "## Paired comparisons" in (written / "findings.md").read_text()
    assert table.split("\n\n", 1)[1] in (written / "findings.md").read_text()


def test_recovery_is_read_per_budget(written):
    f = json.loads((written / "findings.json").read_text())
    at = f["recovery"]["80%"]
    assert list(at["steps"]) == ["10", "30", "100"]
    assert at["none"]["overall"] == pytest.approx(0.8)
    assert at["steps"]["100"]["lora"]["overall"] == 0.0  # the merge fills the pruned zeros
    assert at["steps"]["100"]["lora-remask"]["overall"] == pytest.approx(0.8)
    means = [at["steps"][n]["sparselora"]["vqa"]["mean"] for n in ("10", "30", "100")]
    assert means == sorted(means)  # made up: more steps recover more
    assert set(f["allocation"]["sparsegpt 70%"]) == {"equal", "owl", "ecoflap"}
    assert set(f["sparsegpt_probe"]["2:4"]) == {"wanda", "sparsegpt-mask", "sparsegpt"}
    md = (written / "findings.md").read_text()
    assert "| 80% | 0 (not recovered) |" in md and "| 80% | 100 |" in md
