"""Pruning methods by name. A method is one module that registers itself:

```python
@method("wanda", needs="norms")
def prune(weight, stats, target) -> Pruned: ...
```
`needs` says which calibration statistics the engine collects for it: None (no calibration),
"norms" (per-column sum of squared inputs), "hessian" (XᵀX) or "moments" (norms + means).
`stack=True` says the method prunes rows independently given the statistics, so Linears
reading one input (q, k, v) may be pruned by one call on their weights stacked by rows; it
saves per-call work (SparseGPT's column loop) and never changes a result. `seeded=True` says
the method draws random numbers from `prune.seed` (random); for the others the seed cannot
change a mask, so a spec normalizes it away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from harness.errors import unknown

Needs = Literal[None, "norms", "hessian", "moments"]


@dataclass(frozen=True)
class Method:
    name: str
    needs: Needs
    fn: Callable
    stack: bool = False
    seeded: bool = False


_METHODS: dict[str, Method] = {}


def method(name: str, needs: Needs = None, stack: bool = False, seeded: bool = False):
    def register(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"pruning method {name!r} registered twice")
        _METHODS[name] = Method(name, needs, fn, stack, seeded)
        return fn

    return register


def _load_builtin() -> None:
    # Importing registers; an import error here is a bug and must surface, never be swallowed.
    from harness.pruning.methods import dsnot, magnitude, random, sparsegpt, wanda  # noqa: F401


def get(name: str) -> Method:
    _load_builtin()
    if name not in _METHODS:
        raise unknown("pruning method", name, _METHODS)
    return _METHODS[name]


def names() -> list[str]:
    _load_builtin()
    return sorted(_METHODS)
