"""One view of any VLM by role: `vision`, `bridge`, `language`.

Pruning, recovery and calibration reach into a model only through an `Adapter`: its ordered
transformer blocks per role, the prunable `nn.Linear` layers of a block, a calibration forward
and batched generation. A new architecture is a `Layout` (module paths per role) and a prompt
format, never an edit in pruning/.

A layout path names either a `ModuleList` (each child is a block, in order) or a single module
(one block). Linears outside every role (lm_head, OPT's project_in/out) are listed in `exclude`
so that a test can check the roles plus the exclusions cover every Linear of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from harness.models.layout import ROLES, Layout, Prompts, linear_path  # noqa: F401 - re-exported


@dataclass
class Block:
    role: str
    name: str  # full module path, e.g. model.language_model.layers.3
    module: nn.Module


@dataclass
class Adapter:
    model: nn.Module
    processor: Any
    layout: Layout
    family: str
    prompts: Prompts = field(default_factory=Prompts)
    name: str = ""
    residency: Any = None  # models/offload.Streamed when the model is offloaded

    def resident(self, module: nn.Module) -> AbstractContextManager:
        """`module` (a block) resident while the context runs: its weights in place (an
        offloaded model's are elsewhere between their turns; models/offload.py)."""
        return self.residency.resident(module) if self.residency is not None else nullcontext()

    def keeping(self) -> AbstractContextManager:
        """An offloaded model's units stay resident, within its spare memory, while the
        context runs (models/offload.py `Streamed.keeping`)."""
        return self.residency.keeping() if self.residency is not None else nullcontext()

    # ---- structure -------------------------------------------------------------------
    def blocks(self, role: str) -> list[Block]:
        out = []
        for path in self.layout.paths(role):
            mod = self.model.get_submodule(path)
            if isinstance(mod, nn.ModuleList):
                out += [Block(role, f"{path}.{i}", m) for i, m in enumerate(mod)]
            else:
                out.append(Block(role, path, mod))
        return out

    @staticmethod
    def linears(block: Block | nn.Module) -> dict[str, nn.Linear]:
        """Prunable Linears of a block, by path relative to it (`self_attn.q_proj`)."""
        mod = block.module if isinstance(block, Block) else block
        if isinstance(mod, nn.Linear):
            return {"": mod}
        return {n: m for n, m in mod.named_modules() if isinstance(m, nn.Linear)}

    def role_linears(self, role: str) -> dict[str, nn.Linear]:
        """Prunable Linears of a role, by full path."""
        out = {}
        for b in self.blocks(role):
            for rel, lin in self.linears(b).items():
                out[linear_path(b.name, rel)] = lin
        return out

    def all_linears(self) -> dict[str, nn.Linear]:
        """Prunable Linears of every role, by full path."""
        out: dict[str, nn.Linear] = {}
        for role in ROLES:
            out |= self.role_linears(role)
        return out

    def parameter_count(self, role: str) -> int:
        return sum(lin.weight.numel() for lin in self.role_linears(role).values())

    def prompt_for(self, text: str) -> str:
        """A request in this model's own format: text holding `<image>` is used as it is, an
        empty text asks for a caption, anything else is a question."""
        if "<image>" in text:
            return text
        return self.prompts.question(text) if text.strip() else self.prompts.caption

    # ---- running ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self.residency is not None:
            return self.residency.device
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        if self.residency is not None:
            return self.residency.dtype
        return next(self.model.parameters()).dtype

    @property
    def encoder_decoder(self) -> bool:
        """The language model is an encoder-decoder (T5 in BLIP-2): it pads prompts on the
        right, reads answers as decoder labels, and does not echo the prompt. Every branch
        on this lives in this class."""
        cfg = self.model.config
        text = getattr(cfg, "text_config", None)
        return bool(getattr(cfg, "is_encoder_decoder", False) or
                    getattr(text, "is_encoder_decoder", False))

    def prepare(self, images: Sequence[Any], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Processor inputs on the model's device; floating tensors in the model's dtype."""
        images = [_as_pil(im) for im in images]
        # A decoder-only LM generates after the prompt: pad on the left. An encoder (T5 in
        # BLIP, the Q-Former's instruction) pads on the right, so that padding never sits
        # between the query tokens and the text, where relative or absolute positions see it.
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "right" if self.encoder_decoder else "left"
        qtok = getattr(self.processor, "qformer_tokenizer", None)
        if qtok is not None:
            qtok.padding_side = "right"
        enc = self._encode(images, list(prompts))
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in enc.items() if isinstance(v, torch.Tensor)}

    def _encode(self, images: list[Image.Image], prompts: list[str]) -> Any:
        """The processor's output for one image per prompt. Most processors take the images
        as one flat list; some (Gemma3's) read a flat list as every image of one prompt and
        refuse it: those get one list of images per prompt."""
        kw = {"text": prompts, "return_tensors": "pt", "padding": True}
        try:
            return self.processor(images=images, **kw)
        except ValueError as flat:
            if len(images) < 2 or len(images) != len(prompts):
                raise
            try:
                return self.processor(images=[[im] for im in images], **kw)
            except ValueError:
                raise flat from None

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """A calibration forward: the whole model, no labels, no cache.

        An encoder-decoder LM with no `decoder_input_ids` gets its start token, so its
        decoder blocks run too."""
        if self.encoder_decoder and "decoder_input_ids" not in batch:
            start = self.model.generation_config.decoder_start_token_id or 0
            n = batch["input_ids"].shape[0]
            batch = {**batch, "decoder_input_ids": torch.full((n, 1), start, device=self.device)}
        return self.model(**batch, use_cache=False)

    def teacher_forced(self, images: Sequence[Any], prompts: Sequence[str],
                       texts: Sequence[str], answers: Sequence[list[int]]
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs and labels (-100 outside the answers) to score or train answers.

        Decoder-only LMs read `texts` (each prompt and its answer as one string), left-padded
        so that each answer ends its row: its labels are the row's last len(answer) tokens.
        Encoder-decoder LMs read the prompts; the answer token ids are the decoder's, passed
        as `labels` too (the model shifts them right into its decoder inputs)."""
        if self.encoder_decoder:
            batch = self.prepare(images, prompts)
            labels = torch.full((len(answers), max(map(len, answers))), -100, dtype=torch.long)
            for b, a in enumerate(answers):
                labels[b, :len(a)] = torch.tensor(a)
            labels = labels.to(self.device)
            return {**batch, "labels": labels}, labels
        batch = self.prepare(images, texts)
        labels = torch.full_like(batch["input_ids"], -100)
        for b, a in enumerate(answers):
            labels[b, -len(a):] = batch["input_ids"][b, -len(a):]
        return batch, labels

    def aligned(self, logits: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) with position t's logits predicting labels[t]: a decoder-only
        LM's are shifted by one."""
        if self.encoder_decoder:
            return logits, labels
        return logits[:, :-1], labels[:, 1:]

    @torch.no_grad()
    def generate(self, images: Sequence[Any], prompts: Sequence[str], max_new_tokens: int = 16,
                 batch_size: int = 32, progress: bool = False, **generate_kwargs: Any
                 ) -> list[str]:
        """Answers for (image, prompt) pairs, in batches, left-padded, KV-cached; greedy unless
        `generate_kwargs` (passed to HF `generate`) say otherwise."""
        kw = {"do_sample": False, "num_beams": 1, **generate_kwargs}

        out: list[str] = []
        starts = range(0, len(prompts), batch_size)
        for s in tqdm(starts, desc="generate", disable=not progress):
            batch = self.prepare(images[s:s + batch_size], prompts[s:s + batch_size])
            ids = self.model.generate(**batch, max_new_tokens=max_new_tokens, **kw)
            n_in = batch["input_ids"].shape[1]
            if not self.encoder_decoder and ids.shape[1] > n_in and torch.equal(
                    ids[:, :n_in], batch["input_ids"]):
                ids = ids[:, n_in:]  # decoder-only models echo the prompt
            out += [t.strip() for t in
                    self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


def _as_pil(im: Any) -> Image.Image:
    if isinstance(im, Image.Image):
        return im.convert("RGB")
    if isinstance(im, np.ndarray):
        return Image.fromarray(im).convert("RGB")
    raise TypeError(f"expected a PIL image or an HxWx3 uint8 array, got {type(im).__name__}")
