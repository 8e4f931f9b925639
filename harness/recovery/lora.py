"""PEFT LoRA configs by role: which Linears get adapters, and their rank and alpha; `wrap`
injects the adapters of the spec's recovery method (a registry entry: `inject(adapter, spec,
masks)`, such as `inject` here for `lora`)."""

from __future__ import annotations

import re
from fnmatch import fnmatch

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from harness import registry
from harness.errors import UserError
from harness.models.adapter import ROLES, Adapter
from harness.models.layout import linear_path
from harness.recovery.spec import RecoverySpec, RoleLora


def lora_targets(adapter: Adapter, spec: RecoverySpec) -> dict[str, tuple[str, RoleLora]]:
    """Full Linear path -> (role, its LoRA settings), for every adapted Linear."""
    out = {}
    for role in ROLES:
        cfg = getattr(spec.roles, role)
        if cfg is None:
            continue
        hits = 0
        for block in adapter.blocks(role):
            for rel, _ in adapter.linears(block).items():
                if cfg.targets is None or any(fnmatch(rel, p) for p in cfg.targets):
                    out[linear_path(block.name, rel)] = (role, cfg)
                    hits += 1
        if cfg.targets is not None and hits == 0 and adapter.blocks(role):
            raise UserError(f"recover.roles.{role}.targets: no Linear of the {role} blocks "
                            f"matches {cfg.targets}")
    if not out:
        raise UserError("recover.roles: no role has an adapter (all are null)")
    return out


def config(adapter: Adapter, spec: RecoverySpec) -> LoraConfig:
    """One LoraConfig: exact target paths; per-role rank and alpha through PEFT's patterns."""
    chosen = lora_targets(adapter, spec)
    by_role: dict[str, list[str]] = {}
    for path, (role, _) in chosen.items():
        by_role.setdefault(role, []).append(path)
    role_cfg = dict(chosen.values())
    pattern = {role: "|".join(re.escape(p) for p in paths) for role, paths in by_role.items()}
    first = next(iter(role_cfg.values()))
    cfg = LoraConfig(
        target_modules=sorted(chosen), r=first.rank, lora_alpha=first.alpha, lora_dropout=0.0,
        rank_pattern={pattern[r]: c.rank for r, c in role_cfg.items()},
        alpha_pattern={pattern[r]: c.alpha for r, c in role_cfg.items()},
        bias="none",
    )
    return cfg


def wrap(adapter: Adapter, spec: RecoverySpec,
         masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The adapter's model with the spec's recovery method's adapters injected, in place
    (`masks`: the pruning stage's keep masks, for a method that reads them)."""
    entry = registry.get("recovery", spec.method)
    if entry.target is None:
        raise ValueError(f"no adapters for recovery method {spec.method!r}")
    return entry.load()(adapter, spec, masks)


def inject(adapter: Adapter, spec: RecoverySpec,
           masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """`lora`: PEFT's LoRA layers on the spec's targets (their merge fills pruned zeros)."""
    return get_peft_model(adapter.model, config(adapter, spec))
