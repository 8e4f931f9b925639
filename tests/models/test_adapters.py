"""Every adapter on a tiny random model: roles partition the Linears, forward and generate run."""

import numpy as np
import pytest
import torch
from torch import nn

from harness.models.adapter import ROLES
from harness.models.load import adapter_for
from harness.testing.tiny import tiny_blip2, tiny_instructblip, tiny_llava

pytestmark = pytest.mark.unit

BUILDERS = {
    "llava": lambda: tiny_llava(),
    "blip2-opt": lambda: tiny_blip2("opt"),
    "blip2-t5": lambda: tiny_blip2("t5"),
    "instructblip-t5": lambda: tiny_instructblip("t5"),
    "instructblip-llama": lambda: tiny_instructblip("llama"),
}
IMAGES = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
          for i in range(3)]


def linears_under(model: nn.Module, paths) -> set[int]:
    out = set()
    for p in paths:
        out |= {id(m) for m in model.get_submodule(p).modules() if isinstance(m, nn.Linear)}
    return out


@pytest.fixture(scope="module", params=list(BUILDERS))
def adapter(request):
    model, proc = BUILDERS[request.param]()
    return adapter_for(model, proc)


def test_roles_partition_the_linears(adapter):
    per_role = {r: {id(m) for m in adapter.role_linears(r).values()} for r in ROLES}
    for r in ROLES:
        assert per_role[r], f"role {r} has no prunable Linear"
    for a in ROLES:
        for b in ROLES:
            if a < b:
                assert not per_role[a] & per_role[b], f"a Linear is in both {a} and {b}"
    covered = set().union(*per_role.values()) | linears_under(adapter.model,
                                                              adapter.layout.exclude)
    every = {id(m): n for n, m in adapter.model.named_modules() if isinstance(m, nn.Linear)}
    assert set(every) - covered == set(), [every[i] for i in set(every) - covered]
    excluded = linears_under(adapter.model, adapter.layout.exclude)
    assert not excluded & set().union(*per_role.values()), "lm_head must not be pruned"


def test_blocks_are_ordered_and_named(adapter):
    for role in ROLES:
        blocks = adapter.blocks(role)
        for b in blocks:
            assert adapter.model.get_submodule(b.name) is b.module
    names = [b.name for b in adapter.blocks("language")]
    idx = [int(n.rsplit(".", 1)[1]) for n in names if n.rsplit(".", 1)[1].isdigit()]
    assert idx[:2] == [0, 1]


def test_calibration_forward_and_generate(adapter):
    prompts = [adapter.prompts.question("what color is the circle ?")] * 3
    batch = adapter.prepare(IMAGES, prompts)
    out = adapter.forward(batch)
    assert out.logits.shape[0] == 3 and torch.isfinite(out.logits).all()
    texts = adapter.generate(IMAGES, prompts, max_new_tokens=3, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert all(len(t.split()) <= 3 for t in texts), texts


def test_batched_generation_equals_one_by_one():
    """Left padding must not change answers: batch of mixed lengths vs batch size 1."""
    model, proc = tiny_llava(seed=3)
    a = adapter_for(model, proc)
    prompts = [a.prompts.question(q) for q in
               ("what ?", "what color is the large circle ?", "how many objects are there ?")]
    together = a.generate(IMAGES, prompts, max_new_tokens=4, batch_size=3)
    alone = a.generate(IMAGES, prompts, max_new_tokens=4, batch_size=1)
    assert together == alone
