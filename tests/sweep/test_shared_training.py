"""A recovery method that trains exactly as another (its registry entry's `shares`:
lora-remask as lora) shares that method's training: asked for first, it trains the other's
stage and derives its own from it, bit for bit what its own training and merge give."""

import json

import pytest
import torch

from harness.recovery import stage as recovery_stage
from harness.sweep import cache, stages
from harness.sweep.cell import CellSpec, recover_key

pytestmark = pytest.mark.integration


def cell(method: str, distill: bool) -> CellSpec:
    return CellSpec.model_validate({
        "model": {"name": "shapes-llava"},
        "prune": {"method": "wanda", "pattern": "2:4",
                  "calibration": {"samples": 16, "batch_size": 16}},
        "recover": {"method": method, "steps": 3, "batch_size": 4, "lr": 5e-3,
                    **({} if distill else {"distill": None})}})


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)  # signed zeros and all


NEGATIVE_ZERO = torch.iinfo(torch.int32).min


@pytest.mark.parametrize("distill", [True, False], ids=["teacher", "no-teacher"])
def test_lora_remask_is_lora_s_training_remasked_bit_for_bit(results, distill):
    remask, plain = cell("lora-remask", distill), cell("lora", distill)
    assert not cache.done("recover", recover_key(plain))
    got = stages.recovered(remask)
    # one training, stored as lora's stage; lora-remask's own stage derived from it
    assert cache.done("recover", recover_key(plain))
    assert cache.done("recover", recover_key(remask))
    lora_report = json.loads((cache.path("recover", recover_key(plain)) / "report.json")
                             .read_text())
    assert got.recover["trained_as"] == "lora" and got.recover["method"] == "lora-remask"
    assert got.recover["loss"] == lora_report["loss"]
    assert got.recover["pruned_still_zero"] == 1.0 > lora_report["pruned_still_zero"]

    # lora-remask trained and merged by itself, on the same pruned model
    pm = stages.pruned(remask)
    # the pruned weights hold zeros of both signs (a mask multiplies): the merge must not
    # depend on them
    assert any((bits(pm.adapter.all_linears()[p].weight) == NEGATIVE_ZERO).any() for p in pm.masks)
    own = recovery_stage.run(pm.adapter, pm.masks, remask.recover, pm.dense, progress=False)
    assert own["loss"] == got.recover["loss"]
    mine, derived = pm.adapter.all_linears(), got.adapter.all_linears()
    for p, lin in mine.items():
        assert torch.equal(bits(lin.weight), bits(derived[p].weight)), p

    # and served from its stage afterwards, as stored
    again = stages.recovered(remask).adapter.all_linears()
    assert all(torch.equal(bits(again[p].weight), bits(derived[p].weight)) for p in derived)
