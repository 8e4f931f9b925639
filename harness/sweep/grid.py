"""Grid files (experiments/*.yaml): a base cell and axes, expanded into validated cells.

```yaml
name: methods
description: every pruning method at three sparsities and two N:M patterns
base: {prune: {method: wanda, sparsity: 0.5}, eval: {suite: shapes}}
axes:                                   # the cartesian product of the axes ...
  - prune.method: [magnitude, wanda]    # one dotted key and its values
  - zip:                                # ... or keys that move together
      prune.sparsity.vision: [0.3, 0.5]
      prune.sparsity.language: [0.7, 0.5]
include: [{prune: null}]                # extra cells: overrides of the base
exclude: [{prune.method: random, prune.pattern: "2:4"}]   # drop cells matching every key
seeds: [0]
suites: suites.yaml                     # the grid's own evaluation suites (a file beside it,
                                        # or the mapping itself): eval.suite may name them
```
Every cell is validated before any work: an error names the file, the cell and the field.
Cells are normalized (a field that cannot change a cell's output takes a canonical value: an
N:M pattern's sparsity, another method's options, ...): two combinations that differ only in
such a field are one cell, and a label shows only the settings that take effect.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness import fingerprint, settings, yamlfile
from harness.errors import UserError, unknown, validate
from harness.evaluation.suite import Suite, user_suites
from harness.fields import Name, Seed
from harness.models.locate import model_folder
from harness.pruning.spec import PruneSpec, refuse_shapes_default
from harness.recovery.spec import RecoverySpec
from harness.sweep.cell import Cell, CellSpec, eval_key, flat, seeded

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"  # the shipped grids
MAX_CELLS = 10_000  # a grid past this many cells is refused unless the limit is raised


def folders() -> list[Path]:
    """Where grids are found by name: VLMPRUNE_EXPERIMENTS (folders separated by ':'), then
    ./experiments when the command runs elsewhere than the checkout, then the shipped ones."""
    extra = list(settings.current().experiments)
    here = Path("experiments")
    out = [*extra, *([here] if here.is_dir() and here.resolve() != EXPERIMENTS else []),
           EXPERIMENTS]
    return list(dict.fromkeys(out))


class GridFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name  # reports/<name>/, results/<name>.parquet: checked by fields.check_name
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    axes: list[dict[str, Any]] = Field(default_factory=list)
    include: list[dict[str, Any]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    search: Any = None  # an Optuna search of the base cell (harness/search/spec.py)
    suites: str | dict[str, Any] | None = None  # the grid's own suites (evaluation/suite.py)

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, axis in enumerate(axes):
            if "zip" in axis:
                if len(axis) != 1 or not isinstance(axis["zip"], dict) or not axis["zip"]:
                    raise ValueError(f"axes[{i}]: a zip axis is {{zip: {{key: [values]}}}}")
                lists = axis["zip"]
            elif len(axis) != 1:
                raise ValueError(f"axes[{i}]: one dotted key per axis (use zip: for keys that "
                                 f"move together), got {sorted(axis)}")
            else:
                lists = axis
            for key, values in lists.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"axes[{i}].{key}: needs a non-empty list of values")
            if len({len(v) for v in lists.values()}) > 1:
                raise ValueError(f"axes[{i}].zip: lists differ in length "
                                 f"({', '.join(f'{k}: {len(v)}' for k, v in lists.items())})")
        return axes


def path_of(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    for folder in folders():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    return EXPERIMENTS / f"{name}.yaml"


def names() -> list[str]:
    return sorted({p.stem for folder in folders() for p in folder.glob("*.yaml")})


def read(name: str) -> GridFile:
    path = path_of(name)
    if not path.is_file():
        if path.parent == EXPERIMENTS and path.suffix == ".yaml":
            raise unknown("grid", name, names())
        raise UserError(f"{path}: no such grid file")
    data = yamlfile.load(path, "grid file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a grid file is a mapping with name, base, axes, ...")
    return validate(GridFile, data, path)


def with_suite(data: dict, user: dict[str, Suite], where: str = "") -> None:
    """A cell naming one of the grid's own suites gets its tasks, and its limit unless the
    cell sets one: the cell holds what it is scored on (a worker, here or on a Ray node,
    needs no suites file), and its key the suite's content, not a name. Such a suite and
    `eval.tasks` in one cell (a base naming the suite, an include naming tasks) are refused,
    as a shipped suite and tasks are."""
    ev = data.get("eval")
    if not isinstance(ev, dict) or not isinstance(ev.get("suite"), str) \
            or ev["suite"] not in user:
        return
    if ev.get("tasks") is not None:
        raise UserError(f"{where}field 'eval': suite '{ev['suite']}' (the grid's) and tasks "
                        f"{ev['tasks']} name two evaluations: give one")
    s = user[ev["suite"]]
    ev["tasks"] = list(s.tasks)
    if ev.get("limit") is None and s.limit is not None:
        ev["limit"] = s.limit


def set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


RENAMED = {"model.adapter": "model.family"}  # old field names grid files may still use


def renamed(keys: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys under the fields' current names."""
    return {RENAMED.get(k, k): v for k, v in keys.items()}


def _combos(grid: GridFile) -> list[dict[str, Any]]:
    options = []
    for axis in grid.axes:
        lists = axis["zip"] if "zip" in axis else axis
        n = len(next(iter(lists.values())))
        options.append([{k: v[i] for k, v in lists.items()} for i in range(n)])
    combos = [dict(itertools.chain.from_iterable(d.items() for d in prod))
              for prod in itertools.product(*options)] if options else [{}]
    return [renamed(c) for c in combos + [flat(inc) if inc else {} for inc in grid.include]]


def expand(name: str, where: dict[str, str] | None = None) -> tuple[GridFile, list[Cell]]:
    """The grid's validated, de-duplicated cells (optionally only those matching `where`)."""
    fingerprint.fresh()  # input files may have changed since the last expansion
    grid = read(name)
    path = path_of(name)
    where = renamed(where) if where else where
    _check_rules(grid, path)
    _check_size(grid, path)
    user = user_suites(grid.suites, path)
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for combo in _combos(grid):
        for seed in grid.seeds:
            data = copy.deepcopy(grid.base)
            model = data.get("model")
            if isinstance(model, dict) and "adapter" in model and "family" not in model:
                model["family"] = model.pop("adapter")  # an axis may name it model.family
            for key, value in combo.items():
                set_dotted(data, key, value)
            data["seed"] = seed
            overrides = combo | ({"seed": seed} if len(grid.seeds) > 1 else {})
            label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"
            which = f"cell {len(cells)} ({label}): "
            with_suite(data, user, f"{path}: {which}")
            written = validate(CellSpec, data, path, which)
            # before `seeded` writes every field out; a model not on this machine is the
            # checks' to report
            if written.prune is not None and model_folder(written.model) is not None:
                refuse_shapes_default(written.model.name, written.prune, f"{path}: {which}")
            spec = seeded(written)
            fields = flat(spec.model_dump())
            overrides = {k: v for k, v in overrides.items() if _takes_effect(k, v, fields)}
            if _excluded(grid, fields, path):
                continue
            h = eval_key(spec)
            if h in seen:  # the same cell again: its label keeps what all its combos agree on
                first = seen[h]
                first.overrides = {k: v for k, v in first.overrides.items()
                                   if k in overrides and overrides[k] == v}
                continue
            seen[h] = cell = Cell(len(cells), overrides, spec, h)
            cells.append(cell)
    if where:
        kept = [c for c in cells if _matches(c, where, path)]
        if cells and not kept:
            raise UserError(_no_match(cells, where, path))
        cells = kept
    return grid, cells


def _takes_effect(key: str, value: Any, fields: dict[str, Any]) -> bool:
    """An override survives normalization: the cell holds that value (or, for a mapping, a
    value under that key)."""
    if key in fields:
        return fields[key] == value
    return any(k.startswith(key + ".") for k in fields) and isinstance(value, dict)


def is_field(key: str) -> bool:
    """A dotted key names a cell field (or a part of one, or a key inside a map field)."""
    return any(k == key or k.startswith(key + ".") or key.startswith(k + ".")
               for k in _known_fields())


@functools.cache
def _known_fields() -> tuple[str, ...]:
    blocks = [f"prune.{n}" for n in PruneSpec.block_names()] + \
        [f"recover.{n}" for n in RecoverySpec.block_names()]  # a plugin's options too
    return tuple(dict.fromkeys([*flat(CellSpec().model_dump()), *blocks]))


def _check_rules(grid: GridFile, path: Path) -> None:
    """Every key of every exclude rule names a cell field (checked once, up front: a rule
    after one that excludes everything is checked too)."""
    for i, rule in enumerate(grid.exclude):
        for key in renamed(flat(rule)):
            if not is_field(key):
                raise UserError(f"{path}: field 'exclude[{i}].{key}': not a cell field")


def max_cells() -> int:
    """The running command's limit (--max-cells, VLMPRUNE_MAX_CELLS), else MAX_CELLS."""
    given = settings.current().max_cells
    if given is None:
        return MAX_CELLS
    try:
        return int(given)
    except ValueError:
        raise UserError(f"VLMPRUNE_MAX_CELLS={given!r}: give a whole number of cells") from None


def _check_size(grid: GridFile, path: Path) -> None:
    """Count the cells before making any: a product of long axes is refused at once."""
    sizes = [len(next(iter((a["zip"] if "zip" in a else a).values()))) for a in grid.axes]
    n = (math.prod(sizes) + len(grid.include)) * len(grid.seeds)
    limit = max_cells()
    if n > limit:
        shape = " × ".join(map(str, sizes)) or "1"
        raise UserError(f"{path}: {n:,} cells (axes {shape}, plus {len(grid.include)} "
                        f"included, × {len(grid.seeds)} seeds), more than the limit of "
                        f"{limit:,}; narrow the axes, or raise the limit with --max-cells N "
                        "(or VLMPRUNE_MAX_CELLS)")


def _excluded(grid: GridFile, fields: dict[str, Any], path: Path) -> bool:
    for rule in grid.exclude:
        rule = renamed(flat(rule))
        if all(k in fields and fields[k] == v for k, v in rule.items()):
            return True
    return False


def _no_match(cells: list[Cell], where: dict[str, str], path: Path) -> str:
    """Why --where selects no cell: the value no cell has, with the values the field takes
    in the grid (or, when each matches some cell, that no cell has them all)."""
    fields = [flat(c.spec.model_dump()) for c in cells]
    takes = {k: sorted({str(f[k]) for f in fields if k in f}) for k in where}

    def values(key: str) -> str:
        if takes[key]:
            return f"{key} takes: {', '.join(takes[key])}"
        under = sorted({k for f in fields for k in f if k.startswith(key + ".")})
        return f"{key} is no single value here; its keys: {', '.join(under[:6]) or 'none'}"

    for key, value in where.items():
        if value not in takes[key]:
            words = [v for v in takes[key] if not v.replace(".", "", 1).isdigit()]
            close = difflib.get_close_matches(value, words, n=1)  # a misspelt word, not 0.7
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return (f"--where {key}={value}: no cell of {path} has it ({values(key)}{hint})")
    both = " ".join(f"--where {k}={v}" for k, v in where.items())
    return (f"{both}: no cell of {path} has all of these "
            f"({'; '.join(values(k) for k in where)})")


def _matches(cell: Cell, where: dict[str, str], path: Path) -> bool:
    fields = flat(cell.spec.model_dump())
    for key, value in where.items():
        if not is_field(key):
            raise UserError(f"--where {key}: not a cell field of {path} "
                            f"(e.g. {', '.join(sorted(fields)[:4])})")
        if str(fields.get(key)) != value:
            return False
    return True
