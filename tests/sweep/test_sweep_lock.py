"""One sweep of a grid at a time on a results folder: a second one refuses at once in one
line naming the first; plan and dry runs do not take the lock; a killed sweep's lock file
does not block the next one."""

from __future__ import annotations

import signal

import pytest

from harness.cli import main
from tests.sweep.runs import cell_runs, metrics_by_hash
from tests.sweep.test_signals import Sweep

pytestmark = pytest.mark.system


def test_second_sweep_of_a_grid_refuses_and_a_killed_one_does_not_block(reference, results,
                                                                         capsys):
    first = Sweep(results)
    try:
        first.wait_for_line("smoke: 4 cells")  # it holds the grid's lock and has started
        capsys.readouterr()
        assert main(["sweep", "smoke", "--no-report"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vlmprune: error: "), err
        assert f"pid {first.proc.pid}" in err and "smoke" in err and str(results) in err
        # reading is not sweeping: plan and dry runs neither wait nor refuse
        assert main(["plan", "smoke"]) == 0
        assert main(["sweep", "smoke", "--dry-run"]) == 0
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.cleanup()
    assert (results / "locks").is_dir()  # the killed sweep's lock file is still there ...
    assert main(["sweep", "smoke", "--no-report"]) == 0  # ... and does not block
    _, finished = cell_runs(status="FINISHED")
    assert len(finished) == len(reference[0])  # one FINISHED run per cell: none twice
    assert metrics_by_hash(finished) == reference[0]
