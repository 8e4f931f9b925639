"""One cell of a grid: model + prune spec + recovery spec + evaluation + seed, and the keys of
its three stages.

A stage's key hashes everything that determines its output (and the keys of the stages it
reads), so one prune stage serves every recovery method and seed that share it, and a cell's
hash is the key of its last stage."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from harness.models.load import ModelSpec
from harness.pruning.spec import PruneSpec
from harness.recovery.spec import RecoverySpec

VERSION = 2  # bump when a stage's code changes what it produces (2: statistics skip padding)


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str = "shapes"
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)


class CellSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    prune: PruneSpec | None = Field(default_factory=PruneSpec)  # null: the dense model
    recover: RecoverySpec = Field(default_factory=RecoverySpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: int = 0


def seeded(c: CellSpec) -> CellSpec:
    """The cell's seed is the recovery seed: `seeds: [0, 1]` in a grid repeats the training,
    and every seed shares the cell's prune stage. (Pruning and calibration have their own
    `prune.seed` / `prune.calibration.seed`, which an axis can vary.)"""
    return c.model_copy(update={"recover": c.recover.model_copy(update={"seed": c.seed})})


def digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prune_key(c: CellSpec) -> str:
    model = c.model.model_dump(exclude={"device"})
    return digest({"v": VERSION, "stage": "prune", "model": model,
                   "prune": c.prune.model_dump() if c.prune else None})


def recover_key(c: CellSpec) -> str:
    if c.recover.method == "none":
        return prune_key(c)  # nothing trained: the pruned model is the recovered one
    return digest({"v": VERSION, "stage": "recover", "prune": prune_key(c),
                   "recover": c.recover.model_dump(), "seed": c.seed})


def eval_key(c: CellSpec) -> str:
    return digest({"v": VERSION, "stage": "eval", "recover": recover_key(c),
                   "eval": c.eval.model_dump(exclude={"batch_size"})})


def flat(obj, prefix: str = "") -> dict[str, object]:
    """Dotted keys for nested dicts: {"prune.method": "wanda", ...} (MLflow params)."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= flat(v, f"{prefix}{k}.")
        return out
    out[prefix[:-1]] = obj
    return out
