import pytest
import torch

from harness.pruning.stats import InputStats

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("needs", ["norms", "moments", "hessian"])
def test_statistics_over_kept_tokens_equal_those_of_the_kept_rows(needs):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 6, generator=g)
    keep = torch.rand(3, 10, generator=g) > 0.3
    masked, rows = InputStats(6, needs), InputStats(6, needs)
    for _ in range(2):  # accumulates over batches
        masked.add(x, keep)
        rows.add(x[keep])
    flat = x[keep]
    assert masked.tokens == rows.tokens == 2 * int(keep.sum())
    assert torch.allclose(masked.norm, rows.norm, atol=1e-5)
    assert torch.allclose(masked.norm, (2 * flat.pow(2).sum(0)).sqrt(), atol=1e-5)
    if needs == "moments":
        assert torch.allclose(masked.mean, flat.mean(0), atol=1e-5)
    if needs == "hessian":
        h = masked.hessian
        assert torch.allclose(h, flat.T @ flat / flat.shape[0], atol=1e-5)
        assert torch.equal(h, rows.hessian)
