"""A model's prunable structure without the model: blocks and Linear shapes per role, read
once from the model built on the meta device, then kept in the user cache under a key of the
model folder's content and its layout. Checks that only need shapes (N:M widths, a budget's
feasibility, per-group lists) then cost milliseconds instead of importing transformers.

`Shapes` answers the questions `pruning.spec.targets` asks of an adapter: `blocks(role)`,
`role_linears(role)` (objects with `.weight.shape`, `.weight.numel()`, `.in_features`) and
`parameter_count(role)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.fingerprint import digest
from harness.models.layout import ROLES
from harness.models.load import ModelSpec, load
from harness.models.locate import model_content
from harness.paths import memo_json


@dataclass(frozen=True)
class _Weight:
    shape: tuple[int, int]

    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Linear:
    weight: _Weight

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True)
class _Block:
    role: str
    name: str


class Shapes:
    def __init__(self, data: dict) -> None:
        self.data = data

    def blocks(self, role: str) -> list[_Block]:
        return [_Block(role, n) for n in self.data["blocks"][role]]

    def role_linears(self, role: str) -> dict[str, _Linear]:
        return {p: _Linear(_Weight((o, i))) for p, (o, i) in self.data["linears"][role].items()}

    def parameter_count(self, role: str) -> int:
        return sum(o * i for o, i in self.data["linears"][role].values())


def shapes_of(spec: ModelSpec) -> Shapes:
    """The model's shapes, from the user cache or from the model built on the meta device."""
    key = digest({"model": spec.keyed(exclude={"device", "dtype"}),
                  "content": model_content(spec)})

    def build() -> dict:
        adapter = load(spec, weights=False)
        return {"blocks": {r: [b.name for b in adapter.blocks(r)] for r in ROLES},
                "linears": {r: {p: list(lin.weight.shape) for p, lin in
                                adapter.role_linears(r).items()} for r in ROLES}}

    return Shapes(memo_json("shapes", key, build,
                            lambda d: isinstance(d, dict) and {"blocks", "linears"} <= d.keys()))
