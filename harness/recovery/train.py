"""The recovery training loop: AdamW on the adapters, cosine schedule, gradient accumulation,
optional distillation from the dense teacher, a progress bar with the loss.

A NaN or a diverging loss raises `RecoveryFailed`: the sweep records the cell as failed and
goes on."""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from harness.models.adapter import Adapter
from harness.recovery.data import answer_logits, encode, samples
from harness.recovery.spec import RecoverySpec
from harness.recovery.teacher import Teacher

WINDOW = 5  # divergence: the mean loss of the last WINDOW steps is >= GROWTH x the first
GROWTH = 10.0  # step's and above half of ln(vocabulary), i.e. near-uniform guessing; or it is
UNIFORM = 0.9  # above UNIFORM x ln(vocabulary) (a collapsed model guessing uniformly) from a
#                first step well below half of that (a model that knew something)


class RecoveryFailed(RuntimeError):
    """Training produced a NaN or diverged; the message says at which step."""


def lr_at(step: int, spec: RecoverySpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * t))


def loss_on(adapter: Adapter, model: nn.Module, batch: dict, labels: torch.Tensor,
            spec: RecoverySpec, teacher: Teacher | None) -> torch.Tensor:
    logits, target = answer_logits(adapter, model(**batch).logits, labels)
    task = F.cross_entropy(logits.float(), target)
    d = spec.distill
    if d is None or d.weight == 0 or teacher is None:
        return task
    with torch.no_grad(), teacher.active(model):
        t_logits, _ = answer_logits(adapter, model(**batch).logits, labels)
    temp = d.temperature
    kl = F.kl_div(F.log_softmax(logits.float() / temp, -1),
                  F.log_softmax(t_logits.float() / temp, -1),
                  log_target=True, reduction="batchmean") * temp * temp
    return (1 - d.weight) * task + d.weight * kl


def train(adapter: Adapter, model: nn.Module, spec: RecoverySpec, teacher: Teacher | None,
          progress: bool = True) -> dict:
    """Train the model's trainable parameters (the adapters); returns the loss history."""
    torch.manual_seed(spec.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    model.train()
    history, first, t0 = [], None, time.perf_counter()
    log_vocab = math.log(len(adapter.processor.tokenizer))
    bar = tqdm(range(spec.steps), desc=f"recover {spec.method}", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec)
        total = 0.0
        for micro in range(spec.grad_accum):
            start = (step * spec.grad_accum + micro) * spec.batch_size
            batch, labels = encode(adapter, samples(spec.data, spec.seed, start, spec.batch_size))
            loss = loss_on(adapter, model, batch, labels, spec, teacher)
            value = loss.item()
            if not math.isfinite(value):
                raise RecoveryFailed(f"loss is {value} at step {step}")
            (loss / spec.grad_accum).backward()
            total += value / spec.grad_accum
        first = total if first is None else first
        history.append(total)
        recent = sum(history[-WINDOW:]) / len(history[-WINDOW:])
        grew = recent >= GROWTH * first and recent > 0.5 * log_vocab
        collapsed = recent > UNIFORM * log_vocab and first < 0.5 * log_vocab
        if len(history) >= WINDOW and (grew or collapsed):
            raise RecoveryFailed(f"loss diverged by step {step}: {recent:.3g} over the last "
                                 f"{WINDOW} steps, from {first:.3g}")
        nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{total:.4f}")
    model.eval()
    seconds = time.perf_counter() - t0
    return {"loss": history, "seconds": seconds, "step_seconds": seconds / spec.steps}
