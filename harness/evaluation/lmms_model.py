"""`vlmprune`: an lmms-eval model class over any `Adapter` already in memory.

A sweep cell prunes and recovers a model, then hands it to `VlmpruneLM(adapter=...,
run_hash=cell_hash)`; lmms-eval's own command line builds it from a path instead
(`python -m lmms_eval --model vlmprune --model_args pretrained=PATH --tasks shapes_vqa`,
registered through the `lmms_eval.models` entry point in pyproject.toml).

Two lmms-eval habits are handled here: `evaluate()` ends with `lm.clean()`, which would delete
the wrapped model (overridden: the caller owns the model), and the response cache keys on the
model's `repr` (it carries the run's hash, so one cell never reads another's answers).

Prompts: a context holding `<image>` is used as it is. A caption task (one that scores its
answers with caption metrics, `suite.task_kind`) gets the model's own caption prompt whatever
text the task sends (lmms-eval's NoCaps and Flickr30k send an instruction, which phrased as a
question gets a one-word answer); so does an empty context. Anything else is a question,
phrased in the model's VQA format (`Adapter.prompts`). `evaluate()` tells the wrapper each
task's kind; under lmms-eval's own command line it is looked up in lmms-eval's task index.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from harness.evaluation.suite import task_kind, task_manager
from harness.models.adapter import Adapter
from harness.models.load import ModelSpec, load

MAX_ROUNDS = 32
_GENERATE_KEYS = ("max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")


class VlmpruneLM(lmms):
    """Batched, left-padded, KV-cached generation and log-likelihoods for an `Adapter`."""

    is_simple = True

    def __init__(self, pretrained: str | None = None, adapter: Adapter | None = None,
                 run_hash: str = "", batch_size: int | str = 32, max_new_tokens: int = 32,
                 device: str | None = "auto", dtype: str = "float32", progress: bool = True,
                 **kwargs: Any) -> None:
        super().__init__()
        if adapter is None:
            if pretrained is None:
                raise ValueError("vlmprune: give model_args pretrained=NAME_OR_PATH")

            adapter = load(ModelSpec(name=pretrained, dtype=dtype,
                                     device=device if device not in (None, "") else "auto"))
        self.adapter = adapter
        self.run_hash = run_hash
        self.batch_size_per_gpu = 32 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.progress = progress
        self.task_kinds: dict[str, str] = {}  # task -> "caption" | "vqa"

    def __repr__(self) -> str:
        return f"VlmpruneLM(model={self.adapter.name or self.adapter.family!r}, " \
               f"run={self.run_hash!r})"

    def clean(self) -> None:
        """lmms-eval's `clean()` deletes every nn.Module attribute; the model is the caller's,
        and a wrapper must survive repeated evaluations."""

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- helpers ---------------------------------------------------------------------------
    def _prompt(self, context: str, task: str | None = None) -> str:
        if task is not None and "<image>" not in context and self._kind(task) == "caption":
            return self.adapter.prompts.caption
        return self.adapter.prompt_for(context)

    def _kind(self, task: str) -> str:
        if task not in self.task_kinds:
            tm = task_manager(True)
            known = task in tm.all_tasks
            self.task_kinds[task] = task_kind(tm._get_config(task)) if known else "vqa"
        return self.task_kinds[task]

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def _image(self, doc_to_visual, doc: dict, task: str, doc_id: int):
        visuals = doc_to_visual(doc)
        if not visuals:
            raise ValueError(f"vlmprune: task {task} doc {doc_id} has no image; "
                             "the model class evaluates image-text tasks")
        return visuals[0]

    def _generate(self, images: list, contexts: list[str], gen_kwargs: dict,
                  task: str | None = None) -> list[str]:
        kw = dict(gen_kwargs)
        until = kw.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        args = {k: kw[k] for k in _GENERATE_KEYS if k in kw}
        args.setdefault("max_new_tokens", self.max_new_tokens)
        temperature = float(args.pop("temperature", 0) or 0)
        args["do_sample"] = temperature > 0  # greedy unless a task asks for a temperature
        if args["do_sample"]:
            args["temperature"] = temperature
        else:
            args.pop("top_p", None)
        outs = self.adapter.generate(images, [self._prompt(c, task) for c in contexts],
                                     batch_size=len(contexts), **args)
        return [_cut(o, until) for o in outs]

    def _batches(self, requests: list[Instance]):
        """Chunks of request indices of one task with equal generation kwargs (lmms-eval sends
        every task's requests at once), longest contexts first."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[json.dumps([r.args[4], r.args[1]], sort_keys=True, default=str)].append(i)
        for idx in groups.values():
            idx.sort(key=lambda i: -len(requests[i].args[0]))
            for s in range(0, len(idx), self.batch_size):
                yield idx[s:s + self.batch_size]

    # ---- lmms-eval interface ---------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="vlmprune generate", disable=not self.progress)
        for chunk in self._batches(requests):
            args = [requests[i].args for i in chunk]
            images = [self._image(a[2], self._doc(a[4], a[5], a[3]), a[4], a[3]) for a in args]
            texts = self._generate(images, [a[0] for a in args], args[0][1], args[0][4])
            for i, a, t in zip(chunk, args, texts, strict=True):
                out[i] = t
                self.cache_hook.add_partial("generate_until", (a[0], a[1]), t)
            bar.update(len(chunk))
        bar.close()
        return [o if o is not None else "" for o in out]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        tok = self.adapter.processor.tokenizer
        bar = tqdm(total=len(requests), desc="vlmprune loglikelihood", disable=not self.progress)
        for s in range(0, len(requests), self.batch_size):
            chunk = [r.args for r in requests[s:s + self.batch_size]]
            conts, images, prompts = [], [], []
            for context, target, doc_to_visual, doc_id, task, split in chunk:
                doc = self._doc(task, split, doc_id)  # fetched once: it may decode an image
                conts.append(target if isinstance(target, str) else target(doc))
                images.append(self._image(doc_to_visual, doc, task, doc_id))
                prompts.append(self._prompt(context, task))
            cont_ids = [tok(c, add_special_tokens=False).input_ids for c in conts]
            texts = [p + c for p, c in zip(prompts, conts, strict=True)]
            out += self._loglik(images, prompts, texts, cont_ids)
            bar.update(len(chunk))
        bar.close()
        return out

    def _loglik(self, images, prompts, texts, cont_ids) -> list[tuple[float, bool]]:
        batch, labels = self.adapter.teacher_forced(images, prompts, texts, cont_ids)
        logits = self.adapter.model(**batch, use_cache=False).logits
        logits, labels = self.adapter.aligned(logits, labels)
        res = []
        for row_logits, row_labels in zip(logits, labels, strict=True):
            keep = row_labels != -100  # this row's continuation
            lp = torch.log_softmax(row_logits[keep].float(), dim=-1)
            target = row_labels[keep]
            res.append((float(lp.gather(1, target[:, None]).sum()),
                        bool((lp.argmax(-1) == target).all())))
        return res

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """lmms-eval's multi-round protocol: round 0 answers the context; each later round
        asks the task's `doc_to_text(doc, previous_output=..., round_idx=...,
        previous_round_info=...)` for (visuals, context, terminal, round results, info)."""
        out = []
        for r in tqdm(requests, desc="vlmprune multi-round", disable=not self.progress):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = r.args
            doc = self._doc(task, split, doc_id)
            image = self._image(doc_to_visual, doc, task, doc_id)
            rounds: list[str] = []
            info = None
            for k in range(MAX_ROUNDS):
                if k > 0:
                    visuals, context, terminal, rounds, info = doc_to_text(
                        doc, previous_output=list(rounds), round_idx=k, previous_round_info=info)
                    rounds = list(rounds)
                    if terminal:
                        break
                    image = visuals[0] if visuals else image
                rounds.append(self._generate([image], [context], gen_kwargs, task)[0])
            out.append(rounds)
        return out


def _cut(text: str, until: list[str]) -> str:
    """The text up to the first stop sequence."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text.strip()

