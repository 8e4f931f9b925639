"""The model class on its own: log-likelihoods, stop sequences, multi-round, BLIP families."""

import numpy as np
import pytest
import torch
from lmms_eval.api.instance import Instance

from harness.evaluation.lmms_model import VlmpruneLM
from harness.evaluation.run import evaluate
from harness.models.load import adapter_for, load
from harness.testing.tiny import tiny_blip2, tiny_instructblip

pytestmark = pytest.mark.integration

IMAGES = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
          for i in range(3)]
DOCS = [{"q": "what color is the circle ?", "a": "red"},
        {"q": "how many objects are there ?", "a": "two"},
        {"q": "where is the red circle relative to the blue square ?", "a": "left"}]


def visual(doc):
    return [IMAGES[DOCS.index(doc)]]


def request(kind: str, i: int, *args) -> Instance:
    return Instance(request_type=kind, arguments=args, idx=0,
                    metadata={"task": "t", "doc_id": i, "repeats": 1})


def wrap(adapter, batch_size: int = 8) -> VlmpruneLM:
    lm = VlmpruneLM(adapter=adapter, batch_size=batch_size, progress=False)
    lm.task_dict = {"t": {"test": DOCS}}
    return lm


def reference_loglik(adapter, image, prompt: str, cont: str) -> float:
    """One sample, no padding, no batching."""
    tok = adapter.processor.tokenizer
    ids = tok(cont, add_special_tokens=False).input_ids
    if adapter.model.config.text_config.model_type == "t5":
        batch = adapter.prepare([image], [prompt])
        logits = adapter.model(**batch, labels=torch.tensor([ids])).logits[0]
    else:
        batch = adapter.prepare([image], [prompt + cont])
        logits = adapter.model(**batch).logits[0, -len(ids) - 1:-1]
    return float(torch.log_softmax(logits.float(), -1)[torch.arange(len(ids)), ids].sum())


@pytest.mark.parametrize("family", ["shapes-llava", "instructblip-t5"])
def test_loglikelihood_batched_equals_one_by_one(family):
    if family == "shapes-llava":
        adapter = load("shapes-llava")
    else:
        adapter = adapter_for(*tiny_instructblip("t5"))
    lm = wrap(adapter, batch_size=3)
    reqs = [request("loglikelihood", i, d["q"], f" {d['a']}", visual, i, "t", "test")
            for i, d in enumerate(DOCS)]
    with torch.no_grad():
        got = lm.loglikelihood(reqs)
        want = [reference_loglik(adapter, IMAGES[i], lm._prompt(d["q"]), f" {d['a']}")
                for i, d in enumerate(DOCS)]
    assert [g[0] for g in got] == pytest.approx(want, abs=1e-4)
    assert all(isinstance(g[1], bool) for g in got)


def test_generate_until_stops_at_until_and_respects_max_new_tokens():
    adapter = load("shapes-llava")
    lm = wrap(adapter)
    full = adapter.generate(IMAGES, [adapter.prompts.caption] * 3, max_new_tokens=32)
    reqs = [request("generate_until", i, "", {"until": ["and"], "max_new_tokens": 32}, visual,
                    i, "t", "test") for i in range(3)]
    cut = lm.generate_until(reqs)
    assert cut == [f.split("and")[0].strip() for f in full]
    short = lm.generate_until([request("generate_until", 0, "", {"max_new_tokens": 2},
                                       visual, 0, "t", "test")])
    assert len(short[0].split()) <= 2


def test_generate_until_multi_round_follows_the_task_protocol():
    adapter = load("shapes-llava")
    lm = wrap(adapter)
    seen = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        seen.append((round_idx, list(previous_output)))
        done = round_idx == 2
        return visual(doc), "what shape is the red object ?", done, previous_output, None

    reqs = [request("generate_until_multi_round", i, d["q"], {"max_new_tokens": 4}, visual,
                    doc_to_text, i, "t", "test") for i, d in enumerate(DOCS[:2])]
    out = lm.generate_until_multi_round(reqs)
    assert [len(o) for o in out] == [2, 2]
    first = adapter.generate(IMAGES[:2], [adapter.prompts.question(d["q"]) for d in DOCS[:2]],
                             max_new_tokens=4, batch_size=1)
    assert [o[0] for o in out] == first
    assert seen[0] == (1, [first[0]]) and seen[1][0] == 2


@pytest.mark.parametrize("build", [lambda: tiny_blip2("opt"), lambda: tiny_instructblip("t5")],
                         ids=["blip2-opt", "instructblip-t5"])
def test_tiny_blip_families_run_the_shapes_tasks(build):
    adapter = adapter_for(*build(), name="tiny")
    r = evaluate(adapter, "shapes", run_hash="tiny", limit=3, progress=False)
    assert len(r.samples["shapes_vqa"]) == 3 and len(r.samples["shapes_caption"]) == 3
    assert all(isinstance(s["prediction"], str) for s in r.samples["shapes_vqa"])
    assert 0 <= r.metrics["shapes_vqa/exact_match"] <= 1
