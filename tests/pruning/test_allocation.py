"""OWL and ECoFLaP allocations: the math against the reference formulas, the zeroth-order
scores against a direct computation, and pruned weights that match the allocation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.models.load import adapter_for
from harness.pruning import allocate, allocation, calibration, engine, report
from harness.pruning.spec import CalibrationSpec, load, targets
from harness.testing.tiny import tiny_llava

pytestmark = pytest.mark.integration

SHARES = [0.010, 0.030, 0.020, 0.050, 0.015, 0.040]


def test_owl_matches_the_reference_formula_on_equal_blocks():
    s, lam = 0.6, 0.08
    got = allocation.owl(SHARES, [100] * 6, s, lam)
    r = np.array(SHARES)  # luuyin/OWL prune_wanda_outlier, verbatim in numpy
    r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    r = r - np.mean(r) + (1 - s)
    assert got == pytest.approx(list(1 - r))


def test_owl_weighted_mean_is_the_budget_and_more_outliers_mean_less_pruning():
    sizes = [300, 300, 100, 100, 700, 500]
    s, lam = 0.5, 0.1
    got = allocation.owl(SHARES, sizes, s, lam)
    assert np.average(got, weights=sizes) == pytest.approx(s, abs=1e-12)
    order = np.argsort(SHARES)
    pairs = zip(order[:-1], order[1:], strict=True)
    assert all(got[i] >= got[j] for i, j in pairs)  # falls as the outlier share rises
    assert all(s - 2 * lam - 1e-9 <= g <= s + 2 * lam + 1e-9 for g in got)


def water_fill(scores, sizes, s, top):
    """Keep = min(size, floor + t·score), t by bisection so that the total is (1-s)·N."""
    n = np.array(sizes, float)
    floor = np.ceil(n * (1 - top))
    total = int(n.sum() * (1 - s))
    lo, hi = 0.0, 1e12
    for _ in range(200):
        t = (lo + hi) / 2
        kept = np.minimum(n, floor + t * np.array(scores)).sum()
        lo, hi = (t, hi) if kept < total else (lo, t)
    return list(1 - np.minimum(n, floor + lo * np.array(scores)) / n)


@pytest.mark.parametrize("s, top", [(0.5, 0.8), (0.7, 0.8), (0.3, 0.95)])
def test_ecoflap_keeps_exactly_the_budget_within_bounds_as_water_filling(s, top):
    scores = [5.0, 1.0, 0.5, 3.0, 0.1, 2.0]
    sizes = [4096, 4096, 2048, 8192, 8192, 1024]
    got = allocation.ecoflap(scores, sizes, s, top)
    kept = sum((1 - g) * n for g, n in zip(got, sizes, strict=True))
    assert round(kept) == int(sum(sizes) * (1 - s))
    assert all(0 <= g <= top + 1e-9 for g in got)
    assert got == pytest.approx(water_fill(scores, sizes, s, top), abs=2e-3)


def tiny(seed=0):
    return adapter_for(*tiny_llava(d=32, layers=3, seed=seed))


CAL = CalibrationSpec(samples=8, batch_size=8)


def test_block_estimator_is_one_direction_over_the_whole_block():
    a = tiny()
    spec = load({"distribution": "ecoflap", "sparsity": 0.5, "calibration": CAL.model_dump(),
                 "ecoflap": {"samples": 4, "eps": 1e-2, "noise": 2, "estimator": "block"}})
    batches = calibration.batches(spec.calibration, a)
    blocks = a.blocks("language")
    got = allocate.ecoflap_scores(a, blocks, batches, spec.ecoflap)
    sample = allocate._first(batches, 4)
    for i, b in enumerate(blocks):  # the estimate, written out for one block at a time
        lins = list(a.linears(b).values())
        w0 = [lin.weight.detach().clone() for lin in lins]
        g = 0.0
        for k in range(2):
            gen = torch.Generator().manual_seed(0 * 1_000_003 + i * 101 + k)
            zs = [torch.randn(w.shape, generator=gen) for w in w0]
            losses = []
            for sign in (1, -1):
                with torch.no_grad():
                    for lin, w, z in zip(lins, w0, zs, strict=True):
                        lin.weight.copy_(w + sign * 1e-2 * z)
                losses.append(allocate.lm_loss(a, sample))
            with torch.no_grad():
                for lin, w in zip(lins, w0, strict=True):
                    lin.weight.copy_(w)
            g += abs(losses[0] - losses[1]) / 2e-2 / 2
        mean_abs = float(torch.cat([w.abs().flatten() for w in w0]).mean())
        assert got[i] == pytest.approx(g * mean_abs, rel=1e-5)
        assert all(torch.equal(lin.weight, w) for lin, w in zip(lins, w0, strict=True))


def test_ecoflap_default_is_the_reference_per_tensor_estimate():
    """ylsung/ECoFLaP `compute_importance_scores_mezo` + `return_sparsity` (score method
    MEZO-GradMagAbs_avg): each weight tensor is perturbed alone, by its own direction z, and
    its own loss difference gives g_t = |L(W_t+εz) - L(W_t-εz)| / 2ε; a weight's importance is
    |w|·g_t, and a block's score the mean importance over its weights,
    sum_t g_t·sum|W_t| / sum_t numel(W_t). Written out here for every block."""
    a = tiny()
    spec = load({"distribution": "ecoflap", "sparsity": 0.5, "calibration": CAL.model_dump(),
                 "ecoflap": {"samples": 4, "eps": 1e-2, "noise": 2}})
    assert spec.ecoflap is not None and spec.ecoflap.estimator == "tensor"
    batches = calibration.batches(spec.calibration, a)
    blocks = a.blocks("vision") + a.blocks("language")
    got = allocate.ecoflap_scores(a, blocks, batches, spec.ecoflap)
    sample = allocate._first(batches, 4)
    for i, b in enumerate(blocks):
        num = den = 0.0
        for j, lin in enumerate(a.linears(b).values()):
            w0 = lin.weight.detach().clone()
            g = 0.0
            for k in range(2):
                z = allocate.direction(tuple(w0.shape), 0, i, j, k)
                losses = []
                for sign in (1, -1):
                    with torch.no_grad():
                        lin.weight.copy_(w0 + sign * 1e-2 * z)
                    losses.append(allocate.lm_loss(a, sample))
                with torch.no_grad():
                    lin.weight.copy_(w0)
                g += abs(losses[0] - losses[1]) / 2e-2 / 2
            num += g * float(w0.abs().sum())
            den += w0.numel()
        assert got[i] == pytest.approx(num / den, rel=1e-5)
    # distinct directions per tensor, block and draw, the same on every call
    z = allocate.direction((4, 3), 0, 1, 2, 0)
    assert torch.equal(z, allocate.direction((4, 3), 0, 1, 2, 0))
    assert not torch.equal(z, allocate.direction((4, 3), 0, 1, 3, 0))
    assert not torch.equal(z, allocate.direction((4, 3), 0, 2, 2, 0))
    assert not torch.equal(z, allocate.direction((4, 3), 0, 1, 2, 1))
    assert not torch.equal(z, allocate.direction((4, 3), 1, 1, 2, 0))


def test_ecoflap_floor_per_block_is_exact():
    """Every block keeps at least ceil(n·(1 - max_sparsity)) weights, computed exactly:
    in floating point ceil(10240·(1 - 0.7)) is 3073 and the block ended at 0.6999."""
    got = allocation.ecoflap([1.0, 0.0], [10240, 10240], 0.65, 0.7)
    assert got[1] == pytest.approx(0.7, abs=1e-12)
    assert got[0] == pytest.approx(1 - 4096 / 10240, abs=1e-12)
    kept = allocation.ecoflap([1.0, 0.0, 2.0], [1000, 3000, 7000], 0.7, 0.9)
    assert round(sum((1 - g) * n for g, n in zip(kept, [1000, 3000, 7000], strict=True))) \
        == 3300


@pytest.mark.parametrize("s, lam", [(0.1, 0.05), (0.8, 0.0999)])
def test_owl_at_the_edge_settings_prunes_the_role_target(s, lam):
    """At the edges the validator allows (2·lam = s, s + 2·lam just below 1) every block's
    level stays in [0, 1): each role's achieved sparsity is its target, short of it only by
    the floors of the per-row counts."""
    a = tiny(seed=1)
    spec = load({"method": "wanda", "sparsity": s, "distribution": "owl",
                 "owl": {"lam": lam}, "calibration": CAL.model_dump()})
    batches = calibration.batches(spec.calibration, a)
    t = allocate.per_linear(a, spec, targets(spec, a), batches)
    levels = [t[name].sparsity for r in ("vision", "language") for name in a.role_linears(r)]
    assert all(0 <= x < 1 for x in levels) and len(set(levels)) > 2
    engine.prune(a, t, "wanda", batches, progress=False)
    rep = report.measure(a, t)
    for role in ("vision", "language"):
        lins = a.role_linears(role).values()
        slack = sum(lin.weight.shape[0] for lin in lins) / a.parameter_count(role)
        got = rep["roles"][role]["sparsity"]
        assert s - slack - 1e-9 <= got <= s + 1e-9, (role, got)


@pytest.mark.parametrize("kind", ["owl", "ecoflap"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_achieved_per_layer_sparsity_is_the_allocation(kind, method):
    a = tiny()
    opts = {"owl": {"lam": 0.1}, "ecoflap": {"samples": 4, "across": "roles"}}[kind]
    spec = load({"method": method, "sparsity": 0.5, "distribution": kind, kind: opts,
                 "calibration": CAL.model_dump()})
    batches = calibration.batches(spec.calibration, a)
    t = allocate.per_linear(a, spec, targets(spec, a), batches)
    engine.prune(a, t, method, batches, progress=False)
    layers = report.measure(a, t)["layers"]
    pruned = [x for x in layers if x["role"] in ("vision", "language")]
    assert len({round(x["target"], 6) for x in pruned}) > 1  # not uniform
    for x in pruned:  # measured from the weights: the target up to one weight per row
        assert x["sparsity"] == pytest.approx(x["target"], abs=1 / x["shape"][1] + 1e-9)
    total = sum(x["params"] for x in pruned)
    assert sum(x["target"] * x["params"] for x in pruned) / total == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("data, words", [
    ({"distribution": "owl", "sparsity": 0.05, "owl": {"lam": 0.08}}, "owl.lam 0.08"),
    ({"distribution": "owl", "sparsity": 0.1, "owl": {"lam": 0.09}}, "owl.lam 0.09"),
    ({"distribution": "owl", "sparsity": {"vision": 0.1, "language": 0.5},
      "owl": {"lam": 0.06}}, "at least 2·lam = 0.12 (got 0.1)"),
    ({"distribution": "owl", "sparsity": 0.9, "owl": {"lam": 0.08}}, "below 1 - 2·lam = 0.84"),
    ({"distribution": "owl", "sparsity": 0.8, "owl": {"lam": 0.1}}, "owl.lam 0.1"),
    ({"distribution": "ecoflap", "ecoflap": {"estimator": "layer"}}, "ecoflap.estimator"),
    ({"distribution": "owl", "owl": {"threshold_m": 0}}, "owl.threshold_m"),
    ({"distribution": "owl", "owl": {"threshold_m": -1}}, "owl.threshold_m"),
    ({"distribution": "owl", "pattern": "2:4"}, "needs pattern: unstructured"),
    ({"distribution": "ecoflap", "pattern": "4:8"}, "needs pattern: unstructured"),
    ({"distribution": "ecoflap", "sparsity": 0.9, "ecoflap": {"max_sparsity": 0.8}},
     "max_sparsity 0.8"),
    ({"distribution": "owl", "sparsity": {"language": [0.3, 0.6]}}, "not a list"),
])
def test_malformed_allocation_is_one_line(data, words):
    with pytest.raises(UserError) as e:
        load(data, "spec.yaml")
    assert words in str(e.value) and "\n" not in str(e.value) and "spec.yaml" in str(e.value)
