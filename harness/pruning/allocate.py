"""Per-block sparsity for a model: the numbers OWL and ECoFLaP allocate from, collected
through the adapter, turned into per-Linear targets for the engine.

Allocation groups: `across: role` keeps each pruned role's own target and spreads it over
that role's blocks; `across: roles` spreads one parameter-weighted budget (the roles'
targets, weighted by their weights) over every block of every pruned role, so sparsity can
move between vision and language. A block's sparsity applies to all its Linears; the engine
reads a Linear's own target before its role's (`spec.targets`).

- OWL: one dense pass over the calibration batches collects each Linear's input norms
  ‖X_j‖ (padding excluded, as for Wanda); a block's outlier share is computed from
  |W|·‖X‖ of all its Linears.
- ECoFLaP (zeroth order): for each block, its Linears' weights are moved by +εz and -εz
  (z Gaussian, seeded), the language-modelling loss on the first `samples` calibration
  samples is measured both ways, and |L+ - L-| / 2ε estimates how much the loss moves with
  the block; the block's score is that times its mean |W| (the reference's
  "MEZO-GradMagAbs", averaged per weight). Weights are restored exactly from a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.models.layout import ROLES
from harness.pruning import allocation
from harness.pruning.spec import EcoflapSpec, OwlSpec, PruneSpec
from harness.pruning.types import Target

if TYPE_CHECKING:
    from harness.models.adapter import Adapter, Block


def groups(spec: PruneSpec, targets: dict[str, Target]) -> list[list[str]]:
    """The roles allocated together: one group of all pruned roles, or one per role."""
    roles = [r for r in ROLES if r in targets]
    opts = (spec.owl or OwlSpec()) if spec.distribution == "owl" else \
        (spec.ecoflap or EcoflapSpec())
    return [roles] if opts.across == "roles" else [[r] for r in roles]


def block_sizes(adapter: Adapter, blocks: Sequence[Block]) -> list[int]:
    return [sum(lin.weight.numel() for lin in adapter.linears(b).values()) for b in blocks]


def per_linear(adapter: Adapter, spec: PruneSpec, targets: dict[str, Target],
               batches: Sequence[dict]) -> dict[str, Target]:
    """`targets` plus one target per Linear of every allocated block."""
    out = dict(targets)
    for roles in groups(spec, targets):
        blocks = [b for r in roles for b in adapter.blocks(r)]
        sizes = block_sizes(adapter, blocks)
        role_weights = {r: sum(s for b, s in zip(blocks, sizes, strict=True) if b.role == r)
                        for r in roles}
        budget = sum(targets[r].sparsity * w for r, w in role_weights.items()) / \
            max(1, sum(role_weights.values()))
        if spec.distribution == "owl":
            owl = spec.owl or OwlSpec()
            shares = owl_shares(adapter, blocks, batches, owl.threshold_m)
            levels = allocation.owl(shares, sizes, budget, owl.lam)
        else:
            eco = spec.ecoflap or EcoflapSpec()
            scores = ecoflap_scores(adapter, blocks, batches, eco)
            levels = allocation.ecoflap(scores, sizes, budget, eco.max_sparsity)
        for block, level in zip(blocks, levels, strict=True):
            for rel in adapter.linears(block):
                name = f"{block.name}.{rel}" if rel else block.name
                out[name] = Target(min(max(level, 0.0), 0.999), spec.scope)
    return out


def owl_shares(adapter: Adapter, blocks: Sequence[Block], batches: Sequence[dict],
               m: float) -> list[float]:
    """Each block's outlier share of |W|·‖X‖ from one dense pass."""
    from harness.pruning.engine import dense_statistics

    stats = dense_statistics(adapter, blocks, "norms", batches)
    shares = []
    for b in blocks:
        scores = [lin.weight.detach().abs() * stats[b.name][rel].norm.unsqueeze(0)
                  for rel, lin in adapter.linears(b).items()]
        shares.append(allocation.outlier_share(scores, m))
    return shares


def ecoflap_scores(adapter: Adapter, blocks: Sequence[Block], batches: Sequence[dict],
                   opts) -> list[float]:
    """Each block's zeroth-order score: |L(W+εz) - L(W-εz)| / 2ε times its mean |W|."""
    import torch

    sample = _first(batches, opts.samples)
    scores = []
    for i, b in enumerate(blocks):
        lins = list(adapter.linears(b).values())
        saved = [lin.weight.detach().clone() for lin in lins]
        g = 0.0
        for k in range(opts.noise):
            gen = torch.Generator(device="cpu").manual_seed(opts.seed * 1_000_003 + i * 101 + k)
            zs = [torch.randn(w.shape, generator=gen).to(w.device, w.dtype) for w in saved]
            with torch.no_grad():
                for lin, w, z in zip(lins, saved, zs, strict=True):
                    lin.weight.copy_(w + opts.eps * z)
                plus = lm_loss(adapter, sample)
                for lin, w, z in zip(lins, saved, zs, strict=True):
                    lin.weight.copy_(w - opts.eps * z)
                minus = lm_loss(adapter, sample)
                for lin, w in zip(lins, saved, strict=True):
                    lin.weight.copy_(w)
            g += abs(plus - minus) / (2 * opts.eps) / opts.noise
        mean_abs = sum(float(w.abs().sum()) for w in saved) / sum(w.numel() for w in saved)
        scores.append(g * mean_abs)
    return scores


def _first(batches: Sequence[dict], n: int) -> list[dict]:
    """The first `n` calibration samples, as batches."""
    out, left = [], n
    for batch in batches:
        if left <= 0:
            break
        rows = next(iter(batch.values())).shape[0]
        take = min(rows, left)
        out.append({k: v[:take] for k, v in batch.items()})
        left -= take
    return out


def lm_loss(adapter: Adapter, batches: Sequence[dict]) -> float:
    """Mean next-token loss of the model on the calibration texts (image and padding
    positions excluded), summed over batches by their token counts."""
    import torch

    image_token = getattr(adapter.model.config, "image_token_id", None)
    total, tokens = 0.0, 0
    for batch in batches:
        labels = batch["input_ids"].clone()
        if "attention_mask" in batch:
            labels[batch["attention_mask"] == 0] = -100
        if image_token is not None:
            labels[labels == image_token] = -100
        # decoder-only LMs shift the labels themselves; an encoder-decoder LM (T5) reads
        # them as its decoder's targets: the loss of writing the calibration text back
        with torch.no_grad():
            out = adapter.model(**batch, labels=labels, use_cache=False)
        n = int((labels != -100).sum())
        total += float(out.loss) * n
        tokens += n
    return total / max(1, tokens)
