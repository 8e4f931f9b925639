"""`model.offload`: a model streamed block by block (read from its files, or moved from CPU
memory) prunes to the same masks and weights, bit for bit, as the model pruned whole in
memory, for every method, pipeline and allocation, with one calibration batch and with
several; the saved folder is an ordinary one; one block is resident at a time."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.cli import main
from harness.errors import UserError
from harness.models import offload
from harness.models.load import ModelSpec, load
from harness.models.locate import EMBEDDED
from harness.pruning import persist, stage
from harness.pruning.spec import PruneSpec
from harness.sweep import cache, stages
from harness.sweep.cell import CellSpec, prune_key

CAL = {"samples": 8, "batch_size": 4}  # two batches; batch_size 8: one (a whole forward)
CASES = {
    "magnitude": {"method": "magnitude", "sparsity": 0.5},
    "wanda": {"method": "wanda", "sparsity": 0.5, "calibration": CAL},
    "wanda, one batch": {"method": "wanda", "sparsity": 0.5,
                         "calibration": CAL | {"batch_size": 8}},
    "sparsegpt": {"method": "sparsegpt", "sparsity": 0.5, "calibration": CAL},
    "sparsegpt 2:4, one batch": {"method": "sparsegpt", "pattern": "2:4",
                                 "calibration": CAL | {"batch_size": 8}},
    "dsnot, blockwise": {"method": "dsnot", "sparsity": 0.6, "propagation": "blockwise",
                         "calibration": CAL},
    "wanda, owl, dense": {"method": "wanda", "sparsity": 0.6, "distribution": "owl",
                          "propagation": "dense", "calibration": CAL},
    "wanda, ecoflap": {"method": "wanda", "sparsity": 0.6, "distribution": "ecoflap",
                       "ecoflap": {"estimator": "block", "samples": 4}, "calibration": CAL},
}


def _pruned(spec: dict, offload: str, tmp) -> tuple[dict, dict, Any]:
    """(state dict of the saved folder reloaded whole, masks, the residency)."""
    out = tmp / f"out-{offload}"
    a = load(ModelSpec(name="shapes-llava", offload=offload), work=tmp / f"work-{offload}")
    masks, _ = stage.run(a, PruneSpec.model_validate(spec), progress=False)
    residency = a.residency
    persist.save(a, masks, out)
    return load(str(out)).model.state_dict(), persist.load_masks(out), residency


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_offloaded_pruning_is_bit_identical(case, tmp_path):
    spec = CASES[case]
    whole, masks, _ = _pruned(spec, "none", tmp_path)
    streamed, streamed_masks, residency = _pruned(spec, "disk", tmp_path)
    assert streamed.keys() == whole.keys()
    assert [k for k in whole if not torch.equal(whole[k], streamed[k])] == []
    assert streamed_masks.keys() == masks.keys() and len(masks) > 0
    assert all(torch.equal(masks[k], streamed_masks[k]) for k in masks)
    # one block (and what runs beside it) resident at a time, never the model, beside what
    # a capture keeps within its budget
    units = [sum(p.meta.numel() * 4 for p in u.params) for u in residency.units]
    assert residency.peak <= 2 * max(units) + residency.keep
    assert 2 * max(units) < sum(units) / 3 and residency.keep <= offload.KEEP_MAX


@pytest.mark.integration
@pytest.mark.parametrize("keep", [0, 2**30])
def test_a_capture_keeps_units_within_its_budget(keep, tmp_path, monkeypatch):
    """The language blocks' capture runs the vision tower once per batch: kept, each unit
    before the first language block is read once; without a budget, once per batch."""
    from harness.pruning import calibration
    from harness.pruning.pipelines.common import capture
    from harness.pruning.spec import CalibrationSpec

    reads: list[str] = []
    real = offload.Streamed._read

    def counted(self, params, source=False):
        reads.extend(p.key for p in params)
        return real(self, params, source)

    monkeypatch.setattr(offload.Streamed, "_read", counted)
    a = load(ModelSpec(name="shapes-llava", offload="disk"), work=tmp_path / "work")
    batches = calibration.batches(CalibrationSpec.model_validate(CAL), a)
    assert len(batches) == 2
    a.residency.keep = keep
    capture(a, a.blocks("language")[0].module, batches)
    vision = [k for k in reads if "vision_tower" in k]
    assert vision and a.residency._resident == 0  # all let go at the end
    assert len(vision) == len(set(vision)) * (1 if keep else 2)


@pytest.mark.integration
@pytest.mark.parametrize("case", ["wanda", "dsnot, blockwise"])
def test_spilled_activations_prune_bit_identically_and_leave_no_file(case, tmp_path,
                                                                    monkeypatch):
    """With spill_activations 0 every calibration batch's block inputs go to disk and come
    back: the same masks and weights, and no file left once the prune is done."""
    from harness.pruning.pipelines import activations

    spilled: list[int] = []
    real = activations.Activations.append

    def counted(self, item):
        real(self, item)
        spilled.append(len([x for x in self.items if not isinstance(x, tuple)]))

    monkeypatch.setattr(activations.Activations, "append", counted)
    spec = PruneSpec.model_validate(CASES[case])
    whole = load("shapes-llava")
    masks, _ = stage.run(whole, spec, progress=False)
    a = load(ModelSpec(name="shapes-llava", offload="disk", spill_activations=0),
             work=tmp_path / "work")
    streamed_masks, rep = stage.run(a, spec, progress=False)
    assert all(torch.equal(masks[k], streamed_masks[k]) for k in masks)
    assert max(spilled) == 2  # both batches' inputs were on disk
    assert rep["memory"]["activations"] < _activations(spec)
    persist.save(a, streamed_masks, tmp_path / "out")
    want, have = whole.model.state_dict(), load(str(tmp_path / "out")).model.state_dict()
    assert [k for k in want if not torch.equal(want[k], have[k])] == []
    import gc
    gc.collect()
    assert not list((tmp_path / "work" / "activations").glob("*"))


def _activations(spec: PruneSpec) -> int:
    a = load(ModelSpec(name="shapes-llava", offload="disk"))
    return stage.run(a, spec, progress=False)[1]["memory"]["activations"]


@pytest.mark.unit
def test_spilling_activations_of_an_in_memory_model_is_refused():
    with pytest.raises(ValueError, match="spill_activations needs offload"):
        ModelSpec(name="shapes-llava", spill_activations=1)


@pytest.mark.integration
def test_cpu_offload_is_bit_identical(tmp_path):
    spec = CASES["sparsegpt"]
    whole, masks, _ = _pruned(spec, "none", tmp_path)
    moved, moved_masks, _ = _pruned(spec, "cpu", tmp_path)
    assert [k for k in whole if not torch.equal(whole[k], moved[k])] == []
    assert all(torch.equal(masks[k], moved_masks[k]) for k in masks)


@pytest.mark.unit
def test_offload_is_a_memory_setting_not_a_key():
    base = {"model": {"name": "shapes-llava"}, "prune": CASES["wanda"]}
    disk = {**base, "model": {"name": "shapes-llava", "offload": "disk"}}
    assert prune_key(CellSpec.model_validate(base)) == prune_key(CellSpec.model_validate(disk))


@pytest.mark.integration
def test_a_folder_missing_a_tensor_is_one_line(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED["shapes-llava"], folder)
    tensors = load_file(str(folder / "model.safetensors"))
    gone = next(k for k in tensors if k.endswith("q_proj.weight"))
    save_file({k: v for k, v in tensors.items() if k != gone}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(UserError) as e:
        load(ModelSpec(name=str(folder), offload="disk"), work=tmp_path / "work")
    assert "model.offload: no tensor" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.integration
def test_a_sweep_prunes_offloaded_into_the_same_stage(results):
    """The prune stage of a cell with model.offload is the one an in-memory prune writes
    (same key, masks and weights), and the stages after it get the model whole."""
    cell = CellSpec.model_validate({"model": {"name": "shapes-llava", "offload": "disk"},
                                    "prune": CASES["sparsegpt"]})
    got = stages.pruned(cell)
    root = cache.open("prune", prune_key(cell))
    assert root is not None and not (root / "offload").exists()
    assert got.adapter.residency is None  # whole, in memory
    ref = load("shapes-llava")
    masks, _ = stage.run(ref, PruneSpec.model_validate(CASES["sparsegpt"]), progress=False)
    want, have = ref.model.state_dict(), got.adapter.model.state_dict()
    assert [k for k in want if not torch.equal(want[k], have[k])] == []
    assert all(torch.equal(masks[k], got.masks[k]) for k in masks)


@pytest.mark.integration
def test_a_sweep_refuses_in_one_line_what_it_can_prune_but_not_load_whole(results,
                                                                          monkeypatch):
    """Memory for a block at a time but not for the whole model: the prune stage is written
    (a larger machine resumes from it), and recovery and evaluation are refused in one
    line giving the weights' size and the memory available."""
    cell = CellSpec.model_validate({"model": {"name": "shapes-llava", "offload": "disk"},
                                    "prune": CASES["sparsegpt"]})
    weights = offload.weight_bytes(load(cell.model, weights=False).model)
    monkeypatch.setattr(offload, "available_memory", lambda: weights - 1)  # a byte short
    with pytest.raises(UserError) as e:
        stages.pruned(cell)
    assert str(e.value).count("\n") == 0 and "of weights" in str(e.value)
    assert f"{weights / 2**30:.1f} GiB of weights, {(weights - 1) / 2**30:.1f} GiB" \
        in str(e.value)
    assert cache.open("prune", prune_key(cell)) is not None


SPEC = "method: sparsegpt\nsparsity: 0.5\ncalibration: {samples: 8, batch_size: 4}\n"


@pytest.mark.integration
def test_prune_refuses_in_one_line_when_the_expected_peak_cannot_fit(tmp_path, monkeypatch,
                                                                     capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    monkeypatch.setattr(offload, "available_memory", lambda: 2**20)  # a 1 MiB machine
    out = tmp_path / "pruned"
    assert main(["prune", str(spec), "--offload", "disk", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.offload: expected peak" in err and "more than the 0.00 GiB" in err
    assert err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [spec]  # nothing half-written


@pytest.mark.integration
def test_plan_prints_each_offloaded_prune_stage_s_expected_peak(results, tmp_path, capsys):
    grid = tmp_path / "offload.yaml"
    grid.write_text("name: offload\ndescription: two offloaded prunes\nbase:\n"
                    "  model: {name: shapes-llava, offload: disk}\n"
                    f"  prune: {{{SPEC.strip().replace(chr(10), ', ')}}}\n"
                    "  eval: {suite: quick, limit: 20}\n"
                    "axes:\n  - prune.sparsity: [0.5, 0.6]\n")
    assert main(["plan", str(grid)]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if "offload disk, sparsegpt): expected peak" in x]
    assert len(lines) == 2 and all("GiB available" in x for x in lines)
