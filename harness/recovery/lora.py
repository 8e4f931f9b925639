"""PEFT LoRA configs by role: which Linears get adapters, and their rank and alpha."""

from __future__ import annotations

import re
from fnmatch import fnmatch

from peft import LoraConfig, get_peft_model
from torch import nn

from harness.errors import UserError
from harness.models.adapter import ROLES, Adapter
from harness.recovery import sparse_lora
from harness.recovery.spec import RecoverySpec, RoleLora


def targets(adapter: Adapter, spec: RecoverySpec) -> dict[str, tuple[str, RoleLora]]:
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
                    out[f"{block.name}.{rel}" if rel else block.name] = (role, cfg)
                    hits += 1
        if cfg.targets is not None and hits == 0 and adapter.blocks(role):
            raise UserError(f"recover.roles.{role}.targets: no Linear of the {role} blocks "
                            f"matches {cfg.targets}")
    if not out:
        raise UserError("recover.roles: no role has an adapter (all are null)")
    return out


def config(adapter: Adapter, spec: RecoverySpec) -> LoraConfig:
    """One LoraConfig: exact target paths; per-role rank and alpha through PEFT's patterns."""
    chosen = targets(adapter, spec)
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
    if spec.method == "sparselora":
        sparse_lora.register(cfg)
    return cfg


def wrap(adapter: Adapter, spec: RecoverySpec) -> nn.Module:
    """The adapter's model with LoRA (or SparseLoRA) layers injected, in place."""
    if spec.method not in ("lora", "sparselora"):
        raise ValueError(f"no adapters for recovery method {spec.method!r}")
    return get_peft_model(adapter.model, config(adapter, spec))
