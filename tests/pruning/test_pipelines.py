"""The pipelines (`propagation`): what each one's statistics see, that the calibration batch
size is a memory setting only, and the shared plumbing (hooks, the sibling detector)."""

from typing import get_args

import pytest
import torch
from tqdm import tqdm

from harness.models.adapter import ROLES
from harness.models.load import ModelSpec, adapter_for, load
from harness.pruning import calibration, engine, registry
from harness.pruning.pipelines import PIPELINES, common, sequential
from harness.pruning.spec import CalibrationSpec, PruneSpec, targets
from harness.pruning.stats import InputStats
from harness.pruning.types import Propagation
from harness.testing.tiny import tiny_blip2, tiny_instructblip, tiny_llava

pytestmark = pytest.mark.integration

ONE = CalibrationSpec(samples=8, batch_size=8)
FOUR = CalibrationSpec(samples=8, batch_size=2)  # the same 8 samples in 4 batches
ALL = {"vision": 0.5, "bridge": 0.5, "language": 0.5}


def llava(seed=0):
    return adapter_for(*tiny_llava(d=32, layers=3, seed=seed))


def pruned(a, method, cal, propagation, pattern="unstructured", sparsity=None):
    """(masks, weights) after pruning `a` in place."""
    spec = PruneSpec(method=method, sparsity=sparsity or ALL, pattern=pattern,
                     calibration=cal, propagation=propagation)
    masks = engine.prune(a, targets(spec, a), method, calibration.batches(cal, a), propagation,
                         progress=False)
    return masks, {n: lin.weight.detach().clone() for n, lin in a.all_linears().items()}


def test_every_propagation_is_a_pipeline():
    assert set(PIPELINES) == set(get_args(Propagation))
    assert PruneSpec().propagation == "sequential"


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("propagation", sorted(PIPELINES))
def test_batch_size_changes_no_mask(propagation, method):
    """1 batch of 8 samples and 4 batches of 2 prune alike: every pipeline sums a Linear's
    statistics over all batches before pruning it. Not bit for bit in general (a sample's
    activations differ in the last bits in a batch of another shape, pipelines/__init__.py),
    and SparseGPT carries a flipped weight's error along its row, so it is held to 99.9% of
    entries (on this model all agree); the others to every entry."""
    one, _ = pruned(llava(), method, ONE, propagation)
    four, _ = pruned(llava(), method, FOUR, propagation)
    assert one.keys() == four.keys()
    differ = sum(int((one[n] != four[n]).sum()) for n in one)
    total = sum(m.numel() for m in one.values())
    assert differ <= (0.001 * total if method == "sparsegpt" else 0), f"{differ} of {total}"


@pytest.mark.parametrize("method,pattern", [("wanda", "unstructured"),
                                            ("sparsegpt", "unstructured"), ("sparsegpt", "2:4")])
@pytest.mark.parametrize("build", [llava, lambda: adapter_for(*tiny_blip2("t5")),
                                   lambda: adapter_for(*tiny_instructblip("llama"))],
                         ids=["llava", "blip2-t5", "instructblip-llama"])
def test_one_forward_is_block_by_block_on_one_batch(build, method, pattern):
    """`sequential` on one batch runs as one forward of the model (pruning in pre-hooks);
    block by block (capture, a pass per group of readers) gives the same masks and weights,
    bit for bit, so the batch size picks how it runs, never what it gives (T5's decoder
    stacks its cross-attention k and v across blocks in one form, per block in the other)."""
    out = []
    for run in (sequential.one_forward, sequential.block_by_block):
        a = build()
        spec = PruneSpec(method=method, sparsity=ALL, pattern=pattern, calibration=ONE)
        t = targets(spec, a)
        batches = calibration.batches(ONE, a)
        m = registry.get(method)
        p = common.Pass(engine._bind(m.fn, 0, {}), m.needs, m.stack, {}, tqdm(disable=True))
        run(p, a, [r for r in ROLES if r in t], t,
            batches[0] if run is sequential.one_forward else batches)
        out.append((p.masks, a.all_linears()))
    (masks, lins), (masks2, lins2) = out
    assert masks.keys() == masks2.keys() == lins.keys()
    for n in masks:
        assert torch.equal(masks[n], masks2[n]), n
        assert torch.equal(lins[n].weight, lins2[n].weight), n


@pytest.mark.slow
def test_default_spec_prunes_shapes_llava_as_before():
    """A spec that omits `propagation`, with the shipped calibration (128 samples, one batch,
    as every grid of the paper study), runs today's algorithm: the one forward that pruned
    every stored result, which equals `sequential` block by block bit for bit."""
    spec = PruneSpec(method="sparsegpt")
    assert spec.propagation == "sequential" and spec.calibration is not None
    out = []
    for run in (engine.prune, sequential.block_by_block):
        a = load(ModelSpec(name="shapes-llava", device="cpu"))
        t = targets(spec, a)
        batches = calibration.batches(spec.calibration, a)
        assert len(batches) == 1
        if run is engine.prune:
            masks = engine.prune(a, t, spec.method, batches, spec.propagation, progress=False)
        else:
            m = registry.get(spec.method)
            p = common.Pass(engine._bind(m.fn, 0, {}), m.needs, m.stack, {},
                            tqdm(disable=True))
            run(p, a, [r for r in ROLES if r in t], t, batches)
            masks = p.masks
        out.append((masks, a.all_linears()))
    for n in out[0][0]:
        assert torch.equal(out[0][0][n], out[1][0][n]), n
        assert torch.equal(out[0][1][n].weight, out[1][1][n].weight), n


@pytest.mark.parametrize("cal", [ONE, FOUR], ids=["one-batch", "four-batches"])
def test_what_each_pipeline_sees(cal):
    """Block 0's q, k, v read the block's input: alike everywhere. Its o_proj reads the
    attention of pruned q, k, v only in `sequential`, so `blockwise` prunes block 0 exactly as
    `dense`; the later blocks read pruned blocks in both `sequential` and `blockwise`."""
    masks = {prop: pruned(llava(seed=4), "wanda", cal, prop, sparsity={"language": 0.6})[0]
             for prop in PIPELINES}
    names = list(masks["dense"])
    first = [n for n in names if ".layers.0." in n]
    qkv = [n for n in first if n.rsplit(".", 1)[1] in ("q_proj", "k_proj", "v_proj")]
    later = [n for n in names if ".layers.0." not in n]

    def same(a, b, which):
        return [torch.equal(masks[a][n], masks[b][n]) for n in which]

    assert all(same("sequential", "dense", qkv))
    assert all(same("blockwise", "dense", first))
    assert not all(same("sequential", "blockwise", first))
    assert not all(same("blockwise", "dense", later))
    assert not all(same("sequential", "blockwise", later))


def test_siblings_are_the_readers_of_one_tensor():
    a = llava()
    groups = sequential.siblings(a, calibration.batches(ONE, a)[0], a.all_linears())
    lm, vit = a.blocks("language")[0].name, a.blocks("vision")[0].name
    assert groups[f"{lm}.self_attn.q_proj"] == [f"{lm}.self_attn.{p}_proj" for p in "qkv"]
    assert groups[f"{lm}.mlp.gate_proj"] == [f"{lm}.mlp.gate_proj", f"{lm}.mlp.up_proj"]
    assert groups[f"{vit}.self_attn.q_proj"] == [f"{vit}.self_attn.{p}_proj" for p in "qkv"]
    assert groups[f"{vit}.mlp.fc1"] == [f"{vit}.mlp.fc1"]
    members = [n for g in groups.values() for n in g]
    assert sorted(members) == sorted(a.all_linears())  # each Linear in exactly one group


def test_readers_of_one_tensor_share_statistics_over_batches():
    """With several batches, q, k and v (and gate, up) accumulate into one statistics object,
    equal to what each would have collected alone."""
    a = llava()
    block = a.blocks("language")[0]
    inputs = common.capture(a, block.module, calibration.batches(FOUR, a))
    linears = a.linears(block)
    st = common.Statistics(linears, "hessian", lambda: None, torch.device("cpu"))
    alone = {rel: InputStats(lin.in_features, "hessian") for rel, lin in linears.items()}
    each = [(lin, common.reads(lambda rel, x: alone[rel].add(x), rel))
            for rel, lin in linears.items()]
    with torch.no_grad(), common.hooks(st.hooks() + each):
        for args, kwargs in inputs:
            block.module(*args, **kwargs)
    stats = st.stats
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"] is stats["self_attn.v_proj"]
    assert stats["mlp.gate_proj"] is stats["mlp.up_proj"]
    assert len({id(s) for s in stats.values()}) == 4  # qkv, o, gate/up, down
    for rel, s in stats.items():
        assert s.tokens == alone[rel].tokens
        assert torch.allclose(s.hessian, alone[rel].hessian, atol=1e-6), rel


def test_hooks_are_removed_however_the_forward_ends():
    lin = torch.nn.Linear(4, 4)

    def stop(mod, args, kwargs):
        raise common.Stop

    with pytest.raises(common.Stop), common.hooks([(lin, stop)]):
        lin(torch.zeros(1, 4))
    assert not lin._forward_pre_hooks
    lin(torch.zeros(1, 4))  # runs: no hook left behind
