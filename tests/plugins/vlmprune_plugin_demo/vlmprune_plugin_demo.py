"""`half_magnitude`, a pruning method from another package: magnitude pruning (|W|, per row)
at `fraction` of the sparsity the spec asks for (one half by default); an N:M target is
pruned as asked.
```yaml
prune: {method: half_magnitude, sparsity: {language: 0.5}, half_magnitude: {fraction: 0.8}}
```
One module (the method and its options) and one entry point in pyproject.toml:
`[project.entry-points."vlmprune.methods"] half_magnitude = "vlmprune_plugin_demo:ENTRY"`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from harness.pruning.masks import Target, select
from harness.pruning.types import Pruned
from harness.registry import Entry


class Options(BaseModel):
    """`prune.half_magnitude`: the share of the asked sparsity that is pruned."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.5, gt=0, le=1)


def prune(weight, stats, target: Target, seed: int = 0, fraction: float = 0.5) -> Pruned:
    if not target.structured:
        target = Target(target.sparsity * fraction, target.scope)
    return Pruned(select(weight.abs(), target))


ENTRY = Entry("methods", "half_magnitude", prune, "|W| at a fraction of the sparsity",
              options=Options)
