"""`prune:` in a grid file: method, pattern, sparsity by modality, calibration, propagation.

```yaml
prune:
  method: wanda              # magnitude | random | wanda | sparsegpt | dsnot | a plugin's
  pattern: unstructured      # or "2:4", "4:8", any "N:M" with N < M
  sparsity: 0.5              # a global target, spread by `distribution` ...
  distribution: equal        # equal | language_only | vision_only | budget | an allocation
  vision_share: 0.3          # budget only: share of the pruned weights taken from vision
  # ... or an explicit map:  sparsity: {vision: 0.3, language: 0.7}
  # ... a list per role prunes its consecutive block groups at their own levels:
  #                           sparsity: {vision: 0.4, language: [0.3, 0.5, 0.7]}
  scope: row                 # row (Wanda's default) | layer
  propagation: sequential    # sequential (Linear by Linear) | blockwise | dense: pipelines/
  calibration: {source: shapes, samples: 128, batch_size: 16, seed: 0}
```
The bridge (projector, Q-Former) is unpruned unless the map names it, as in the paper.

A spec is normalized when it loads: a field that cannot change what this spec prunes is set
to one canonical value, so two specs that prune alike are equal (one stage key, one cell)
and no label shows a setting that had no effect. N:M patterns fix the sparsity (2:4 is 0.5;
a map keeps only which roles it names) and ignore `scope`; `vision_share` exists only for
`budget`; a sparsity map makes `distribution` moot (unless it is an allocation, owl or
ecoflap, which spreads each target over blocks); an entry's options (`dsnot:`, `owl:`,
`ecoflap:`, or a plugin's, under its name) belong to the chosen method or allocation only;
methods without calibration statistics (magnitude, random) have no `calibration` and no
`propagation` choice; only random reads `seed`.

Methods and allocations are entries of the registry (harness/registry.py), each with the
model of its options: `prune: {method: dsnot, dsnot: {cycles: 20}}` is validated by dsnot's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from harness import registry, yamlfile
from harness.errors import UserError, unknown, validate
from harness.fields import Seed
from harness.hub import HubColumns
from harness.models.layout import ROLES, under
from harness.models.locate import EMBEDDED
from harness.pruning.types import Propagation, Scope, Target

if TYPE_CHECKING:
    from harness.models.adapter import Adapter

_NM = re.compile(r"^(\d+):(\d+)$")


class CalibrationSpec(HubColumns):
    """`calibration:` of a prune spec. `source`: "shapes" (the embedded world), a JSONL file
    of {"image": path, "text": str}, or a hub dataset in the local HF cache,
    `hf:REPO[:CONFIG]`, read from its `split` with its `image` and `text` columns (a list of
    captions gives its first)."""

    HUB_FIELDS: ClassVar[tuple[str, ...]] = ("split", "image", "text")
    model_config = ConfigDict(extra="forbid")
    source: str = "shapes"
    samples: int = Field(128, ge=1)
    batch_size: int = Field(128, ge=1)  # all samples in one batch: one pass per block
    seed: Seed = 0
    split: str = "train"
    image: str = "image"
    text: str = "text"


# what a model other than the embedded one is told to calibrate on
REAL_DATA = ("source: hf:lmms-lab/COCO-Caption2017 with split: val, text: answer (COCO "
             "captions from your Hugging Face cache), a JSONL file of image-text pairs, or "
             "source: shapes to calibrate on the synthetic shapes world anyway")


def refuse_shapes_default(model: str, spec: PruneSpec, where: str) -> None:
    """A model other than an embedded one, pruned by a method that calibrates, with no
    calibration source given: one line saying how to give real data (the shapes world is the
    embedded models' default only; a real model would be pruned on 64x64 synthetic shapes
    without a word)."""
    cal = spec.calibration
    if cal is None or "source" in cal.model_fields_set or model in EMBEDDED:
        return
    if registry.get("methods", spec.method).needs is None:  # magnitude, random
        return
    raise UserError(f"{where}field 'prune.calibration.source': '{model}' is not an embedded "
                    f"model, so it is not calibrated on the shapes world by default; give "
                    f"{REAL_DATA}")


# how `distribution` spreads a sparsity over roles; any other value names an allocation (a
# registry entry: a sparsity per block, chosen from the model, pruning/allocate.py)
SPREADS = ("equal", "language_only", "vision_only", "budget")


class PruneSpec(registry.OptionBlocks):
    # unknown keys are refused (OptionBlocks); extra keys are a plugin's options only
    KINDS: ClassVar[tuple[registry.Kind, ...]] = ("methods", "allocations")
    # the built-ins' options, declared so that every spec's dump (and stage key) holds them
    DECLARED: ClassVar[tuple[str, ...]] = ("dsnot", "owl", "ecoflap")
    method: str = "wanda"
    pattern: str = "unstructured"
    sparsity: float | dict[str, float | list[float]] = 0.5
    distribution: str = "equal"  # one of SPREADS, or an allocation
    vision_share: float | None = Field(None, gt=0, lt=1)
    scope: Scope = "row"
    propagation: Propagation = "sequential"
    calibration: CalibrationSpec | None = Field(default_factory=CalibrationSpec)
    dsnot: Any = None  # dsnot's options (methods/dsnot.py:Options); dsnot without: defaults
    owl: Any = None  # distribution owl's options (allocate.py:OwlOptions)
    ecoflap: Any = None  # distribution ecoflap's options (allocate.py:EcoflapOptions)
    seed: Seed = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return registry.known("methods", v)

    @field_validator("distribution")
    @classmethod
    def _known_distribution(cls, v: str) -> str:
        if v in SPREADS:
            return v
        allocations = registry.names("allocations")
        if v not in allocations:
            raise ValueError(str(unknown("distribution", v, [*SPREADS, *allocations])))
        return v

    @field_validator("pattern", mode="before")
    @classmethod
    def _sexagesimal(cls, v: object) -> object:
        """YAML 1.1 reads an unquoted 2:4 as the base-60 number 2*60+4 = 124."""
        if isinstance(v, int) and not isinstance(v, bool) and v >= 60:
            n, m = divmod(v, 60)
            raise ValueError(f"{v} is how YAML reads an unquoted {n}:{m}; quote it: \"{n}:{m}\"")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if v == "unstructured":
            return v
        m = _NM.match(v)
        if not m:
            raise ValueError(f"pattern must be 'unstructured' or 'N:M' such as '2:4', got {v!r}")
        n, mm = int(m[1]), int(m[2])
        if not 0 < n < mm:
            raise ValueError(f"pattern {v!r} needs 0 < N < M")
        return v

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v):
        values = v.values() if isinstance(v, dict) else [v]
        if isinstance(v, dict):
            bad = [k for k in v if k not in ROLES]
            if bad:
                raise ValueError(f"unknown role '{bad[0]}' (known: {', '.join(ROLES)})")
        for x in values:
            for y in x if isinstance(x, list) else [x]:
                if not 0.0 <= y < 1.0:
                    raise ValueError(f"sparsity must be in [0, 1), got {y}")
            if isinstance(x, list) and not x:
                raise ValueError("a per-group sparsity list needs at least one value")
        return v

    @property
    def allocation(self) -> str | None:
        """The allocation `distribution` names (a sparsity per block), or None."""
        return None if self.distribution in SPREADS else self.distribution

    @model_validator(mode="after")
    def _consistent(self) -> PruneSpec:
        self._blocks([self.method, self.distribution])
        if self.distribution == "budget":
            if self.vision_share is None:
                raise ValueError("distribution 'budget' needs vision_share in (0, 1)")
            if isinstance(self.sparsity, dict) or self.nm:
                raise ValueError("distribution 'budget' needs a single unstructured sparsity")
        if self.nm and self.groups:
            raise ValueError(f"pattern {self.pattern} fixes every layer's sparsity; per-group "
                             "sparsity lists need pattern: unstructured")
        if self.allocation:
            self._check_allocation(self.allocation)
        return self._normalized()

    def _check_allocation(self, name: str) -> None:
        if self.nm:
            raise ValueError(f"pattern {self.pattern} fixes every layer's sparsity; "
                             f"distribution '{name}' needs pattern: unstructured")
        if self.groups:
            raise ValueError(f"distribution '{name}' sets each block's sparsity itself; give "
                             "one sparsity per role, not a list")
        values = self.sparsity.values() if isinstance(self.sparsity, dict) else [self.sparsity]
        levels = [float(v) for v in values if not isinstance(v, list)]  # lists refused above
        check = getattr(self.options(name), "check", None)  # the allocation's own limits
        if check is not None:
            check(levels)

    @property
    def groups(self) -> dict[str, list[float]]:
        """Roles whose sparsity is a list, one value per consecutive block group."""
        if not isinstance(self.sparsity, dict):
            return {}
        return {r: v for r, v in self.sparsity.items() if isinstance(v, list)}

    def _normalized(self) -> PruneSpec:
        """Canonical values for fields that cannot matter (see the module docstring)."""
        m = registry.get("methods", self.method)
        if self.nm:
            n, mm = self.nm
            self.sparsity = ({r: n / mm for r, v in self.sparsity.items() if v}
                             if isinstance(self.sparsity, dict) else n / mm)
            self.scope = "row"
        if self.distribution != "budget":
            self.vision_share = None
        if isinstance(self.sparsity, dict) and not self.allocation:
            self.distribution = "equal"  # the map says which roles; an allocation still acts
        if m.needs is None and not self.allocation:
            self.calibration = None
            self.propagation = "sequential"
        elif self.calibration is None:
            self.calibration = CalibrationSpec()
        if not m.seeded:
            self.seed = 0
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        m = _NM.match(self.pattern)
        return (int(m[1]), int(m[2])) if m else None


def role_sparsity(spec: PruneSpec, params: dict[str, int]) -> dict[str, float]:
    """Per-role sparsity; `params` is each role's prunable weight count (for `budget`)."""
    if isinstance(spec.sparsity, dict):  # a group list counts by its mean here
        return {r: float(np.mean(v)) if isinstance(v, list) else v
                for r, v in ((r, spec.sparsity.get(r, 0.0)) for r in ROLES)}
    s = spec.sparsity if spec.nm is None else spec.nm[0] / spec.nm[1]
    out = dict.fromkeys(ROLES, 0.0)
    if spec.distribution == "equal" or spec.allocation:  # an allocation: per block
        out["vision"] = out["language"] = s
    elif spec.distribution == "language_only":
        out["language"] = s
    elif spec.distribution == "vision_only":
        out["vision"] = s
    else:  # budget: vision gives `share` of the pruned weights, parameter-weighted
        share = spec.vision_share
        assert share is not None  # the spec's validator asks for it with budget
        total = params["vision"] + params["language"]
        out["vision"] = share * s * total / params["vision"]
        out["language"] = (1 - share) * s * total / params["language"]
        for r in ("vision", "language"):
            if out[r] >= 1.0:
                raise UserError(f"budget {s:.2f} with vision_share {share} needs "
                                f"{out[r]:.0%} sparsity in {r}; lower the share or the budget")
    return out


def _zeros(shapes: list[tuple[int, int]], s: float, scope: Scope) -> int:
    if scope == "row":
        return sum(rows * int(cols * s) for rows, cols in shapes)
    return sum(int(rows * cols * s) for rows, cols in shapes)


def _solve(shapes: list[tuple[int, int]], zeros: float, scope: Scope) -> float:
    """The sparsity whose per-row (or per-layer) floors prune closest to `zeros` weights."""
    lo, hi = 0.0, 0.999999
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _zeros(shapes, mid, scope) < zeros else (lo, mid)
    return min((lo, hi), key=lambda s: abs(_zeros(shapes, s, scope) - zeros))


def _joint(shapes: dict[str, list[tuple[int, int]]], want: dict[str, float],
           scope: Scope) -> tuple[float, float]:
    """(vision, language) sparsities whose floored counts add up closest to the budget's
    zeros. Counts move in steps (all Linears of one width cross a floor at once), so each role
    rounded to its own closest count can miss the total by both steps, and so can vision's
    closest count with language's best answer to it: on a tiny LLaVA (steps of 64 and 512
    weights) 0.6 came out 0.60511 where 0.59943 was reachable. So the pairs are searched:
    vision takes each achievable count within one language step of its share's count, language
    the counts around the rest, and the pair closest to the total wins (then the one closest
    to the share)."""
    total = want["vision"] + want["language"]
    lang = shapes["language"] if scope == "layer" else _by_width(shapes["language"])
    vis = shapes["vision"] if scope == "layer" else _by_width(shapes["vision"])
    sl0 = _solve(lang, want["language"], scope)
    cl0 = _zeros(lang, sl0, scope)
    step = max([abs(_zeros(lang, s, scope) - cl0) for s in _neighbours(lang, sl0, scope)],
               default=0)
    best: tuple[tuple[float, float], tuple[float, float]] | None = None
    for sv in _around(vis, _solve(vis, want["vision"], scope), scope, step):
        zv = _zeros(vis, sv, scope)
        s1 = _solve(lang, total - zv, scope)
        for sl in (s1, *_neighbours(lang, s1, scope)):
            score = (abs(zv + _zeros(lang, sl, scope) - total), abs(zv - want["vision"]))
            if best is None or score < best[0]:
                best = (score, (sv, sl))
    assert best is not None
    return best[1]


def _by_width(shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Per-row counts of Linears of one width move together: (their rows, width) pairs
    (the same counts as `shapes` with scope row, fewer terms)."""
    rows: dict[int, int] = {}
    for r, c in shapes:
        rows[c] = rows.get(c, 0) + r
    return [(r, c) for c, r in sorted(rows.items())]


def _around(shapes: list[tuple[int, int]], s0: float, scope: Scope, reach: int,
            most: int = 32) -> list[float]:
    """s0 and the sparsities of the achievable counts on each side of its count, out to
    `reach` weights from it (at least one step, at most `most` steps each way)."""
    c0 = _zeros(shapes, s0, scope)
    out = [s0]
    for side in (0, 1):
        s = s0
        for _ in range(most):
            moved = _neighbours(shapes, s, scope)
            nxt = [x for x in moved if (x > s) == bool(side)]
            if not nxt:
                break
            s = nxt[0]
            out.append(s)
            if abs(_zeros(shapes, s, scope) - c0) >= reach:
                break
    return out


def _neighbours(shapes: list[tuple[int, int]], s0: float, scope: Scope) -> list[float]:
    """The sparsities of the achievable counts just below and just above the count at s0."""
    c0 = _zeros(shapes, s0, scope)
    out = []
    for lo, hi, up in ((s0, 0.999999, True), (0.0, s0, False)):
        if (_zeros(shapes, hi, scope) > c0) if up else (_zeros(shapes, lo, scope) < c0):
            for _ in range(50):  # the first s past s0 whose count differs
                mid = (lo + hi) / 2
                moved = _zeros(shapes, mid, scope) != c0
                lo, hi = (lo, mid) if moved == up else (mid, hi)
            out.append(hi if up else lo)
    return out


def block_groups(adapter: Adapter, role: str, n: int) -> list[list[str]]:
    """A role's blocks in `n` consecutive groups (earlier groups one longer when n does not
    divide the count), as lists of block names."""
    blocks = [b.name for b in adapter.blocks(role)]
    if not 0 < n <= len(blocks):
        raise UserError(f"prune.sparsity.{role}: {n} groups for {len(blocks)} {role} blocks; "
                        f"give 1 to {len(blocks)} values")
    return [list(g) for g in np.array_split(np.array(blocks, dtype=object), n)]


def group_params(adapter: Adapter, role: str, n: int) -> list[int]:
    """Prunable weights of each of a role's `n` block groups."""
    lins = adapter.role_linears(role)
    return [sum(lin.weight.numel() for name, lin in lins.items()
                if any(under(name, b) for b in group))
            for group in block_groups(adapter, role, n)]


def targets(spec: PruneSpec, adapter: Adapter) -> dict[str, Target]:
    """Per-role targets for this model; roles left at 0 are absent. Checks N:M widths.

    For `budget`, each role's sparsity is solved against its layers' shapes so that the
    floors of per-row (or per-layer) counts still add up to the global target. A role given
    a per-group list gets, besides its role target (the parameter-weighted mean), one target
    per Linear of its groups, keyed by the Linear's path (the engine looks a Linear's path
    up first, then its role)."""
    params = {r: adapter.parameter_count(r) for r in ROLES}
    levels = role_sparsity(spec, params)
    if spec.distribution == "budget" and not isinstance(spec.sparsity, dict):
        # rounded jointly: vision takes the count closest to its share, then language the
        # count that brings the total closest to the budget (not each to its own closest,
        # which let both round the same way: 0.5085 for 0.5 on a tiny LLaVA)
        levels["vision"], levels["language"] = _joint(
            {r: [tuple(lin.weight.shape) for lin in adapter.role_linears(r).values()]
             for r in ("vision", "language")},
            {r: levels[r] * params[r] for r in ("vision", "language")}, spec.scope)
    out = {}
    for role, s in levels.items():
        if s <= 0:
            continue
        if spec.nm:  # every pruned role gets the N:M pattern; a map only says which
            n, m = spec.nm
            for name, lin in adapter.role_linears(role).items():
                if lin.in_features % m:
                    raise UserError(f"pattern {n}:{m}: M={m} does not divide the input width "
                                    f"{lin.in_features} of {name}")
            out[role] = Target(n / m, spec.scope, n, m)
        else:
            out[role] = Target(s, spec.scope)
    for role, values in spec.groups.items():
        lins = adapter.role_linears(role)
        sizes = group_params(adapter, role, len(values))
        out[role] = Target(float(np.dot(values, sizes) / max(1, sum(sizes))), spec.scope)
        for group, level in zip(block_groups(adapter, role, len(values)), values, strict=True):
            for name in lins:
                if any(under(name, b) for b in group):
                    out[name] = Target(level, spec.scope)
    return out


def load(data: dict | None, source: str = "prune spec") -> PruneSpec:
    """Validate a `prune:` mapping; errors name the source and the field, on one line."""
    return validate(PruneSpec, data or {}, source)


def read_file(path: Path) -> PruneSpec:
    """A `vlmprune prune` spec file: a prune mapping, or a file holding only `prune:` one.
    Unlike a grid, where `prune: null` is the dense cell, a spec file must say how to prune."""
    example = "e.g. `method: wanda` and `sparsity: 0.5`, or the same under `prune:`"
    data = yamlfile.load(path, "prune spec")
    if isinstance(data, dict) and "prune" in data:
        extra = sorted(str(k) for k in data if k != "prune")
        if extra:
            raise UserError(f"{path}: field '{extra[0]}': unknown key beside 'prune:' (a spec "
                            "file is a prune mapping, or holds only `prune:`)")
        if data["prune"] is None:
            raise UserError(f"{path}: field 'prune': null (in a grid, the dense cell); a spec "
                            f"file must say how to prune, {example}")
        data = data["prune"]
    if not isinstance(data, dict) or not data:
        what = "empty" if data in (None, {}) else f"a {type(data).__name__}, not a mapping"
        raise UserError(f"{path}: {what}; a prune spec is a mapping, {example}")
    return load(data, str(path))
