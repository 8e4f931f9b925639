"""Stage keys hold what determines a stage's output and nothing else: normalized specs (a
field that cannot matter is canonical, so it neither splits a stage nor shows in a label),
and the content of the files a cell names."""

import json

import pytest
import yaml

from harness.cli import main
from harness.sweep import grid
from harness.sweep.cell import prune_key
from harness.world.splits import materialize
from tests.sweep.runs import cell_runs


def expand(tmp_path, base: dict, axes: list[dict]):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"name": "g", "base": base, "axes": axes}))
    return grid.expand(str(p))[1]


@pytest.mark.parametrize("prune, axis, n_cells", [
    ({"pattern": "2:4"}, {"prune.sparsity": [0.3, 0.6]}, 1),           # N:M fixes sparsity
    ({"pattern": "2:4"}, {"prune.scope": ["row", "layer"]}, 1),        # ... and ignores scope
    ({"pattern": "unstructured"}, {"prune.sparsity": [0.3, 0.6]}, 2),
    ({"method": "wanda"}, {"prune.dsnot.cycles": [10, 20]}, 1),        # another method's options
    ({"method": "dsnot"}, {"prune.dsnot.cycles": [10, 20]}, 2),
    ({"method": "magnitude"}, {"prune.calibration.samples": [16, 32]}, 1),  # no calibration
    ({"method": "magnitude"}, {"prune.propagation": ["sequential", "dense"]}, 1),
    ({"method": "wanda"}, {"prune.calibration.samples": [16, 32]}, 2),
    ({"method": "wanda"}, {"prune.seed": [0, 1]}, 1),                  # only random draws
    ({"method": "random"}, {"prune.seed": [0, 1]}, 2),
    ({"sparsity": {"language": 0.5}}, {"prune.distribution": ["equal", "vision_only"]}, 1),
    ({"distribution": "equal"}, {"prune.vision_share": [0.2, 0.4]}, 1),
])
@pytest.mark.unit
def test_a_field_that_cannot_matter_makes_one_stage_and_leaves_the_label(tmp_path, prune, axis,
                                                                       n_cells):
    cells = expand(tmp_path, {"prune": prune, "recover": {"method": "none"}}, [axis])
    assert len(cells) == n_cells
    assert len({prune_key(c.spec) for c in cells}) == n_cells
    (key,) = axis
    assert all((key in c.label) == (n_cells > 1) for c in cells)


@pytest.mark.unit
def test_nm_sparsity_is_the_patterns_own(tmp_path):
    cells = expand(tmp_path, {"prune": {"pattern": "2:4"}},
                   [{"prune.sparsity": [0.3, 0.6]}, {"prune.pattern": ["2:4", "unstructured"]}])
    assert sorted(c.label for c in cells) == [
        "prune.pattern=2:4", "prune.sparsity=0.3, prune.pattern=unstructured",
        "prune.sparsity=0.6, prune.pattern=unstructured"]
    nm = next(c for c in cells if c.label == "prune.pattern=2:4")
    assert nm.spec.prune.sparsity == 0.5  # what MLflow records is what was pruned


@pytest.mark.parametrize("recover, axis, n_cells", [
    ({"method": "none"}, {"recover.steps": [1, 2]}, 1),                # nothing trained
    ({"method": "sparselora"}, {"recover.steps": [1, 2]}, 2),
    ({"method": "lora"}, {"recover.distill": [None, {"weight": 0.0}]}, 1),
])
@pytest.mark.unit
def test_recovery_fields_that_cannot_matter(tmp_path, recover, axis, n_cells):
    assert len(expand(tmp_path, {"recover": recover}, [axis])) == n_cells


LAYOUT = """vision: [model.vision_tower.encoder.layers]
bridge: [{bridge}]
language: [model.language_model.layers]
exclude: [{exclude}]
"""


def calibration_file(tmp_path, n: int = 8):
    data = materialize("train", tmp_path / "cal", n, 0)
    rows = [json.loads(line) for line in (data / "vqa.jsonl").read_text().splitlines()]
    src = data / "cal.jsonl"
    src.write_text("".join(json.dumps({"image": r["image"],
                                       "text": f"<image> question : {r['question']} "
                                               f"answer : {r['answer']}"}) + "\n"
                           for r in rows))
    return src


@pytest.mark.integration
def test_editing_a_layout_or_a_calibration_file_recomputes_what_reads_it_only(tmp_path, results):
    layout = tmp_path / "layout.yaml"
    # the projector's second Linear left out by name (every Linear is in a role or excluded)
    layout.write_text(LAYOUT.format(bridge="model.multi_modal_projector.linear_1",
                                    exclude="lm_head, model.multi_modal_projector.linear_2"))
    cal = calibration_file(tmp_path)
    g = tmp_path / "inputs.yaml"
    g.write_text(yaml.safe_dump({
        "name": "inputs",
        "base": {"model": {"name": "shapes-llava", "adapter": "generic", "layout": str(layout)},
                 "prune": {"method": "wanda", "calibration": {"samples": 8, "batch_size": 8},
                           "sparsity": {"vision": 0.5, "bridge": 0.5, "language": 0.5}},
                 "recover": {"method": "none"}, "eval": {"suite": "quick", "limit": 10}},
        "axes": [{"prune.calibration.source": ["shapes", str(cal)]}]}))

    def sweep():
        assert main(["sweep", str(g)]) == 0
        _, runs = cell_runs("inputs", "FINISHED")
        prunes = {p.name for p in (results / "cache" / "prune").iterdir()}
        return runs, prunes

    runs, prunes = sweep()
    assert len(runs) == 2 and len(prunes) == 2
    nonzero = {r.data.params["prune.calibration.source"]: r.data.metrics["sparsity/nonzero"]
               for r in runs}
    # the layout now names the projector's second Linear too: both cells change
    layout.write_text(LAYOUT.format(bridge="model.multi_modal_projector.linear_1, "
                                           "model.multi_modal_projector.linear_2",
                                    exclude="lm_head"))
    runs, prunes2 = sweep()
    assert len(runs) == 4 and len(prunes2 - prunes) == 2
    new = [r for r in runs if r.data.metrics["sparsity/nonzero"] not in nonzero.values()]
    assert len(new) == 2  # counted over the new roles' weights: not the stale numbers
    # one calibration text edited: only the cell calibrated on that file is pruned again
    lines = cal.read_text().splitlines()
    lines[0] = lines[0].replace('"text": "', '"text": "please ')
    cal.write_text("\n".join(lines) + "\n")
    runs, prunes3 = sweep()
    assert len(runs) == 5 and len(prunes3 - prunes2) == 1
    (latest,) = [r for r in runs if r.info.start_time == max(x.info.start_time for x in runs)]
    assert latest.data.params["prune.calibration.source"] == str(cal)


@pytest.mark.parametrize("propagation, batch_size, marked", [
    ("sequential", 128, False),   # one batch: the path it always ran, the key it always had
    ("sequential", 32, True),     # several: block-wise before the pipelines were named
    ("blockwise", 32, False),     # a new name, so a new key anyway
])
@pytest.mark.unit
def test_several_sequential_batches_get_a_key_of_their_own(tmp_path, monkeypatch, propagation,
                                                            batch_size, marked):
    """`sequential` with several batches pruned block-wise before `blockwise` had a name and
    now prunes Linear by Linear: a stage stored then must not be served for it, while every
    one-batch key (all shipped grids) stays what it was."""
    from harness.sweep import cell as cell_module

    seen: list[dict] = []
    real = cell_module.digest

    def digest(d: dict) -> str:
        seen.append(d)
        return real(d)

    monkeypatch.setattr(cell_module, "digest", digest)
    cells = expand(tmp_path, {"prune": {"method": "wanda", "propagation": propagation,
                                        "calibration": {"batch_size": batch_size}},
                              "recover": {"method": "none"}}, [{"prune.sparsity": [0.5]}])
    seen.clear()
    prune_key(cells[0].spec)
    assert ("pipeline" in seen[-1]["inputs"]) == marked
