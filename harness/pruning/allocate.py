"""Per-block sparsity for a model: the numbers OWL and ECoFLaP allocate from, collected
through the adapter, turned into per-Linear targets for the engine.

Allocation groups: `across: role` keeps each pruned role's own target and spreads it over
that role's blocks; `across: roles` spreads one parameter-weighted budget (the roles'
targets, weighted by their weights) over every block of every pruned role, so sparsity can
move between vision and language. A block's sparsity applies to all its Linears; the engine
reads a Linear's own target before its role's (`spec.targets`).

An allocation is a registry entry (harness/registry.py): a function
`levels(adapter, blocks, sizes, budget, batches, options) -> [sparsity per block]` that
keeps the size-weighted mean at `budget`, and the model of its options, which may set
`across` (role, the default, or roles) and define `check(levels)`: a ValueError when the
spec's sparsity levels are out of its reach, raised when the spec loads.

- OWL: one dense pass over the calibration batches collects each Linear's input norms
  ‖X_j‖ (padding excluded, as for Wanda); a block's outlier share is computed from
  |W|·‖X‖ of all its Linears.
- ECoFLaP (zeroth order), as the reference's `compute_importance_scores_mezo` with score
  method "MEZO-GradMagAbs_avg" (ylsung/ECoFLaP, LAVIS/lavis/compression/pruners/
  layer_single_base_pruner.py): each weight tensor W_t (a Linear's weight) alone is moved by
  +εz_t and -εz_t, z_t Gaussian with its own seed, and the language-modelling loss on the
  first `samples` calibration samples measured both ways: g_t = |L+ - L-| / 2ε. A weight's
  importance is |w|·g_t, a block's score the mean importance over its weights:
  sum_t g_t·sum|W_t| / sum_t numel(W_t). Two forwards per Linear (`estimator: tensor`, the
  default). `estimator: block` moves all of a block's Linears at once, by one direction, and
  scores the block g_B·mean|W|: two forwards per block, but not the reference's estimate
  (its expectation differs from the per-tensor one). The reference sums over its batches
  and draws; `noise` draws are averaged here, a factor common to every block. Weights are
  restored exactly from a copy (the reference adds the noise back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.fields import Seed
from harness.models.layout import ROLES, linear_path
from harness.pruning import allocation
from harness.pruning.types import Target

if TYPE_CHECKING:
    from harness.models.adapter import Adapter, Block
    from harness.pruning.spec import PruneSpec


class OwlOptions(BaseModel):
    """OWL's allocation: outliers are |W|·‖X‖ above `threshold_m` times their mean; block
    sparsities spread over 2·`lam` around the target (allocation.py)."""

    model_config = ConfigDict(extra="forbid")
    threshold_m: float = Field(5.0, gt=0)
    lam: float = Field(0.08, gt=0, lt=0.5)
    across: Literal["role", "roles"] = "role"  # within each role, or one budget over roles

    def check(self, levels: list[float]) -> None:
        """A block's level is s + m - x_b, with x_b in [0, 2·lam] and m the blocks' weighted
        mean of x_b: anywhere in [s - 2·lam, s + 2·lam] as the outlier shares fall out. Both
        ends must stay in [0, 1) or a clamped level moves the role off its target."""
        low = min((v for v in levels if v > 0), default=0.0)
        two = 2 * Fraction(str(self.lam))
        if two > Fraction(str(low)):
            raise ValueError(f"owl.lam {self.lam}: a block's sparsity reaches s - 2·lam, so "
                             f"every sparsity must be at least 2·lam = {float(two):g} "
                             f"(got {low})")
        top = max(levels)
        if Fraction(str(top)) + two >= 1:
            raise ValueError(f"owl.lam {self.lam}: a block's sparsity reaches s + 2·lam, so "
                             f"every sparsity must be below 1 - 2·lam = "
                             f"{float(1 - two):g} (got {top})")


class EcoflapOptions(BaseModel):
    """ECoFLaP's allocation: zeroth-order block scores on `samples` calibration samples,
    `noise` perturbations of size `eps` each; no block above `max_sparsity`. `estimator`:
    `tensor` perturbs each weight tensor alone, as the reference does (two forwards per
    Linear); `block` perturbs a whole block at once (two forwards per block, cheaper, not the
    reference's estimate)."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(8, ge=1)
    noise: int = Field(1, ge=1)
    eps: float = Field(1e-3, gt=0)
    max_sparsity: float = Field(0.8, gt=0, lt=1)
    seed: Seed = 0
    across: Literal["role", "roles"] = "roles"  # the paper allocates over the whole VLM
    estimator: Literal["tensor", "block"] = "tensor"

    def check(self, levels: list[float]) -> None:
        if self.max_sparsity < max(levels):
            raise ValueError(f"ecoflap.max_sparsity {self.max_sparsity} is below the sparsity "
                             f"{max(levels)}: no allocation can reach it")


def groups(spec: PruneSpec, targets: dict[str, Target]) -> list[list[str]]:
    """The roles allocated together: one group of all pruned roles, or one per role (an
    allocation's options choose with `across`; without it, per role)."""
    roles = [r for r in ROLES if r in targets]
    across = getattr(spec.options(spec.allocation), "across", "role")
    return [roles] if across == "roles" else [[r] for r in roles]


def block_sizes(adapter: Adapter, blocks: Sequence[Block]) -> list[int]:
    return [sum(lin.weight.numel() for lin in adapter.linears(b).values()) for b in blocks]


def per_linear(adapter: Adapter, spec: PruneSpec, targets: dict[str, Target],
               batches: Sequence[dict]) -> dict[str, Target]:
    """`targets` plus one target per Linear of every allocated block."""
    levels_of = registry.get("allocations", str(spec.allocation)).load()
    opts = spec.options(spec.allocation)
    out = dict(targets)
    for roles in groups(spec, targets):
        blocks = [b for r in roles for b in adapter.blocks(r)]
        sizes = block_sizes(adapter, blocks)
        role_weights = {r: sum(s for b, s in zip(blocks, sizes, strict=True) if b.role == r)
                        for r in roles}
        # exact: one role's budget is its sparsity as written (0.7, not 0.7000000000000001)
        budget = sum(allocation.exact(targets[r].sparsity) * w
                     for r, w in role_weights.items()) / max(1, sum(role_weights.values()))
        levels = levels_of(adapter, blocks, sizes, budget, batches, opts)
        for block, level in zip(blocks, levels, strict=True):
            for rel in adapter.linears(block):
                name = linear_path(block.name, rel)
                out[name] = Target(min(max(level, 0.0), 0.999), spec.scope)
    return out


def owl_levels(adapter: Adapter, blocks: Sequence[Block], sizes: list[int],
               budget: Fraction, batches: Sequence[dict], opts: OwlOptions) -> list[float]:
    """`owl`: each block's sparsity from its outlier share (allocation.owl)."""
    shares = owl_shares(adapter, blocks, batches, opts.threshold_m)
    return allocation.owl(shares, sizes, float(budget), opts.lam)


def ecoflap_levels(adapter: Adapter, blocks: Sequence[Block], sizes: list[int],
                   budget: Fraction, batches: Sequence[dict],
                   opts: EcoflapOptions) -> list[float]:
    """`ecoflap`: each block's sparsity from its zeroth-order score (allocation.ecoflap)."""
    scores = ecoflap_scores(adapter, blocks, batches, opts)
    return allocation.ecoflap(scores, sizes, budget, opts.max_sparsity)


def owl_shares(adapter: Adapter, blocks: Sequence[Block], batches: Sequence[dict],
               m: float) -> list[float]:
    """Each block's outlier share of |W|·‖X‖ from one dense pass."""
    from harness.pruning.pipelines.dense import statistics

    stats = statistics(adapter, blocks, "norms", batches)
    shares = []
    for b in blocks:
        with adapter.resident(b.module):
            scores = [lin.weight.detach().abs() * stats[b.name][rel].norm.unsqueeze(0)
                      for rel, lin in adapter.linears(b).items()]
            shares.append(allocation.outlier_share(scores, m))
    return shares


def ecoflap_scores(adapter: Adapter, blocks: Sequence[Block], batches: Sequence[dict],
                   opts: EcoflapOptions | None = None) -> list[float]:
    """Each block's zeroth-order score (module docstring): per tensor, the reference's
    sum_t g_t·sum|W_t| / sum_t numel(W_t); per block, g_B·mean|W|."""
    opts = opts or EcoflapOptions()
    sample = _first(batches, opts.samples)
    scores = []
    for i, b in enumerate(blocks):
        with adapter.resident(b.module):
            scores.append(_block_score(adapter, i, b, sample, opts))
    return scores


def _block_score(adapter: Adapter, i: int, b: Block, sample: list[dict],
                 opts: EcoflapOptions) -> float:
    """Block i's zeroth-order score (`ecoflap_scores`)."""
    lins = list(adapter.linears(b).values())
    weights = sum(lin.weight.numel() for lin in lins)
    if not weights:  # a block without Linears (Gemma3's projector) keeps nothing to score
        return 0.0
    if opts.estimator == "block":
        shapes = [tuple(lin.weight.shape) for lin in lins]
        g = _slope(adapter, lins, sample, opts,
                   partial(_block_directions, shapes, opts.seed, i))
        return g * sum(float(lin.weight.detach().abs().sum()) for lin in lins) / weights
    total = 0.0
    for j, lin in enumerate(lins):
        g = _slope(adapter, [lin], sample, opts,
                   partial(_tensor_direction, tuple(lin.weight.shape), opts.seed, i, j))
        total += g * float(lin.weight.detach().abs().sum())
    return total / weights


def direction(shape: tuple[int, ...], seed: int, block: int, tensor: int, draw: int):
    """The Gaussian direction of one tensor of one block at one draw (CPU, float32): its own
    seed, from (seed, block, tensor, draw), so no two tensors share a direction."""
    import torch

    state = int(np.random.SeedSequence([seed, block, tensor, draw]).generate_state(1)[0])
    return torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(state))


def _tensor_direction(shape: tuple[int, ...], seed: int, block: int, tensor: int,
                      draw: int) -> list:
    return [direction(shape, seed, block, tensor, draw)]


def _block_directions(shapes: list[tuple[int, ...]], seed: int, block: int, draw: int) -> list:
    """One direction over all of a block's tensors (the `block` estimator)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + block * 101 + draw)
    return [torch.randn(s, generator=gen) for s in shapes]


def _slope(adapter: Adapter, lins: list, sample: list[dict], opts: EcoflapOptions,
           directions: Callable[[int], list]) -> float:
    """|L(W + εz) - L(W - εz)| / 2ε for the Linears `lins` moved together along
    `directions(draw)`, averaged over `opts.noise` draws; weights restored from a copy."""
    import torch

    saved = [lin.weight.detach().clone() for lin in lins]
    g = 0.0
    for k in range(opts.noise):
        zs = [z.to(w.device, w.dtype) for z, w in zip(directions(k), saved, strict=True)]
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
    return g


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
