"""LoRA and SparseLoRA on shapes-llava pruned with wanda 2:4 (short trainings)."""

import copy

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.models.load import load
from harness.pruning import stage as prune_stage
from harness.pruning.masks import nm_valid
from harness.pruning.spec import PruneSpec
from harness.recovery import lora, sparse_lora
from harness.recovery import stage as recovery_stage
from harness.recovery.data import encode, samples
from harness.recovery.spec import DataSpec
from harness.recovery.spec import load as load_spec
from harness.recovery.teacher import Teacher
from harness.recovery.train import RecoveryFailed, train

pytestmark = pytest.mark.integration

PRUNE = PruneSpec(method="wanda", pattern="2:4",
                  calibration={"samples": 16, "batch_size": 16})


def pruned():
    """(adapter pruned 2:4 in vision and language, keep masks, dense weights of the masked)."""
    adapter = load("shapes-llava")
    masks, _, dense = prune_stage.run_keeping_dense(adapter, PRUNE, progress=False)
    return adapter, masks, dense


def spec(method: str, **kw):
    return load_spec({"method": method, "steps": 6, "batch_size": 4, "lr": 5e-3, **kw})


def linears(adapter):
    return adapter.all_linears()


def probe(adapter):
    batch, _ = encode(adapter, samples(DataSpec(), 7, 0, 4))
    with torch.no_grad():
        return adapter.model(**batch).logits


def test_sparselora_merge_keeps_every_pruned_zero_and_the_2_4_pattern():
    adapter, masks, dense = pruned()
    before = {p: lin.weight.detach().clone() for p, lin in linears(adapter).items()}
    rep = recovery_stage.run(adapter, masks, spec("sparselora"), dense, progress=False)
    assert rep["pruned_still_zero"] == 1.0
    after = linears(adapter)
    changed = 0
    for p, mask in masks.items():
        w = after[p].weight
        assert (w[~mask] == 0).all()
        assert nm_valid(w, 2, 4)
        changed += int(not torch.equal(w, before[p]))
    assert changed == len(masks)  # the update reached every pruned Linear


def test_lora_remask_trains_as_lora_and_merges_back_onto_the_mask():
    """Same seed, same training as plain LoRA (its forward is LoRA's): the merged weights
    agree where the mask keeps, and where plain LoRA's merge filled the pruned zeros,
    lora-remask's stay zero."""
    adapter, masks, dense = pruned()
    base = copy.deepcopy(adapter.model)
    merged = {}
    for method in ("lora", "lora-remask"):
        adapter.model = copy.deepcopy(base)
        rep = recovery_stage.run(adapter, masks, spec(method, steps=3), dense, progress=False)
        merged[method] = ({p: lin.weight.detach().clone()
                           for p, lin in linears(adapter).items()}, rep)
    (plain, plain_rep), (remask, remask_rep) = merged["lora"], merged["lora-remask"]
    assert plain_rep["pruned_still_zero"] < 1.0 and remask_rep["pruned_still_zero"] == 1.0
    for p, mask in masks.items():
        assert torch.equal(remask[p][mask], plain[p][mask])
        assert (remask[p][~mask] == 0).all() and nm_valid(remask[p], 2, 4)


def test_a_recovery_depends_on_its_seed_not_on_what_ran_before():
    """The same recovery in one process, the generator drawn from in between (as an earlier
    cell would): the merged weights are the same; another recovery seed gives others."""
    adapter, masks, dense = pruned()
    base, merged = copy.deepcopy(adapter.model), []
    for draws, seed in ((0, 0), (1000, 0), (0, 1)):
        adapter.model = copy.deepcopy(base)
        torch.rand(draws)
        recovery_stage.run(adapter, masks, spec("lora", steps=2, seed=seed), dense,
                           progress=False)
        merged.append({p: lin.weight.detach().clone() for p, lin in linears(adapter).items()})
    assert all(torch.equal(merged[0][p], merged[1][p]) for p in merged[0])
    assert any(not torch.equal(merged[0][p], merged[2][p]) for p in merged[0])


def test_lora_merge_destroys_sparsity():
    adapter, masks, dense = pruned()
    rep = recovery_stage.run(adapter, masks, spec("lora"), dense, progress=False)
    assert rep["sparsity"] < 0.05  # from 0.5: the dense update fills the zeros
    assert rep["pruned_still_zero"] < 0.05


@pytest.mark.parametrize("method", ["lora", "sparselora"])
def test_unmerged_adapters_leave_base_zeros_and_reload_identically(method, tmp_path):
    adapter, masks, _ = pruned()
    s = spec(method, distill=None)
    model = lora.wrap(adapter, s)
    if method == "sparselora":
        assert sparse_lora.set_masks(model, masks) == len(masks)
    train(adapter, model, s, None, progress=False)
    for p, mask in masks.items():  # base layers under the adapters: zeros untouched
        base = model.get_submodule(f"base_model.model.{p}").get_base_layer()
        assert (base.weight[~mask] == 0).all()
    out = probe(adapter)
    model.save_pretrained(str(tmp_path))

    fresh, fresh_masks, _ = pruned()
    reloaded = sparse_lora.load_adapter(fresh.model, str(tmp_path), sparse=method == "sparselora")
    if method == "sparselora":
        sparse_lora.set_masks(reloaded, fresh_masks)
    fresh.model = reloaded
    assert torch.equal(probe(fresh), out)


def test_teacher_is_the_dense_model_and_leaves_the_zeros():
    dense_adapter = load("shapes-llava")
    want = probe(dense_adapter)
    adapter, masks, dense = pruned()
    lins = linears(adapter)
    teacher = Teacher(lins, masks, dense)
    model = lora.wrap(adapter, spec("sparselora"))
    with teacher.active(model):
        got = probe(adapter)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(probe(adapter), want, atol=1e-2)  # the student is pruned
    for p, mask in masks.items():
        assert (lins[p].weight[~mask] == 0).all()


@pytest.mark.parametrize("seed", [0, 1], ids=["collapses-to-uniform", "grows-tenfold"])
def test_divergence_is_a_recorded_failure_not_a_crash(seed):
    """lr 1e8: at seed 0 the loss jumps from 0.5 to ln(vocabulary) (every answer equally
    likely) and stays; at seed 1 it grows more than tenfold. Both are divergence."""
    adapter, masks, dense = pruned()
    with pytest.raises(RecoveryFailed, match="step"):
        recovery_stage.run(adapter, masks, spec("lora", lr=1e8, steps=30, warmup=0, seed=seed),
                           dense, progress=False)


@pytest.mark.parametrize("data, field", [
    ({"roles": {"language": {"rank": 0}}}, "roles.language.rank"),
    ({"roles": {"textual": {"rank": 4}}}, "roles.textual"),
    ({"distill": {"weight": 1.5}}, "distill.weight"),
    ({"distill": {"weight": -0.1}}, "distill.weight"),
    ({"method": "qlora"}, "method"),
    ({"steps": 0}, "steps"),
])
def test_bad_recovery_specs_fail_at_load_in_one_line(data, field):
    with pytest.raises(UserError) as e:
        load_spec(data, "grid.yaml")
    msg = str(e.value)
    assert msg.startswith("grid.yaml: ") and f"'{field}'" in msg and "\n" not in msg


def test_training_data_from_jsonl_and_from_a_datasets_folder(tmp_path):
    import json

    import datasets
    from PIL import Image

    from harness.world.scene import render
    from harness.world.splits import vqa_sample

    rows = []
    for i in range(3):
        s = vqa_sample("train", i)
        Image.fromarray(render(s.scene)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "prompt": s.qa.question, "answer": s.qa.answer})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_jsonl = samples(DataSpec(source=str(tmp_path / "data.jsonl")), 0, 0, 3)
    ds = datasets.Dataset.from_list([{**r, "image": Image.open(tmp_path / r["image"])}
                                     for r in rows])
    ds.save_to_disk(str(tmp_path / "ds"))
    from_folder = samples(DataSpec(source=str(tmp_path / "ds")), 0, 0, 3)
    for a, b in zip(from_jsonl, from_folder, strict=True):
        assert a[1:] == b[1:] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert {x[2] for x in from_jsonl} == {r["answer"] for r in rows}
    adapter = load("shapes-llava")
    batch, labels = encode(adapter, from_folder)
    assert (labels != -100).sum() == 3 * 2  # one answer word + end of sequence each


def test_recovery_trains_an_encoder_decoder_language_model():
    """BLIP-2 with T5: the answer is the decoder's target, so training must pass it."""
    from harness.models.load import adapter_for
    from harness.testing.tiny import tiny_blip2

    adapter = adapter_for(*tiny_blip2("t5"))
    masks, _, dense = prune_stage.run_keeping_dense(adapter, PRUNE, progress=False)
    rep = recovery_stage.run(adapter, masks, spec("sparselora", steps=3), dense, progress=False)
    assert rep["pruned_still_zero"] == 1.0
    assert all(np.isfinite(rep["loss"]))
