"""What a grid's cells name, checked before any cell runs (`plan`, `sweep`, `--dry-run`).

Validation of each cell's fields happens when the grid expands; these are the checks that
need more than the cell: the suite exists, each of its tasks is known (a local task file, or
one of lmms-eval's with its data in the HF cache), the model is there
(embedded, a folder, or in the Hugging Face cache), and where a cell's pruning depends on
the model's shapes (an N:M pattern against every pruned layer's width, a budget that some
split must reach, per-group lists against the block count) the targets are computed on the
model's shapes (harness/models/shapes.py: read once from the model built on the meta
device, then from the user cache). Otherwise these failed only when their
cell ran, after other cells' pruning.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness import hub, jsonl
from harness.errors import UserError
from harness.evaluation.suite import check as check_suite
from harness.models.locate import model_folder
from harness.models.shapes import shapes_of
from harness.sweep.cell import Cell

if TYPE_CHECKING:
    from harness.pruning.spec import PruneSpec


def check(path: Path, cells: list[Cell], keep_going: bool = False, kind: str = "cell") -> None:
    """Raise a one-line `UserError` naming the grid file, the cell and the field of the first
    cell that cannot run. `keep_going`: a missing model is left to fail its cells (recorded
    as FAILED) while the others run. `kind`: what a cell is called in the error (a search's
    trials are not numbered cells)."""
    suites: dict[str, str | None] = {}
    models: dict[str, object] = {}
    sources: set = set()
    for cell in cells:
        where = (f"{path}: cell {cell.index} ({cell.label}): " if kind == "cell" else
                 f"{path}: {kind} ({cell.label}): ")
        ev = cell.spec.eval
        field = "eval.tasks" if ev.tasks else "eval.suite"
        suite = f"{ev.suite}:{ev.tasks}"
        if suite not in suites:
            try:  # every task known, local or lmms-eval's, with its data on this machine
                check_suite(ev.resolved())
                suites[suite] = None
            except UserError as e:
                suites[suite] = str(e)
        if suites[suite]:
            raise UserError(f"{where}field '{field}': {suites[suite]}")
        m = cell.spec.model
        key = m.model_dump_json()
        if key not in models:
            models[key] = model_folder(m) is not None
        if not models[key]:
            if keep_going:
                continue
            raise UserError(f"{where}field 'model.name': '{m.name}' is not an embedded model, "
                            "a local folder, or in the Hugging Face cache (download it where "
                            "the hub is reachable; --keep-going records such cells as FAILED "
                            "and runs the others)")
        try:
            jsonl.check_sources(cell.spec, sources)
            _hub_sources(cell, sources)
        except UserError as e:
            raise UserError(f"{where}{e}") from None
        p = cell.spec.prune
        if p is not None and needs_shapes(p):
            _check_shapes(where, cell, models)


def _hub_sources(cell: Cell, seen: set) -> None:
    """The hub datasets a cell's calibration and recovery read, found on this machine (one
    line naming the `hf download` command otherwise); `seen` skips those found already."""
    wanted = []
    cal = cell.spec.prune.calibration if cell.spec.prune else None
    if cal is not None:
        wanted.append((jsonl.CALIBRATION[0], cal.source, cal.split))
    if cell.spec.recover.method != "none":
        d = cell.spec.recover.data
        wanted.append((jsonl.RECOVERY[0], d.source, d.split))
    for field, source, split in wanted:
        if hub.is_source(source) and (source, split) not in seen:
            hub.located(field, source, split)
            seen.add((source, split))


def needs_shapes(p: PruneSpec) -> bool:
    """Whether what a spec prunes depends on the model's shapes (N:M widths, a budget's
    split, group lists against the block count): `pruning.spec.targets` then checks it on
    `Shapes` before any model loads."""
    return bool(p.nm or p.distribution == "budget" or p.groups)


def _check_shapes(where: str, cell: Cell, models: dict[str, object]) -> None:
    from harness.pruning.spec import targets

    key = "shapes:" + cell.spec.model.model_dump_json()
    if key not in models:
        try:
            models[key] = shapes_of(cell.spec.model)
        except UserError as e:
            raise UserError(f"{where}field 'model': {e}") from None
    try:
        targets(cell.spec.prune, models[key])  # type: ignore[arg-type]
    except UserError as e:
        raise UserError(f"{where}field 'prune': {e}") from None
