"""Damaged stages are never served: each is set aside and recomputed, and the sweep ends with
the metrics of an undamaged run. The reference is the smoke grid swept once (conftest)."""

import logging
import shutil

import pytest

from harness.cli import main
from harness.sweep import grid
from harness.sweep.cell import prune_key, recover_key
from tests.sweep.runs import cell_runs, metrics_by_hash
from tests.test_integrity import damage

pytestmark = pytest.mark.integration


def smoke_stages() -> dict[str, tuple[str, str]]:
    """Short names for the smoke grid's stages: P_N (2:4 prune), P_U (unstructured prune),
    R_S (sparselora recovery), E_U, E_N, E_S, E_D (the cells' eval stages, D = dense)."""
    _, cells = grid.expand("smoke")
    by = {("U" if c.spec.prune and c.spec.prune.pattern == "unstructured" else
           "S" if c.spec.recover.method == "sparselora" else "N" if c.spec.prune else "D"): c
          for c in cells}
    return {"P_N": ("prune", prune_key(by["N"].spec)), "P_U": ("prune", prune_key(by["U"].spec)),
            "R_S": ("recover", recover_key(by["S"].spec)),
            **{f"E_{k}": ("eval", c.hash) for k, c in by.items()}}


# Seven damages per sweep: every stage of the smoke grid, each file kind, each way.
DAMAGE = {
    "same size": {"P_N": ("masks", "fill"), "P_U": ("weights", "flip"),
                  "R_S": ("weights", "flip"), "E_U": ("result.json", "digit"),
                  "E_N": ("samples.json", "flip"), "E_S": ("result.json", "flip"),
                  "E_D": ("samples.json", "digit")},
    "truncated": {"P_N": ("report.json", "truncate"), "P_U": ("masks", "truncate"),
                  "R_S": ("report.json", "truncate"), "E_U": ("samples.json", "truncate"),
                  "E_N": ("result.json", "truncate"), "E_S": ("samples.json", "truncate"),
                  "E_D": ("result.json", "truncate")},
    "deleted": {"P_N": ("weights", "delete"), "P_U": ("report.json", "delete"),
                "R_S": ("weights", "delete"), "E_U": ("result.json", "delete"),
                "E_N": ("samples.json", "delete"), "E_S": ("result.json", "delete"),
                "E_D": ("samples.json", "delete")},
}


def copy_reference(reference, results):
    shutil.copytree(reference[3], results)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_each_damaged_stage_is_recomputed_and_the_metrics_are_an_undamaged_runs(
        reference, results, caplog, kind):
    copy_reference(reference, results)
    stages = smoke_stages()
    for name, (file, how) in DAMAGE[kind].items():
        stage, key = stages[name]
        damage(results / "cache" / stage / key / file, how)
    (results / "mlflow.db").unlink()  # a fresh store: every cell re-reads its stages
    with caplog.at_level(logging.WARNING, logger="harness.sweep.cache"):
        assert main(["sweep", "smoke"]) == 0
    warned = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warned) == 7
    for name, (file, _) in DAMAGE[kind].items():
        stage, key = stages[name]
        assert any(f"{stage} stage {key}" in w and file in w for w in warned), name
    _, runs = cell_runs(status="FINISHED")
    assert metrics_by_hash(runs) == reference[0]  # nothing reported from damaged data
    assert main(["cache", "verify"]) == 0  # recomputed stages are whole
    assert len(list((results / "cache" / "damaged").glob("*/*"))) == 7


def test_damaged_result_of_a_finished_cell_does_not_stop_a_sweep(reference, results, capsys):
    copy_reference(reference, results)
    stages = smoke_stages()
    damage(results / "cache" / "eval" / stages["E_U"][1] / "result.json", "truncate")
    assert main(["sweep", "smoke"]) == 0  # the summary reads MLflow, the store of record
    out = capsys.readouterr().out
    assert "4 already finished, 0 to run" in out and "0.900" in out


def test_a_fresh_store_relogs_cached_cells_without_recomputing(reference, results):
    copy_reference(reference, results)
    done = {p: p.stat().st_mtime_ns for p in (results / "cache").glob("*/*/DONE")}
    (results / "mlflow.db").unlink()
    shutil.rmtree(results / "mlartifacts")
    assert main(["sweep", "smoke"]) == 0
    _, runs = cell_runs(status="FINISHED")
    # stage times too: they are the cached ones, so nothing was computed again
    assert metrics_by_hash(runs, times=True) == reference[4]
    assert {p: p.stat().st_mtime_ns for p in (results / "cache").glob("*/*/DONE")} == done
