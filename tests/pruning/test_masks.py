import pytest
import torch

from harness.pruning import masks

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_row_scope_prunes_floor_cols_times_s_in_every_row(s):
    scores = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    keep = masks.unstructured(scores, s, "row")
    assert ((~keep).sum(1) == int(16 * s)).all()
    # the pruned entries are the lowest of their row
    for r in range(8):
        if (~keep[r]).any():
            assert scores[r][~keep[r]].max() <= scores[r][keep[r]].min()


@pytest.mark.parametrize("scope", ["row", "layer"])
def test_ties_at_the_threshold_still_prune_exactly_k(scope):
    """Scores with many equal values (an already-pruned layer's zeros) prune exactly k."""
    scores = torch.rand(6, 20, generator=torch.Generator().manual_seed(3))
    scores[:, :12] = 0.0  # 12 tied lowest per row; pruning 10 must pick 10 of them
    keep = masks.unstructured(scores, 0.5, scope)
    per = (~keep).sum(1)
    assert int(per.sum()) == (60 if scope == "layer" else 6 * 10)
    if scope == "row":
        assert (per == 10).all()
    assert (scores[~keep] == 0).all()


def test_layer_scope_prunes_exact_count_over_matrix():
    scores = torch.rand(7, 13, generator=torch.Generator().manual_seed(1))
    keep = masks.unstructured(scores, 0.5, "layer")
    assert int((~keep).sum()) == int(7 * 13 * 0.5)
    assert scores[~keep].max() <= scores[keep].min()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_n_of_m_groups(n, m):
    scores = torch.rand(6, 32, generator=torch.Generator().manual_seed(2))
    keep = masks.n_of_m(scores, n, m)
    zeros = (~keep).reshape(6, 32 // m, m).sum(-1)
    assert (zeros == n).all()


@pytest.mark.parametrize("call", [
    lambda s: masks.unstructured(s, 1.0),
    lambda s: masks.unstructured(s, -0.1),
    lambda s: masks.n_of_m(s, 4, 4),
    lambda s: masks.n_of_m(s, 2, 5),
])
def test_invalid_specs_raise(call):
    with pytest.raises(ValueError):
        call(torch.rand(4, 16))


def test_kth_smallest_in_row_chunks_equals_sorting():
    import numpy as np

    values = np.random.default_rng(4).standard_normal((50, 30)).astype(np.float32)
    for chunk in (1, 64, 1 << 20):  # one row per chunk, a few rows, all at once
        kth = masks._kth_smallest(values, 7, chunk=chunk)
        assert np.array_equal(kth[:, 0], np.sort(values, axis=1)[:, 6])


def test_lowest_equals_topk_selection():
    scores = torch.randn(40, 96, generator=torch.Generator().manual_seed(5))
    idx = torch.topk(scores, 30, dim=1, largest=False).indices
    expect = torch.ones_like(scores, dtype=torch.bool).scatter_(1, idx, False)
    assert torch.equal(masks.lowest(scores, 30), expect)
