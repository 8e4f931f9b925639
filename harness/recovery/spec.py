"""`recover:` in a grid file: how a pruned model wins its accuracy back.

```yaml
recover:
  method: sparselora          # none | lora | sparselora | a plugin's (harness/registry.py)
  roles:                      # per-role LoRA; a role set to null gets no adapter
    language: {rank: 8, alpha: 16}                # all of the role's prunable Linears ...
    vision: {rank: 4, alpha: 16, targets: ["*_proj", "fc*"]}   # ... or those matching
    bridge: {rank: 2, alpha: 16}
  distill: {weight: 0.1, temperature: 1.0}        # null: task loss only
  steps: 200
  lr: 5.0e-4                  # cosine schedule after `warmup` steps
  batch_size: 16
  grad_accum: 1
  seed: 0
  data: {source: shapes}      # or a JSONL of {"image", "prompt", "answer"}
```
Defaults follow the paper: language rank 8 on every projection (q, k, v, o, gate, up, down),
vision rank 4 on the attention and MLP projections, bridge rank 2, alpha 16, lambda 0.1, T 1.

A spec is normalized when it loads, so that specs that train alike are equal (one stage key)
and no label shows a setting that had no effect: `method: none` trains nothing, so its other
fields take their defaults; a distillation weight of 0 is no distillation (`distill: null`).

Recovery methods are entries of the registry (harness/registry.py); one with options keeps
them under its name (`recover: {method: mine, mine: {...}}`), validated by its model.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness import registry
from harness.errors import validate
from harness.fields import Seed
from harness.hub import HubColumns


class RoleLora(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int = Field(gt=0)
    alpha: float = Field(16.0, gt=0)
    # fnmatch patterns on a Linear's path inside its block (`self_attn.q_proj`); None: all
    targets: list[str] | None = None


class Roles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vision: RoleLora | None = Field(default_factory=lambda: RoleLora(rank=4))
    bridge: RoleLora | None = Field(default_factory=lambda: RoleLora(rank=2))
    language: RoleLora | None = Field(default_factory=lambda: RoleLora(rank=8))


class Distill(BaseModel):
    """loss = (1 - weight) * task + weight * T^2 * KL(teacher || student) at temperature T."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)


class DataSpec(HubColumns):
    """`recover.data`: the shapes train split, a JSONL file (image, prompt, answer), a
    datasets folder, or a hub dataset in the local HF cache, `hf:REPO[:CONFIG]`: its `split`,
    `image` column, and either a `conversations` column in the LLaVA-Instruct format (the
    first human turn is the request, the first gpt turn the answer) or a `text` column of
    captions (a list gives its first)."""

    HUB_FIELDS: ClassVar[tuple[str, ...]] = ("split", "image", "text", "conversations")
    model_config = ConfigDict(extra="forbid")
    source: str = "shapes"
    caption_share: float = Field(0.25, ge=0, le=1)  # shapes only: captions among the samples
    split: str = "train"
    image: str = "image"
    text: str = "text"
    conversations: str | None = None


class RecoverySpec(registry.OptionBlocks):
    # unknown keys are refused (OptionBlocks); an extra key holds a method's options only
    KINDS: ClassVar[tuple[registry.Kind, ...]] = ("recovery",)
    method: str = "none"
    roles: Roles = Field(default_factory=Roles)
    distill: Distill | None = Field(default_factory=Distill)
    steps: int = Field(200, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup: int = Field(10, ge=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: Seed = 0
    data: DataSpec = Field(default_factory=DataSpec)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return registry.known("recovery", v)

    @model_validator(mode="after")
    def _normalized(self) -> RecoverySpec:
        self._blocks([self.method])
        if self.method == "none":
            for name, f in type(self).model_fields.items():
                if name != "method":
                    setattr(self, name, f.get_default(call_default_factory=True))
        elif self.distill is not None and self.distill.weight == 0:
            self.distill = None
        return self


def load(data: dict | None, source: str = "recovery spec") -> RecoverySpec:
    """Validate a `recover:` mapping; errors name the source and the field, on one line."""
    return validate(RecoverySpec, data or {}, source)
