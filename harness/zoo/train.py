"""Train shapes-llava from scratch, seeded and reproducible (`make zoo`).

Two stages, because end-to-end training from scratch stalls on this budget:
1. the vision tower alone, on a per-patch objective: each 16x16 patch is one grid cell, and a
   linear head reads its colour, shape, size, row and column from the patch token;
2. the whole model on VQA answers and captions (loss on the answer tokens only), the vision
   tower at a lower learning rate so that stage 1's features survive, with two auxiliary
   losses that teach binding: `grounding_loss` (in LM layer 2, head k of the last prompt token
   attends the k-th object the question names) and `position_loss` (linear probes read that
   object's row and column from the head's output).
Finally the weights are rescaled into outlier form (`outliers.py`, function-preserving).

Samples are drawn from the deterministic train split, never from validation or test.
The committed weights are this recipe with its defaults (`make zoo`, about 50 minutes on
2 cores); see docs/decisions/002-shapes-llava.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harness.world.scene import COLORS, GRID, SHAPES, SIZES, Obj, Scene, render, sample_scene
from harness.world.splits import caption_sample, vqa_sample
from harness.world.text import QA
from harness.zoo.build import build_model, save
from harness.zoo.prompts import caption_prompt, vqa_prompt

log = logging.getLogger(__name__)

COLOR_IDS = {c: i + 1 for i, c in enumerate(COLORS)}  # 0 = empty cell
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
SIZE_IDS = {s: i + 1 for i, s in enumerate(SIZES)}


def pixels(images: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, 64, 64) in [-1, 1], as the saved CLIPImageProcessor (mean = std = 0.5) gives."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def patch_batch(step: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and per-cell targets (B, 16, 5): colour, shape, size, row, col."""
    images, targets = [], []
    for j in range(batch):
        scene = sample_scene(np.random.default_rng([1000, 7, step, j]))
        t = np.zeros((GRID * GRID, 5), dtype=np.int64)
        t[:, 3] = np.arange(GRID * GRID) // GRID
        t[:, 4] = np.arange(GRID * GRID) % GRID
        for o in scene.objects:
            t[o.row * GRID + o.col, :3] = (COLOR_IDS[o.color], SHAPE_IDS[o.shape], SIZE_IDS[o.size])
        images.append(render(scene))
        targets.append(t)
    return pixels(images), torch.from_numpy(np.stack(targets))


def pretrain_vision(model, steps: int, batch: int, lr: float) -> None:
    tower = model.model.vision_tower
    d = tower.config.hidden_size
    heads = nn.ModuleList([nn.Linear(d, n) for n in
                           (len(COLORS) + 1, len(SHAPES) + 1, len(SIZES) + 1, GRID, GRID)])
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    bar = tqdm(range(steps), desc="vision pretrain")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * cosine(step, steps, 100)
        x, y = patch_batch(step, batch)
        h = tower(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 1:]
        loss = sum(nn.functional.cross_entropy(head(h).flatten(0, 1), y[..., k].flatten())
                   for k, head in enumerate(heads))
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")


def referents(scene: Scene, qa: QA) -> list[Obj]:
    """The objects a question names, in the order it names them (none for counts)."""
    words = qa.question.split()
    if qa.qtype in ("color", "size"):
        return [scene.by_shape(next(w for w in words if w in SHAPES))]
    if qa.qtype == "shape":
        colour = next(w for w in words if w in COLORS)
        return [next(o for o in scene.objects if o.color == colour)]
    if qa.qtype == "spatial":
        shapes = [w for w in words if w in SHAPES]
        return [scene.by_shape(s) for s in shapes]
    return []


def text_batch(tokenizer, step: int, batch: int, split: str = "train"):
    """A mixed batch: 3/4 VQA (types cycle), 1/4 captions; labels on the answer only.

    Also returns, per sample, its question type ("caption" for captions) and the grid cells of
    the objects the question names (the attention targets of `grounding_loss`)."""
    images, prompts, answers, kinds = [], [], [], []
    cells: list = []
    for j in range(batch):
        i = step * batch + j
        if i % 4 == 3:
            scene, text = caption_sample(split, i)
            prompts.append(caption_prompt())
            kinds.append("caption")
            cells.append([])
        else:
            s = vqa_sample(split, i)
            scene, text = s.scene, s.qa.answer
            prompts.append(vqa_prompt(s.qa.question))
            kinds.append(s.qa.qtype)
            cells.append([o.row * GRID + o.col for o in referents(s.scene, s.qa)])
        images.append(render(scene))
        answers.append(text)
    enc = encode(tokenizer, prompts, answers)
    return pixels(images), enc, kinds, cells


def grounding_loss(attentions: tuple[torch.Tensor, ...], enc: dict, cells: list[list[int]],
                   layer: int) -> torch.Tensor:
    """Teach binding: in one LM layer, head k of the last prompt token attends the k-th named
    object's image token (-log of its attention weight). Image tokens open the prompt, one per
    grid cell, so cell c is position c."""
    attn = attentions[layer]  # (B, H, T, T)
    query = enc["prompt_len"] - 1  # the position that predicts the first answer token
    terms = [-torch.log(attn[b, k, query[b], c] + 1e-6)
             for b, cs in enumerate(cells) for k, c in enumerate(cs)]
    return torch.stack(terms).mean() if terms else attn.new_zeros(())


def encode(tokenizer, prompts: list[str], answers: list[str], n_image: int = GRID * GRID):
    """Right-padded input ids with labels on answer + eos; image token expanded in place."""
    rows, labels = [], []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = tokenizer(p.replace("<image>", "<image>" * n_image)).input_ids
        a_ids = tokenizer(a).input_ids + [tokenizer.eos_token_id]
        rows.append(p_ids + a_ids)
        labels.append([-100] * len(p_ids) + a_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    prompt_len = torch.tensor([sum(x == -100 for x in r) for r in labels])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab, "prompt_len": prompt_len}


@torch.no_grad()
def teacher_forced_accuracy(model, tokenizer, n: int = 512) -> tuple[float, dict]:
    """Share of validation samples whose every answer token is the argmax (fast proxy),
    overall and by question kind."""
    model.eval()
    x, enc, kinds, _ = text_batch(tokenizer, 0, n, split="validation")
    logits = model(pixel_values=x, input_ids=enc["input_ids"],
                   attention_mask=enc["attention_mask"]).logits
    pred = logits[:, :-1].argmax(-1)
    lab = enc["labels"][:, 1:]
    ok = ((pred == lab) | (lab == -100)).all(dim=1)
    model.train()
    by_kind = {k: ok[[i for i, x in enumerate(kinds) if x == k]].float().mean().item()
               for k in sorted(set(kinds))}
    return ok.float().mean().item(), by_kind


def position_loss(heads_in: torch.Tensor, enc: dict, cells: list[list[int]],
                  probes: nn.ModuleList, head_dim: int) -> torch.Tensor:
    """Make the grounded heads carry *where* their object is: from head k's output at the
    query position (the input of o_proj), linear probes read the k-th named object's row and
    column. Without it the gathered values hold colour and shape but no position, and spatial
    questions stay at chance (measured: row probe 0.44, column 0.31 at step 900)."""
    query = enc["prompt_len"] - 1
    xs, rows, cols = [], [], []
    for b, cs in enumerate(cells):
        for k, c in enumerate(cs):
            xs.append(heads_in[b, query[b], k * head_dim:(k + 1) * head_dim])
            rows.append(c // GRID)
            cols.append(c % GRID)
    if not xs:
        return heads_in.new_zeros(())
    x = torch.stack(xs)
    return (nn.functional.cross_entropy(probes[0](x), torch.tensor(rows)) +
            nn.functional.cross_entropy(probes[1](x), torch.tensor(cols)))


@dataclass(frozen=True)
class Recipe:
    """The training recipe (defaults: the committed model's; `make zoo`)."""

    seed: int = 0
    vision_steps: int = 400
    steps: int = 1800
    batch: int = 128
    lr: float = 1e-3
    vision_lr_scale: float = 0.3
    eval_every: int = 300
    stop_at: int | None = None  # stop after this step of the schedule
    grounding: float = 0.3  # weight of the attention-grounding loss (0: off)
    grounding_layer: int = 2
    position: float = 0.3  # weight of the position probes on the grounded heads (0: off)
    outliers: float = 0.75  # sigma of the final outlier-channel rescaling (0: off)


def train(out: Path, r: Recipe) -> None:
    seed, vision_steps, steps, batch, lr = r.seed, r.vision_steps, r.steps, r.batch, r.lr
    grounding, grounding_layer, position = r.grounding, r.grounding_layer, r.position
    torch.manual_seed(seed)
    model, processor = build_model(seed)
    if grounding > 0:
        model.set_attn_implementation("eager")  # attention weights for grounding_loss
    tok = processor.tokenizer
    model.train()
    t0 = time.time()
    pretrain_vision(model, vision_steps, batch, lr=1e-3)
    vision = list(model.model.vision_tower.parameters())
    vis_ids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in vis_ids]
    cfg = model.config.text_config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    probes = nn.ModuleList([nn.Linear(head_dim, GRID), nn.Linear(head_dim, GRID)])
    captured: dict[str, torch.Tensor] = {}
    if position > 0:
        o_proj = model.model.language_model.layers[grounding_layer].self_attn.o_proj
        o_proj.register_forward_pre_hook(lambda mod, args: captured.__setitem__("x", args[0]))
    opt = torch.optim.AdamW([{"params": rest + list(probes.parameters()), "scale": 1.0},
                             {"params": vision, "scale": r.vision_lr_scale}],
                            lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    bar = tqdm(range(steps), desc="train")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"] * cosine(step, steps, 200)
        x, enc, _, cells = text_batch(tok, step, batch)
        res = model(pixel_values=x, input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"], labels=enc["labels"],
                    output_attentions=grounding > 0)
        loss = res.loss
        if grounding > 0:
            loss = loss + grounding * grounding_loss(res.attentions, enc, cells, grounding_layer)
        if position > 0:
            loss = loss + position * position_loss(captured["x"], enc, cells, probes, head_dim)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % r.eval_every == 0 or step + 1 == steps:
            acc, by_kind = teacher_forced_accuracy(model, tok)
            log.info("step %d loss %.4f val_tf_acc %.4f %s elapsed %.0fs", step + 1, loss.item(),
                     acc, " ".join(f"{k}={v:.2f}" for k, v in by_kind.items()),
                     time.time() - t0)
            save(model, processor, out)
        if r.stop_at is not None and step + 1 == r.stop_at:
            break
    model.eval()
    model.set_attn_implementation("sdpa")
    if r.outliers > 0:
        from harness.zoo.outliers import rescale

        rescale(model, r.outliers, seed)
    save(model, processor, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "shapes-llava")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vision-steps", type=int, default=400)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vision-lr-scale", type=float, default=0.3)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop after this step of the schedule")
    ap.add_argument("--grounding", type=float, default=0.3,
                    help="weight of the attention-grounding loss (0: off)")
    ap.add_argument("--grounding-layer", type=int, default=2)
    ap.add_argument("--position", type=float, default=0.3,
                    help="weight of the position probes on the grounded heads (0: off)")
    ap.add_argument("--outliers", type=float, default=0.75,
                    help="sigma of the final outlier-channel rescaling (0: off; outliers.py)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(a.out, Recipe(**{f.name: getattr(a, f.name) for f in fields(Recipe)}))


if __name__ == "__main__":
    main()
