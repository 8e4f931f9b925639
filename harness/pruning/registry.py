"""Pruning methods as the engine runs them: the `methods` entries of the registry
(harness/registry.py), each resolved once into its function and what it needs.

A method is one module with a function, and one line in `harness.registry.BUILTIN` (or an
entry point of another package):

```python
def prune(weight, stats, target, seed=0, **options) -> Pruned: ...
Entry("methods", "wanda", "harness.pruning.methods.wanda:prune", "|W|·‖X‖", needs="norms")
```
`needs` says which calibration statistics the engine collects for it: None (no calibration),
"norms" (per-column sum of squared inputs), "hessian" (XᵀX) or "moments" (norms + means).
`stack=True` says the method prunes rows independently given the statistics, so Linears
reading one input (q, k, v) may be pruned by one call on their weights stacked by rows; it
saves per-call work (SparseGPT's column loop) and never changes a result. `seeded=True` says
the method draws random numbers from `prune.seed` (random); for the others the seed cannot
change a mask, so a spec normalizes it away. A method with options names their pydantic
model (`options=`); the spec holds them under the method's name and the engine passes them
as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness import registry
from harness.registry import Needs


@dataclass(frozen=True)
class Method:
    name: str
    needs: Needs
    fn: Callable
    stack: bool = False
    seeded: bool = False


_METHODS: dict[str, Method] = {}  # resolved entries, by name


def get(name: str) -> Method:
    """The method (its module imported now); an unknown name is a UserError."""
    if name not in _METHODS:
        e = registry.get("methods", name)
        _METHODS[name] = Method(name, e.needs, e.load(), e.stack, e.seeded)
    return _METHODS[name]


def names() -> list[str]:
    return sorted(registry.names("methods"))
