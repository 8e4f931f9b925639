import pytest
import torch

from harness.pruning import masks


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_row_scope_prunes_floor_cols_times_s_in_every_row(s):
    scores = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    keep = masks.unstructured(scores, s, "row")
    assert ((~keep).sum(1) == int(16 * s)).all()
    # the pruned entries are the lowest of their row
    for r in range(8):
        if (~keep[r]).any():
            assert scores[r][~keep[r]].max() <= scores[r][keep[r]].min()


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
