"""What a sweep shows when its stdout is not a terminal: a plain line per cell, no bars, no
library lines; the libraries' output is in the log file it names."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


def test_piped_sweep_prints_one_line_per_cell_and_logs_the_rest(tmp_path):
    env = {**os.environ, "VLMPRUNE_RESULTS": str(tmp_path / "results"),
           "VLMPRUNE_REPORTS": str(tmp_path / "reports")}
    env.pop("TQDM_DISABLE", None)
    p = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "smoke"], env=env,
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    cells = [line for line in out.splitlines() if re.match(r"\[\d/4\] ", line)]
    assert len(cells) == 4 and all("vqa exact_match 0." in c for c in cells)
    assert "\r" not in out + p.stderr and "%|" not in out + p.stderr  # no bar fragments
    assert "INFO" not in out + p.stderr and "Postprocessing" not in out + p.stderr
    assert p.stderr.strip() == ""
    (log,) = re.findall(r"library output: (\S+)", out)
    assert "Postprocessing" in Path(log).read_text()  # lmms-eval's bars went here
