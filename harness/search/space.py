"""The search space: per-role (and per block group) sparsities under a parameter budget.

Each searched dimension is a role, or one of a role's consecutive block groups, with its
prunable weight count P_d (from the model's shapes). With a budget B, every dimension but
the last is sampled from its range (Optuna's suggest_float: low, high, step, log) and the
last is derived so that sum_d x_d P_d = B sum_d P_d holds exactly. A derived value outside
its range makes the trial infeasible: it is pruned before any work, and its distance outside
the range is recorded as an Optuna constraint so that TPE and NSGA-II learn to avoid it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.search.spec import SearchSpec


def dim_name(role: str, group: int, groups: int) -> str:
    return role if groups == 1 else f"{role}.{group}"


@dataclass
class Space:
    spec: SearchSpec
    params: dict[str, int]  # dimension name -> prunable weights

    @property
    def names(self) -> list[str]:
        return [dim_name(r, g, rng.groups) for r, g, rng in self.spec.dims()]

    @property
    def free(self) -> list[str]:
        return self.names[:-1] if self.spec.budget is not None else self.names

    def _range(self, name: str):
        return self.spec.roles[name.split(".")[0]]

    def suggest(self, trial) -> tuple[dict[str, float], dict[str, Any], float]:
        """(sparsity by dimension, categorical choices, constraint violation: 0 when
        feasible, else how far the derived dimension falls outside its range)."""
        x = {}
        for name in self.free:
            r = self._range(name)
            x[name] = trial.suggest_float(f"sparsity.{name}", r.low, r.high, step=r.step,
                                          log=r.log)
        violation = 0.0
        if self.spec.budget is not None:
            last = self.names[-1]
            total = sum(self.params.values())
            used = sum(x[n] * self.params[n] for n in self.free)
            x[last] = (self.spec.budget * total - used) / self.params[last]
            r = self._range(last)
            violation = max(0.0, r.low - x[last], x[last] - r.high)
        choices = {k: trial.suggest_categorical(k, v) for k, v in self.spec.choices.items()}
        return x, choices, violation

    def sparsity_map(self, x: dict[str, float]) -> dict[str, float | list[float]]:
        """`prune.sparsity` for a cell: a value per role, or a list per grouped role."""
        out: dict[str, float | list[float]] = {}
        for role, rng in self.spec.roles.items():
            vals = [max(0.0, x[dim_name(role, g, rng.groups)]) for g in range(rng.groups)]
            out[role] = vals[0] if rng.groups == 1 else vals
        return out

    def achieved(self, roles: dict[str, dict]) -> float:
        """Parameter-weighted sparsity over the searched roles, from a pruning report."""
        zeros = sum(roles[r]["zeros"] for r in self.spec.roles)
        total = sum(roles[r]["params"] for r in self.spec.roles)
        return zeros / total if total else 0.0

    def role_params(self, role: str) -> int:
        return sum(p for n, p in self.params.items() if n.split(".")[0] == role)

    def baselines(self) -> dict[str, dict[str, float]]:
        """The paper's settings at this budget, as Optuna params of the free dimensions:
        equal sparsity everywhere, language only, vision only; those outside the ranges
        (or needing a sparsity of 1 or more) are left out."""
        b = self.spec.budget
        if b is None:
            return {}
        total = sum(self.params.values())
        plans = {"equal": dict.fromkeys(self.spec.roles, b)}
        for only in ("language", "vision"):
            if only in self.spec.roles and len(self.spec.roles) > 1:
                plans[f"{only}_only"] = {r: (b * total / self.role_params(only) if r == only
                                             else 0.0) for r in self.spec.roles}
        out = {}
        for name, level in plans.items():
            x = {n: level[n.split(".")[0]] for n in self.names}
            if all(self._range(n).low - 1e-9 <= v <= self._range(n).high + 1e-9
                   for n, v in x.items()):
                out[name] = {f"sparsity.{n}": x[n] for n in self.free}
        return out
