"""`search:` in a grid file: which per-role sparsities Optuna searches, under which budget.

```yaml
search:
  budget: 0.5                 # parameter-weighted sparsity over the searched roles (or null)
  roles:                      # the last role listed is derived from the budget
    vision: {low: 0.0, high: 0.9}            # step, log as in Optuna's suggest_float
    language: {low: 0.0, high: 0.9, groups: 3}   # first, middle, last third of its blocks
  choices: {prune.method: [wanda, sparsegpt]}    # categorical cell fields (optional)
  trials: 24                  # COMPLETE trials to reach (pruned or infeasible ones not counted)
  sampler: tpe                # tpe | random | grid | nsga2
  seed: 0
  objective: null             # a metric (`shapes_vqa/exact_match`); null: the suite's headline
  second: null                # sparsity | vision_sparsity: a second objective, Pareto front
  pruner: median              # median | race | none: stop hopeless trials after a quick
                              # evaluation (median), or once significantly behind the best
                              # trial on the same documents (race: growing slices, `race:`)
  quick_limit: 50             # documents per task of that quick evaluation
  baselines: true             # the paper's settings at this budget are the first trials
```
The grid's `base` is the fixed part of every trial; its axes are not used by a search.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import UserError, validate
from harness.models.layout import ROLES
from harness.sweep.race_spec import RaceSpec


class RoleRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: float = Field(0.0, ge=0, lt=1)
    high: float = Field(0.9, gt=0, lt=1)
    step: float | None = Field(None, gt=0, lt=1)
    log: bool = False
    groups: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _range(self) -> RoleRange:
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined (Optuna's rule)")
        return self


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: float | None = Field(None, gt=0, lt=1)
    roles: dict[str, RoleRange] = Field(
        default_factory=lambda: {"vision": RoleRange(), "language": RoleRange()})
    choices: dict[str, list[Any]] = Field(default_factory=dict)
    trials: int = Field(24, ge=1, le=10000)
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    seed: int = Field(0, ge=0)
    objective: str | None = None
    second: Literal["sparsity", "vision_sparsity"] | None = None
    pruner: Literal["median", "race", "none"] = "median"
    quick_limit: int = Field(50, ge=1)
    race: RaceSpec = Field(default_factory=RaceSpec)  # the slices of `pruner: race`
    baselines: bool = True

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: dict[str, RoleRange]) -> dict[str, RoleRange]:
        bad = [r for r in v if r not in ROLES]
        if bad:
            raise ValueError(f"unknown role '{bad[0]}' (known: {', '.join(ROLES)})")
        if not v:
            raise ValueError("name at least one role to search")
        return v

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"choices.{key}: needs a non-empty list of values")
            if key.startswith("prune.sparsity"):
                raise ValueError(f"choices.{key}: sparsity is what the search sets; use roles")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        dims = sum(r.groups for r in self.roles.values())
        if self.budget is not None and dims < 2 and not self.choices:
            raise ValueError("a budget over one searched dimension leaves nothing to search; "
                             "add a role or groups")
        if self.budget is None and self.second is None:
            raise ValueError("without a budget the least pruned split always wins; set a "
                             "budget, or a second objective (second: sparsity)")
        if self.second is not None and self.pruner != "none":
            self.pruner = "none"  # Optuna prunes single-objective studies only
        if self.second is not None and self.sampler == "tpe":
            self.sampler = "nsga2"
        if self.sampler == "grid" and any(r.step is None for r in self.roles.values()):
            raise ValueError("sampler 'grid' needs a step for every searched role")
        return self

    def dims(self) -> list[tuple[str, int, RoleRange]]:
        """(role, group index, range) of every searched dimension, in order."""
        return [(role, g, rng) for role, rng in self.roles.items() for g in range(rng.groups)]


def load(data: Any, source: str) -> SearchSpec:
    if not isinstance(data, dict):
        raise UserError(f"{source}: field 'search': a mapping with budget, roles, trials, ...")
    return validate(SearchSpec, data, source, "search: ")
