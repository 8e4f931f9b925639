"""The shipped `generic` layouts (harness/models/layouts/) on tiny random models of their
architectures: roles partition the Linears, a batch of two runs forward and generates, and
Wanda prunes every role end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from harness.models.adapter import ROLES
from harness.models.load import ModelSpec, adapter_for, load
from harness.pruning import stage
from harness.pruning.spec import load as load_spec
from harness.testing.tiny import tiny_llava
from harness.testing.tiny_more import BUILDERS

LAYOUTS = Path(__file__).resolve().parents[2] / "harness" / "models" / "layouts"
NAMES = list(BUILDERS)
# roles whose blocks hold no nn.Linear: Gemma3's projector is a pooling, a norm and a bare
# projection matrix (`mm_input_projection_weight`)
NO_LINEAR = {("gemma3", "bridge")}
# PaliGemma's processor builds its labels with np.array on torch tensors
pytestmark = [pytest.mark.unit,
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]
IMAGES = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
          for i in range(3)]


def build(name: str, seed: int = 0):
    model, proc = BUILDERS[name](seed=seed)
    return adapter_for(model, proc, "generic", layout=str(LAYOUTS / f"{name}.yaml"), name=name)


def linears_under(model: nn.Module, paths) -> set[int]:
    out = set()
    for p in paths:
        out |= {id(m) for m in model.get_submodule(p).modules() if isinstance(m, nn.Linear)}
    return out


@pytest.fixture(scope="module", params=NAMES)
def adapter(request):
    return build(request.param)


def test_every_shipped_layout_is_tested():
    assert {p.stem for p in LAYOUTS.glob("*.yaml")} == set(NAMES)


def test_roles_partition_the_linears(adapter):
    per_role = {r: {id(m) for m in adapter.role_linears(r).values()} for r in ROLES}
    for r in ROLES:
        assert adapter.blocks(r), f"role {r} has no block"
        assert bool(per_role[r]) != ((adapter.name, r) in NO_LINEAR), f"{r}'s Linears"
    for a in ROLES:
        for b in ROLES:
            if a < b:
                assert not per_role[a] & per_role[b], f"a Linear is in both {a} and {b}"
    # an exclusion may name a module some configs of the architecture lack (Gemma3's layout
    # names SigLIP's pooling head, which these toy models, like the real ones, leave out)
    present = {n for n, _ in adapter.model.named_modules()}
    excluded = linears_under(adapter.model, [p for p in adapter.layout.exclude if p in present])
    every = {id(m): n for n, m in adapter.model.named_modules() if isinstance(m, nn.Linear)}
    left = set(every) - set().union(*per_role.values()) - excluded
    assert not left, [every[i] for i in left]
    assert not excluded & set().union(*per_role.values()), "lm_head must not be pruned"


def test_blocks_are_ordered_and_named(adapter):
    for role in ROLES:
        for b in adapter.blocks(role):
            assert adapter.model.get_submodule(b.name) is b.module
    for role in ("vision", "language"):
        names = [b.name for b in adapter.blocks(role)]
        assert [n.rsplit(".", 1)[1] for n in names] == ["0", "1"], names


def test_prompts_hold_the_processors_image_placeholder(adapter):
    token = adapter.processor.image_token
    assert "{question}" in adapter.prompts.vqa
    for prompt in (adapter.prompts.question("what ?"), adapter.prompts.caption):
        assert prompt.count(token) == 1, (token, prompt)


def test_batch_of_two_runs_forward_and_generates(adapter):
    prompts = [adapter.prompt_for("what color is the circle ?"), adapter.prompt_for("")]
    batch = adapter.prepare(IMAGES[:2], prompts)
    assert batch["input_ids"].shape[0] == 2
    image_id = adapter.model.config.image_token_id
    per_row = (batch["input_ids"] == image_id).sum(1)
    assert per_row[0] > 0 and per_row[0] == per_row[1], per_row  # each prompt got its image
    out = adapter.forward(batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(out.logits).all()
    texts = adapter.generate(IMAGES, [prompts[0]] * 3, max_new_tokens=3, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) and len(t.split()) <= 3 for t in texts)


@pytest.mark.parametrize("name", NAMES)
def test_batched_generation_equals_one_by_one(name):
    """Left padding (and, for Qwen, M-RoPE positions) must not change the answers."""
    a = build(name, seed=3)
    prompts = [a.prompt_for(q) for q in ("what ?", "what color is the large circle ?", "")]
    assert (a.generate(IMAGES, prompts, max_new_tokens=4, batch_size=3) ==
            a.generate(IMAGES, prompts, max_new_tokens=4, batch_size=1))


@pytest.mark.parametrize("name", NAMES)
def test_saved_folder_loads_with_its_layout(name, tmp_path):
    """What a user does with a real checkpoint: a folder, `family: generic` and the layout."""
    a = build(name)
    a.model.save_pretrained(tmp_path)
    a.processor.save_pretrained(tmp_path)
    b = load(ModelSpec(name=str(tmp_path), adapter="generic",
                       layout=str(LAYOUTS / f"{name}.yaml"), device="cpu"))
    assert type(b.model) is type(a.model) and type(b.processor) is type(a.processor)
    prompts = [a.prompt_for("what ?"), a.prompt_for("")]
    assert (b.generate(IMAGES[:2], prompts, max_new_tokens=3) ==
            a.generate(IMAGES[:2], prompts, max_new_tokens=3))


def calibration_file(folder: Path, adapter, n: int = 2) -> Path:
    rows = []
    for i in range(n):
        Image.fromarray(IMAGES[i]).save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png",
                     "text": adapter.prompts.question("what color is the circle ?") + " red"})
    path = folder / "calibration.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# one batch: one forward pruning each Linear in a pre-hook; two: block by block, each block
# run on the captured inputs of the one before (Qwen's vision blocks take cu_seqlens and
# rotary embeddings as keywords)
@pytest.mark.parametrize("batch_size", [2, 1], ids=["one-forward", "block-by-block"])
@pytest.mark.parametrize("name", NAMES)
def test_wanda_prunes_every_role(name, batch_size, tmp_path):
    a = build(name)
    source = calibration_file(tmp_path, a)
    spec = load_spec({"method": "wanda",
                      "sparsity": {"vision": 0.5, "bridge": 0.5, "language": 0.5},
                      "calibration": {"source": str(source), "samples": 2,
                                      "batch_size": batch_size}})
    masks, rep = stage.run(a, spec, progress=False)
    assert set(masks) == set(a.all_linears())
    for role in ROLES:
        got = rep["roles"][role]
        if (name, role) in NO_LINEAR:
            assert got["params"] == 0
        else:
            assert got["params"] > 0 and got["sparsity"] == pytest.approx(0.5, abs=0.01), role
    out = a.forward(a.prepare(IMAGES[:2], [a.prompt_for("what ?")] * 2))
    assert torch.isfinite(out.logits).all()
    assert len(a.generate(IMAGES[:2], [a.prompt_for("what ?")] * 2, max_new_tokens=2)) == 2


class Spy:
    """A processor that records the images of each call."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, images, **kw):
        self.calls.append(images)
        return self.processor(images=images, **kw)


def test_gemma3_gets_one_list_of_images_per_prompt():
    a = build("gemma3")
    prompts = [a.prompt_for("what ?"), a.prompt_for("")]
    with pytest.raises(ValueError, match="number of"):  # why prepare must nest: flat is refused
        a.processor(images=[Image.fromarray(im) for im in IMAGES[:2]], text=prompts)
    a.processor = spy = Spy(a.processor)
    batch = a.prepare(IMAGES[:2], prompts)
    assert [len(c) for c in spy.calls] == [2, 2] and isinstance(spy.calls[1][0], list)
    assert batch["pixel_values"].shape[0] == 2
    one = a.prepare(IMAGES[:1], prompts[:1])  # a single image is one prompt's list already
    assert len(spy.calls) == 3 and one["pixel_values"].shape[0] == 1
    with pytest.raises(ValueError, match="number of"):  # a real mismatch: the first error
        a.prepare(IMAGES[:2], [prompts[0] + prompts[0], prompts[1]])


def test_flat_image_lists_stay_flat():
    """Processors that take a flat list (LLaVA's) are called once, as before."""
    model, proc = tiny_llava()
    a = adapter_for(model, proc)
    a.processor = spy = Spy(proc)
    a.prepare(IMAGES[:2], [a.prompt_for("what ?")] * 2)
    assert len(spy.calls) == 1 and all(isinstance(im, Image.Image) for im in spy.calls[0])
