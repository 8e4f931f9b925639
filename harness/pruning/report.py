"""Sparsity report: per layer and per role, achieved sparsity, nonzero weights, N:M validity.

Measured from the weights themselves (exact zeros), never from the requested targets, so a
recovery stage that breaks sparsity shows up here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from harness.models.layout import ROLES, linear_path
from harness.pruning.masks import Target, nm_valid

if TYPE_CHECKING:  # the sweep's process reads reports (`by_block`) without importing torch
    from harness.models.adapter import Adapter


@dataclass
class LayerSparsity:
    role: str
    name: str
    shape: tuple[int, int]
    params: int
    zeros: int
    target: float
    nm_valid: bool | None  # None when the target is not N:M
    block: int = 0  # index of its block within its role

    @property
    def sparsity(self) -> float:
        return self.zeros / self.params


def zero_share(linears: dict) -> float:
    """Share of exactly-zero weights over the given Linears."""
    total = sum(lin.weight.numel() for lin in linears.values())
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears.values())
    return zeros / total if total else 0.0


def measure(adapter: Adapter, targets: dict[str, Target] | None = None) -> dict:
    """{"layers": [...], "roles": {role: {...}}, "overall": {...}} as plain data (JSON-able)."""
    targets = targets or {}
    layers = []
    for role in ROLES:
        for index, block in enumerate(adapter.blocks(role)):
            with adapter.resident(block.module):  # an offloaded model's: one at a time
                for rel, lin in adapter.linears(block).items():
                    name = linear_path(block.name, rel)
                    t = targets.get(name, targets.get(role))
                    w = lin.weight.detach()
                    valid = nm_valid(w, t.n, t.m) if t is not None and t.structured else None
                    layers.append(LayerSparsity(role, name, tuple(w.shape), w.numel(),
                                                int((w == 0).sum()), t.sparsity if t else 0.0,
                                                valid, index))
    roles: dict[str, dict] = {}
    for role in ROLES:
        rows = [x for x in layers if x.role == role]
        params = sum(x.params for x in rows)
        zeros = sum(x.zeros for x in rows)
        roles[role] = {"params": params, "zeros": zeros, "nonzero": params - zeros,
                       "sparsity": zeros / params if params else 0.0,
                       "target": targets[role].sparsity if role in targets else 0.0,
                       "nm_valid": (all(x.nm_valid for x in rows)
                                    if rows and rows[0].nm_valid is not None else None)}
    pruned = [r for r in ROLES if r in targets]
    params = sum(roles[r]["params"] for r in pruned)
    zeros = sum(roles[r]["zeros"] for r in pruned)
    overall = {"params": params, "zeros": zeros, "nonzero": params - zeros,
               "sparsity": zeros / params if params else 0.0,
               "all_params": sum(v["params"] for v in roles.values()),
               "all_sparsity": (sum(v["zeros"] for v in roles.values()) /
                                max(1, sum(v["params"] for v in roles.values())))}
    return {"layers": [asdict(x) | {"sparsity": x.sparsity} for x in layers],
            "roles": roles, "overall": overall}


def by_block(report: dict) -> dict[str, tuple[float, float]]:
    """`{"vision.00": (target, achieved), ...}` per block of the pruned roles, weighted by
    the block's weights: what an allocation chose and what the weights hold."""
    out: dict[str, list[float]] = {}
    for x in report.get("layers", []):
        key = f"{x['role']}.{x.get('block', 0):02d}"
        acc = out.setdefault(key, [0.0, 0.0, 0.0])
        acc[0] += x["target"] * x["params"]
        acc[1] += x["zeros"]
        acc[2] += x["params"]
    return {k: (t / n, z / n) for k, (t, z, n) in out.items() if n and t > 0}
