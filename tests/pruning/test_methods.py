from dataclasses import astuple

import pytest
import torch

from harness.errors import UserError
from harness.pruning import registry
from harness.pruning.masks import Target, nm_valid
from harness.pruning.methods import dsnot, sparsegpt, sparsegpt_mask, wanda
from harness.pruning.stats import InputStats

pytestmark = pytest.mark.unit

TARGETS = [Target(0.5, "row"), Target(0.7, "row"), Target(0.3, "layer"),
           Target(0.5, n=2, m=4), Target(0.5, n=4, m=8)]


def layer(rows=16, cols=64, tokens=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    # correlated inputs with uneven column scales and a non-zero mean, like real activations
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    scale = torch.linspace(0.1, 3, cols)[torch.randperm(cols, generator=g)]  # outlier columns
    x = torch.randn(tokens, cols, generator=g) @ mix * scale + 0.5
    return w, x


def stats_for(x, needs):
    s = InputStats(x.shape[1], needs)
    s.add(x[: len(x) // 2])
    s.add(x[len(x) // 2:])  # accumulation over batches
    return s


@pytest.mark.parametrize("name", ["magnitude", "random", "wanda", "sparsegpt", "dsnot"])
@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_every_method_hits_the_target_exactly(name, target):
    w, x = layer()
    m = registry.get(name)
    out = m.fn(w, stats_for(x, m.needs) if m.needs else None, target, seed=1)
    zeros = ~out.mask
    if target.structured:
        assert nm_valid(torch.where(out.mask, 1.0, 0.0), target.n, target.m)
        assert (zeros.sum(1) == w.shape[1] // target.m * target.n).all()
    elif target.scope == "row":
        assert (zeros.sum(1) == int(w.shape[1] * target.sparsity)).all()
    else:
        assert int(zeros.sum()) == int(w.numel() * target.sparsity)
    if out.weight is not None:
        assert (out.weight[zeros] == 0).all()


def test_wanda_scores_equal_brute_force():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(4))
    s = stats_for(x, "norms")
    brute = torch.empty(8, 16)
    for i in range(8):
        for j in range(16):
            brute[i, j] = abs(w[i, j]) * sum(float(x[t, j]) ** 2 for t in range(40)) ** 0.5
    assert torch.allclose(wanda.scores(w, s.norm), brute, rtol=1e-5)
    keep = registry.get("wanda").fn(w, s, Target(0.5, "row")).mask
    for i in range(8):
        order = sorted(range(16), key=lambda j: float(brute[i, j]))
        assert {j for j in range(16) if not keep[i, j]} == set(order[:8])


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(target):
    w, x = layer(rows=32, cols=256, tokens=1024, seed=5)
    err = {}
    for name in ("magnitude", "wanda", "sparsegpt"):
        m = registry.get(name)
        out = m.fn(w, stats_for(x, m.needs) if m.needs else None, target)
        pruned = out.weight if out.weight is not None else w * out.mask
        err[name] = float(torch.linalg.norm(x @ w.T - x @ pruned.T))
    assert err["sparsegpt"] < err["wanda"] and err["sparsegpt"] < err["magnitude"], err


@pytest.mark.parametrize("target", [Target(0.5, "row"), Target(0.5, n=2, m=4)], ids=str)
def test_dsnot_lowers_the_mean_shift_of_its_initial_mask(target):
    w, x = layer(seed=6)
    s = stats_for(x, "moments")
    init = registry.get("wanda").fn(w, s, target).mask
    refined = dsnot.refine(w, init, s.mean, s.norm, target)
    assert (~refined).sum() == (~init).sum()
    shift = lambda k: ((w * ~k) @ s.mean).abs().sum()  # noqa: E731
    assert shift(refined) < shift(init)
    assert not torch.equal(refined, init)


def test_unknown_method_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'wanda'"):
        registry.get("wnada")
    assert registry.names() == ["dsnot", "magnitude", "random", "sparsegpt", "sparsegpt-mask",
                                "wanda"]


def reference_sparsegpt(w, h, target, block=128):
    """The paper's algorithm, column by column with no lazy inner blocks (slow, plain)."""
    from harness.pruning.masks import lowest, n_of_m
    from harness.pruning.methods.sparsegpt import _block_count, inverse_hessian_factor

    w = w.clone().float()
    rows, cols = w.shape
    hinv = inverse_hessian_factor(h)
    keep = torch.ones_like(w, dtype=torch.bool)
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        w1, h1 = w[:, c0:c1].clone(), hinv[c0:c1, c0:c1]
        d = torch.diag(h1)
        err = torch.zeros_like(w1)
        if not target.structured:
            keep[:, c0:c1] = lowest(w1**2 / d**2, _block_count(c0, c1, rows, target),
                                    target.scope)
        for i in range(c1 - c0):
            if target.structured and i % target.m == 0:
                g = slice(i, i + target.m)
                keep[:, c0 + i:c0 + i + target.m] = n_of_m(w1[:, g] ** 2 / d[g] ** 2,
                                                           target.n, target.m)
            q = torch.where(keep[:, c0 + i], w1[:, i], torch.zeros(rows))
            e = (w1[:, i] - q) / d[i]
            w1[:, i:] -= e.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err[:, i] = e
        w[:, c0:c1] = w1
        w[:, c1:] -= err @ hinv[c0:c1, c1:]
    w[~keep] = 0
    return keep, w


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_sparsegpt_equals_the_plain_algorithm(target):
    from harness.pruning.methods import sparsegpt

    w, x = layer(rows=24, cols=320, tokens=800, seed=9)
    h = stats_for(x, "hessian").hessian
    keep, ref = reference_sparsegpt(w, h, target)
    out = sparsegpt.reconstruct(w, h, target)
    assert torch.equal(out.mask, keep)
    assert torch.allclose(out.weight, ref, atol=1e-4)


@pytest.mark.unit
@pytest.mark.parametrize("target", [Target(0.6), Target(0.5, n=2, m=4)], ids=["60%", "2:4"])
def test_sparsegpt_mask_is_sparsegpt_s_mask_on_the_original_weights(target):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 256, generator=g)
    x = torch.randn(300, 256, generator=g)

    def stats():
        s = InputStats(256, "hessian")
        s.add(x)
        return s

    full = sparsegpt.prune(w.clone(), stats(), target)
    probe = sparsegpt_mask.prune(w.clone(), stats(), target)
    assert probe.weight is None and torch.equal(probe.mask, full.mask)
    assert full.weight is not None and not torch.equal(full.weight, w * full.mask)  # it updates


@pytest.mark.unit
def test_a_hessian_that_is_not_positive_definite_is_refused_as_torch_refuses_it():
    h = -torch.eye(8)  # damping by 1% of a negative mean diagonal cannot make it definite
    with pytest.raises(torch.linalg.LinAlgError, match="not positive-definite"):
        sparsegpt.inverse_hessian_factor(h)
    assert torch.equal(h, -torch.eye(8))  # not consumed: the caller's tensor is untouched


@pytest.mark.unit
def test_sparsegpt_gives_the_same_bits_at_one_and_at_two_threads():
    # LAPACK blocks its Cholesky by the thread count: unpinned, H⁻¹'s factor differed in about
    # 40% of its entries from 256 columns on, and a cell's masks with the machine's cores
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 512, generator=g) * torch.rand(512, generator=g) * 3
    h = x.T @ x / 2048
    w = torch.randn(96, 512, generator=g)
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            hinv = sparsegpt.inverse_hessian_factor(h)
            assert torch.get_num_threads() == n  # the caller's count is restored
            out[n] = [hinv, *(p for t in (Target(0.6), Target(0.5, n=2, m=4))
                              for p in astuple(sparsegpt.reconstruct(w, None, t, hinv=hinv)))]
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(out[1], out[2], strict=True))
