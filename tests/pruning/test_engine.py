import numpy as np
import pytest
import torch

from harness.models.load import adapter_for
from harness.pruning import calibration, engine, persist, report
from harness.pruning.pipelines import common
from harness.pruning.spec import CalibrationSpec, PruneSpec, targets
from harness.testing.tiny import tiny_blip2, tiny_instructblip, tiny_llava

pytestmark = pytest.mark.unit

CAL = CalibrationSpec(samples=8, batch_size=4)  # two batches: block by block
ONE = CalibrationSpec(samples=8, batch_size=8)  # one batch: sequential prunes in one forward


def llava(seed=0, d=32):
    return adapter_for(*tiny_llava(d=d, layers=3, seed=seed))


@pytest.mark.parametrize("build", [tiny_llava, lambda: tiny_blip2("t5"),
                                   lambda: tiny_instructblip("llama"), lambda: tiny_blip2("opt")],
                         ids=["llava", "blip2-t5", "instructblip-llama", "blip2-opt"])
def test_block_by_block_propagation_reproduces_the_model(build):
    """Running blocks one at a time from captured inputs gives what the model feeds the last
    block (checks hidden states and carried values such as T5's position biases)."""
    a = adapter_for(*build())
    batches = calibration.batches(CAL, a)
    for role, blocks, carry in common.segments(a, ("vision", "bridge", "language")):
        if len(blocks) < 2:
            continue
        inputs = common.capture(a, blocks[0].module, batches)
        for b in blocks[:-1]:
            inputs = common.run_block(b, inputs, carry)
        expect = common.capture(a, blocks[-1].module, batches)
        for (x, _), (y, _) in zip(inputs, expect, strict=True):
            assert torch.allclose(x[0], y[0], atol=1e-5), (role, blocks[0].name)


@pytest.mark.parametrize("d", [32, 64])
def test_budget_is_rounded_jointly_on_a_tiny_model(d):
    """Each role rounded to its own closest count can miss the total by both roles' steps
    (a tiny LLaVA at 0.5 with vision_share 0.3). Rounded jointly, the total is never further
    from the budget, and the vision share moves by at most one of its steps."""
    from harness.pruning.spec import _solve, _zeros

    a = llava(d=d)
    spec = PruneSpec(method="magnitude", sparsity=0.5, distribution="budget", vision_share=0.3)
    t = targets(spec, a)
    engine.prune(a, t, "magnitude", progress=False)
    r = report.measure(a, t)
    shapes = {role: [tuple(lin.weight.shape) for lin in a.role_linears(role).values()]
              for role in ("vision", "language")}
    params = {role: a.parameter_count(role) for role in shapes}
    total = 0.5 * sum(params.values())
    alone = sum(_zeros(shapes[role], _solve(shapes[role], want, "row"), "row")
                for role, want in (("vision", 0.3 * total), ("language", 0.7 * total)))
    assert abs(r["overall"]["zeros"] - total) <= abs(alone - total)
    assert abs(r["overall"]["zeros"] - total) < 0.01 * total
    assert abs(r["roles"]["vision"]["zeros"] / r["overall"]["zeros"] - 0.3) < 0.02


@pytest.mark.parametrize("cal", [CAL, ONE], ids=["two-batches", "one-batch"])
@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt", "dsnot"])
def test_prune_hits_role_targets(method, cal):
    a = llava()
    spec = PruneSpec(method=method, sparsity={"vision": 0.3, "language": 0.6},
                     calibration=cal)
    t = targets(spec, a)
    masks = engine.prune(a, t, method, calibration.batches(cal, a), progress=False)
    assert set(masks) == set(a.role_linears("vision")) | set(a.role_linears("language"))
    r = report.measure(a, t)
    for layer in r["layers"]:
        expected = {"vision": 0.3, "language": 0.6, "bridge": 0.0}[layer["role"]]
        rows, cols = layer["shape"]
        assert layer["zeros"] >= rows * int(cols * expected)
        if method != "sparsegpt":  # sparsegpt may also zero a kept weight by reconstruction
            assert layer["zeros"] == rows * int(cols * expected), layer
    assert r["roles"]["bridge"]["zeros"] == 0


def test_nm_pattern_is_valid_in_every_group():
    a = llava()
    spec = PruneSpec(method="wanda", pattern="2:4", calibration=CAL)
    t = targets(spec, a)
    engine.prune(a, t, "wanda", calibration.batches(CAL, a), progress=False)
    r = report.measure(a, t)
    assert r["roles"]["vision"]["nm_valid"] and r["roles"]["language"]["nm_valid"]
    assert abs(r["overall"]["sparsity"] - 0.5) < 1e-9


@pytest.mark.parametrize("share", [0.2, 0.5, 0.7])
def test_budget_split_hits_the_global_target(share):
    a = llava(d=128)  # widths >= 128, as in any real model: floors cost < 0.4%
    spec = PruneSpec(method="magnitude", sparsity=0.4, distribution="budget",
                     vision_share=share)
    t = targets(spec, a)
    engine.prune(a, t, "magnitude", progress=False)
    r = report.measure(a, t)
    assert abs(r["overall"]["sparsity"] - 0.4) <= 0.005
    zeros_v = r["roles"]["vision"]["zeros"]
    assert abs(zeros_v / r["overall"]["zeros"] - share) < 0.01


def test_saved_pruned_model_reloads_identically(tmp_path):
    from harness.models.load import ModelSpec, load

    a = llava(seed=2)
    spec = PruneSpec(method="sparsegpt", pattern="2:4", calibration=CAL)
    batches = calibration.batches(CAL, a)
    masks = engine.prune(a, targets(spec, a), "sparsegpt", batches, progress=False)
    persist.save(a, masks, tmp_path / "pruned")
    b = load(ModelSpec(name=str(tmp_path / "pruned"), device="cpu"))
    back = persist.load_masks(tmp_path / "pruned")
    assert back.keys() == masks.keys()
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    # one bit per weight, plus a header line per mask
    assert (tmp_path / "pruned" / persist.MASKS).stat().st_size < sum(
        m.numel() for m in masks.values()) / 8 + 300 * len(masks)
    with torch.no_grad():
        assert torch.equal(a.forward(batches[0]).logits, b.forward(batches[0]).logits)
    img = [np.zeros((32, 32, 3), np.uint8)]
    p = [a.prompts.question("what ?")]
    assert a.generate(img, p, max_new_tokens=3) == b.generate(img, p, max_new_tokens=3)


def padded_llava():
    """A tiny LLaVA whose pad token embeds to a non-zero vector, so padding positions carry
    non-zero states through every block (a trained Llama's pad embedding is zero)."""
    a = llava()
    emb = a.model.get_input_embeddings()
    with torch.no_grad():
        emb.weight[a.processor.tokenizer.pad_token_id] = torch.randn(emb.weight.shape[1]) * 3
    return a


def test_language_statistics_skip_padding():
    """Wanda's language masks come from the real tokens only: they equal masks computed from
    the dense inputs at unpadded positions, not those counting the padding too."""
    from harness.pruning.masks import Target, select
    from harness.pruning.methods import wanda

    a = padded_llava()
    batches = calibration.batches(CAL, a)
    assert all((b["attention_mask"] == 0).any() for b in batches)  # the batches have padding
    name = a.blocks("language")[1].name + ".self_attn.q_proj"
    lin = a.model.get_submodule(name)
    seen = []
    hook = lin.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        for b in batches:
            a.forward(b)
    hook.remove()
    real = torch.cat([x[b["attention_mask"].bool()] for x, b in zip(seen, batches, strict=True)])
    every = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])
    w = lin.weight.detach().clone()
    spec = PruneSpec(method="wanda", sparsity={"language": 0.5}, calibration=CAL)
    masks = engine.prune(a, targets(spec, a), "wanda", batches, "dense", progress=False)
    assert torch.equal(masks[name], select(wanda.scores(w, real.norm(dim=0)), Target(0.5)))
    assert not torch.equal(masks[name], select(wanda.scores(w, every.norm(dim=0)), Target(0.5)))


@pytest.mark.parametrize("cal", [ONE, CAL], ids=["one-batch", "two-batches"])
def test_more_padding_leaves_sequential_masks_alone(cal):
    """The same samples with 5 more pad positions on the left prune the same way."""
    masks = []
    for extra in (0, 5):
        a = padded_llava()
        batches = calibration.batches(cal, a)
        pad = a.processor.tokenizer.pad_token_id
        for b in batches:
            n = b["input_ids"].shape[0]
            b["input_ids"] = torch.cat([torch.full((n, extra), pad), b["input_ids"]], 1)
            b["attention_mask"] = torch.cat([torch.zeros(n, extra, dtype=torch.long),
                                             b["attention_mask"]], 1)
        spec = PruneSpec(method="wanda", sparsity={"language": 0.5}, calibration=cal)
        masks.append(engine.prune(a, targets(spec, a), "wanda", batches, progress=False))
    same = [torch.equal(masks[0][n], masks[1][n]) for n in masks[0]]
    assert all(same), f"{same.count(False)} of {len(same)} Linears changed"


@pytest.mark.parametrize("build,pattern,cal,propagation", [
    (llava, "unstructured", ONE, "sequential"), (llava, "2:4", ONE, "sequential"),
    (lambda: adapter_for(*tiny_blip2("t5")), "2:4", ONE, "sequential"),
    (llava, "unstructured", CAL, "sequential"), (llava, "unstructured", CAL, "blockwise"),
    (llava, "unstructured", CAL, "dense")],
    ids=["llava", "llava-2:4", "blip2-t5-2:4", "llava-two-batches", "llava-blockwise",
         "llava-dense"])
def test_stacked_sparsegpt_equals_one_linear_at_a_time(build, pattern, cal, propagation,
                                                        monkeypatch):
    """Stacking q, k, v (and gate, up; in T5's decoder, the cross-attention k and v of every
    block, which read the same encoder states) into one SparseGPT call changes nothing."""
    import dataclasses

    from harness.pruning import registry

    out, calls = {}, {True: 0, False: 0}
    m = registry.get("sparsegpt")
    for stack in (True, False):
        def counted(*args, stack=stack, **kwargs):
            calls[stack] += 1
            return m.fn(*args, **kwargs)

        monkeypatch.setitem(registry._METHODS, "sparsegpt",
                            dataclasses.replace(m, fn=counted, stack=stack))
        a = build()
        spec = PruneSpec(method="sparsegpt", sparsity={"vision": 0.5, "bridge": 0.5,
                                                       "language": 0.5},
                         pattern=pattern, calibration=cal, propagation=propagation)
        masks = engine.prune(a, targets(spec, a), "sparsegpt", calibration.batches(cal, a),
                             propagation, progress=False)
        out[stack] = masks, {n: lin.weight.detach().clone() for n, lin in
                             a.all_linears().items()}
    assert out[True][0].keys() == out[False][0].keys()
    assert calls[False] == len(out[False][0]) > calls[True]  # one call per group when stacked
    for n in out[True][0]:
        assert torch.equal(out[True][0][n], out[False][0][n]), n
        assert torch.allclose(out[True][1][n], out[False][1][n], atol=1e-5), n


@pytest.mark.parametrize("cal", [CAL, ONE], ids=["two-batches", "one-batch"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_per_group_sparsity_prunes_each_block_group_at_its_level(method, cal):
    a = llava()  # 3 language blocks: groups [0, 1] and [2] at 0.2 and 0.6
    spec = PruneSpec(method=method, sparsity={"vision": 0.5, "language": [0.2, 0.6]},
                     calibration=cal)
    t = targets(spec, a)
    engine.prune(a, t, method, calibration.batches(cal, a), progress=False)
    layers = report.measure(a, t)["layers"]
    blocks = [b.name for b in a.blocks("language")]
    for lay in layers:
        if lay["role"] != "language":
            continue
        want = 0.6 if lay["name"].startswith(blocks[2] + ".") else 0.2
        assert lay["target"] == want and lay["sparsity"] == pytest.approx(want, abs=0.04)
    sizes = [sum(x["params"] for x in layers if x["role"] == "language"
                 and x["target"] == v) for v in (0.2, 0.6)]
    assert t["language"].sparsity == pytest.approx((0.2 * sizes[0] + 0.6 * sizes[1]) /
                                                   sum(sizes))


def test_per_group_lists_are_checked():
    from harness.errors import UserError
    from harness.pruning.spec import load

    with pytest.raises(UserError, match="per-group sparsity lists need pattern: unstructured"):
        load({"pattern": "2:4", "sparsity": {"language": [0.2, 0.5]}})
    with pytest.raises(UserError, match=r"sparsity must be in \[0, 1\)"):
        load({"sparsity": {"language": [0.2, 1.5]}})
    with pytest.raises(UserError, match="4 groups for 3 language blocks"):
        targets(load({"sparsity": {"language": [0.1, 0.2, 0.3, 0.4]}}), llava())


@pytest.mark.unit
@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_packed_masks_round_trip_and_leave_nothing_behind(spill, tmp_path):
    g = torch.Generator().manual_seed(0)
    masks = {f"l{i}": torch.rand(7 + i, 13, generator=g) > 0.5 for i in range(4)}
    packed = persist.PackedMasks(tmp_path if spill else None)
    for name, m in masks.items():
        packed[name] = m
    assert list(packed) == list(masks) and "l2" in packed and "x" not in packed
    assert all(torch.equal(packed[n], m) for n, m in masks.items())
    persist.save_masks(packed, tmp_path / "masks.safetensors")
    again = persist.load_masks(tmp_path / "masks.safetensors")
    assert all(torch.equal(again[n], m) for n, m in masks.items())
    assert [p.name for p in tmp_path.iterdir()] == ["masks.safetensors"]  # the spill is unnamed
