"""`vlmprune search GRID`: an Optuna study whose trials are cells.

A trial is a cell: the grid's `base` with the trial's sparsity map (and choices), run through
the sweep's stages, so it shares the stage cache with sweeps and other trials, and is logged
as an MLflow child run of the study's parent run (experiment `<grid>-search`). The study
lives in `results/optuna.db` (any Optuna storage URL with `--storage`), created or resumed:

- kill-safe: a trial left RUNNING by a process that no longer exists (same host) is marked
  FAIL at the next start; its cell's finished stages are cached, so nothing is lost; the
  study goes on until it holds the requested number of COMPLETE trials;
- shared: several processes on one study ask for trials in turn (a file lock beside the
  results folder), and a trial whose parameters repeat a COMPLETE or RUNNING one is dropped
  (PRUNED, "duplicate") before any work, so no setting is run twice;
- baselines: the paper's settings at the budget are enqueued first (never pruned early), so
  every study holds them;
- early stopping (single objective): a quick evaluation (`quick_limit` documents per task) is
  reported to a median pruner before the full one;
- honest budgets: a trial whose achieved sparsity misses the budget by more than 0.5 points
  is FAIL with the reason, not a result.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import UserError, first_line, format_validation_error, validate
from harness.evaluation.suite import suite_metrics, user_suites
from harness.fingerprint import digest
from harness.models.locate import model_content, model_folder
from harness.models.shapes import shapes_of
from harness.paths import memo_json, new_file, results_dir
from harness.pruning.spec import group_params
from harness.search import spec as search_spec
from harness.search.space import Space, dim_name
from harness.sweep import grid
from harness.sweep.cell import Cell, CellSpec
from harness.sweep.checks import check

log = logging.getLogger(__name__)
BUDGET_TOLERANCE = 0.005
OWNER = "vlmprune.owner"  # [host, pid] of the process running the trial
BASELINE = "vlmprune.baseline"  # the paper's setting a trial stands for
INFO = "vlmprune"  # what became of the trial: achieved, seconds, failure, pruned_at, ...
STAGE_TIMES = ("prune", "recover", "evaluate")


def storage_url(storage: str | None) -> str:
    if storage:
        return storage
    results_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(results_dir() / 'optuna.db').resolve()}"


def prepare(name: str, study: str | None = None
            ) -> tuple[grid.GridFile, search_spec.SearchSpec, CellSpec]:
    """The grid, its validated `search:` section and its base cell; nothing written. Checked
    as a grid's cells are, before any model loads: every trial cell the section can make
    (each choice, each combination of choices at both ends of the role ranges) is a valid
    cell that prunes unstructured, its suite, model and data are there, the objective is a
    metric of its suite, and groups fit the model's blocks (from its shapes). `study`: the
    study name given (`--study`), checked by `study_name`."""
    g = grid.read(name)
    path = grid.path_of(name)
    study_name(study, g)
    if g.search is None:
        raise UserError(f"{path}: no 'search:' section (see harness/search/spec.py)")
    s = search_spec.load(g.search, str(path))
    data = copy.deepcopy(g.base)
    grid.set_dotted(data, "prune.sparsity", {r: 0.5 for r in s.roles})
    data["seed"] = g.seeds[0]
    grid.with_suite(data, user_suites(g.suites, path), f"{path}: search: base cell: ")
    base = validate(CellSpec, data, path, "search: base cell: ")
    if base.prune is None:
        raise UserError(f"{path}: field 'base.prune': a search prunes; the base cannot be dense")
    if base.prune.nm:
        raise UserError(f"{path}: field 'base.prune.pattern': {base.prune.pattern} fixes the "
                        "sparsity; a search needs pattern: unstructured")
    for key in s.choices:
        if not grid.is_field(key):
            raise UserError(f"{path}: field 'search.choices.{key}': not a cell field")
    cells = _trial_cells(s, base, path)
    if model_folder(base.model) is not None:  # groups against the blocks; a missing model
        weight_counts(s, base, path)  # is named by the check below
    check(path, cells, kind="search trial")
    _check_objective(s, cells, path)
    return g, s, base


def study_name(given: str | None, g: grid.GridFile) -> str:
    """The study a search runs: `given` (`--study`), else the grid's name. An empty name is
    refused: it read as no name, and the search ran the grid's study."""
    if given is not None and not given.strip():
        raise UserError(f"--study {given!r}: an empty study name; give one, or leave --study "
                        f"out for the grid's name ('{g.name}')")
    return given or g.name


def _trial_cells(s: search_spec.SearchSpec, base: CellSpec, path: Path) -> list[Cell]:
    """The cells trials can make, validated: each choice alone on the base (an error names
    the choice), then every combination of choices with every searched dimension at the low
    ends of the ranges, then at the high ends (checks that depend on a sparsity, such as
    OWL's lam or ECoFLaP's max_sparsity, hold between the ends if they hold at both)."""
    for key, values in s.choices.items():
        for value in values:
            _trial(base, None, {key: value}, path,
                   f"field 'search.choices.{key}': {value!r}: ")
    cells: list[Cell] = []
    keys = list(s.choices)
    for combo in itertools.product(*s.choices.values()):
        choices = dict(zip(keys, combo, strict=True))
        for end in ("low", "high"):
            sparsity: dict = {r: [getattr(rng, end)] * rng.groups if rng.groups > 1
                              else getattr(rng, end) for r, rng in s.roles.items()}
            shown = label(sparsity, choices)
            spec = _trial(base, sparsity, choices, path, f"field 'search.roles': a trial at "
                          f"the ranges' {end} ends ({shown}): ")
            cells.append(Cell(len(cells), {**formatted(sparsity), **choices}, spec, ""))
    return cells


def _trial(base: CellSpec, sparsity: dict | None, choices: dict[str, Any], path: Path,
           where: str) -> CellSpec:
    """The trial cell (or, with no sparsity, the base with the choices) or a UserError."""
    data = base.model_dump()
    if sparsity is not None:
        data["prune"]["sparsity"] = sparsity
    for k, v in choices.items():
        grid.set_dotted(data, k, v)
    try:
        spec = grid.seeded(CellSpec.model_validate(data))
    except ValidationError as e:
        raise UserError(f"{path}: {where}not a valid cell: {format_validation_error(e)}"
                        ) from None
    if spec.prune is None:
        raise UserError(f"{path}: {where}a dense cell; a search prunes")
    if spec.prune.nm:
        raise UserError(f"{path}: {where}pattern {spec.prune.pattern} fixes the sparsity; a "
                        "search needs pattern: unstructured")
    return spec


def _check_objective(s: search_spec.SearchSpec, cells: list[Cell], path: Path) -> None:
    """`search.objective` names a metric every trial's suite reports."""
    if s.objective is None:
        return
    evals = {c.spec.eval.model_dump_json(): c.spec.eval for c in cells}
    for ev in evals.values():
        known = suite_metrics(ev.resolved())
        if known is not None and s.objective not in known:
            raise UserError(f"{path}: field 'search.objective': '{s.objective}' is not a "
                            f"metric of suite '{ev.suite}' (known: {', '.join(known)})")


def space_for(s: search_spec.SearchSpec, base: CellSpec, path: Path) -> Space:
    params = weight_counts(s, base, path)
    space = Space(s, params)
    if s.budget is not None:  # can any split reach the budget inside the ranges?
        total = sum(params.values())
        lo = sum(space._range(n).low * p for n, p in params.items()) / total
        hi = sum(space._range(n).high * p for n, p in params.items()) / total
        if not lo <= s.budget <= hi:
            raise UserError(f"{path}: field 'search.budget': {s.budget} cannot be reached: "
                            f"the role ranges allow {lo:.3f} to {hi:.3f}")
    return space


def weight_counts(s: search_spec.SearchSpec, base: CellSpec, path: Path) -> dict[str, int]:
    """Prunable weights of each searched dimension, from the model's shapes (read once from
    the model built on the meta device, then from the user cache: models/shapes.py); kept
    in the user cache under a key of the model's content, layout and groups."""
    groups = {r: rng.groups for r, rng in s.roles.items()}
    key = digest({"model": base.model.keyed(exclude={"device"}),
                  "content": model_content(base.model), "groups": groups})
    return memo_json("weights", key, lambda: _count_weights(s, base, path),
                     lambda v: isinstance(v, dict) and all(isinstance(n, int)
                                                           for n in v.values()))


def _count_weights(s: search_spec.SearchSpec, base: CellSpec, path: Path) -> dict[str, int]:
    try:
        shapes = shapes_of(base.model)
    except UserError as e:
        raise UserError(f"{path}: field 'base.model': {e}") from None
    params = {}
    for role, rng in s.roles.items():
        blocks = len(shapes.blocks(role))
        if rng.groups > max(1, blocks):
            raise UserError(f"{path}: field 'search.roles.{role}.groups': {rng.groups} groups "
                            f"for {blocks} {role} blocks; give 1 to {blocks}")
        sizes = (group_params(shapes, role, rng.groups)  # type: ignore[arg-type]
                 if rng.groups > 1 else [shapes.parameter_count(role)])
        for g, n in enumerate(sizes):
            if n == 0:
                raise UserError(f"{path}: field 'search.roles.{role}': the model has no "
                                f"prunable {role} weights")
            params[dim_name(role, g, rng.groups)] = n
    return params


def cell_for(base: CellSpec, sparsity: dict, choices: dict[str, Any], path) -> CellSpec:
    data = base.model_dump()
    data["prune"]["sparsity"] = sparsity
    for k, v in choices.items():
        grid.set_dotted(data, k, v)
    return grid.seeded(validate(CellSpec, data, path, "search trial: "))


def formatted(sparsity: dict) -> dict[str, str]:
    """Sparsities as short text: 0.312, or [0.200, 0.500] for groups."""
    return {r: f"{v:.3f}" if isinstance(v, float) else
            "[" + ", ".join(f"{x:.3f}" for x in v) + "]" for r, v in sparsity.items()}


def label(sparsity: dict, choices: dict[str, Any]) -> str:
    return ", ".join([f"{r}={v}" for r, v in formatted(sparsity).items()] +
                     [f"{k}={v}" for k, v in choices.items()])


def owner() -> list:
    return [socket.gethostname(), os.getpid()]


def info(trial) -> dict[str, Any]:
    """A trial's outcome as recorded by the run loop, with its baseline name and owner."""
    host, pid = trial.user_attrs.get(OWNER) or [None, None]
    return dict(trial.user_attrs.get(INFO) or {}) | {
        "baseline": trial.user_attrs.get(BASELINE, ""), "host": host, "pid": pid}


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(pid, 0) is all there is


def open_study(s: search_spec.SearchSpec, name: str, storage: str | None):
    import optuna

    from harness.sweep.tracking import Store, store_problem

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(storage)
    db = _sqlite_file(url)
    store = Store(str(db) if db else url, "Optuna storage", "the study starts afresh (a "
                  "trial that repeats a computed cell takes it from the stage cache)", "--storage")
    directions = ["maximize"] + (["maximize"] if s.second else [])
    try:
        if db is not None:
            _check_sqlite(db)
        study = optuna.create_study(storage=url, study_name=name, load_if_exists=True,
                                    directions=directions, sampler=_sampler(s),
                                    pruner=_pruner(s))
    except UserError:
        raise
    except Exception as e:  # a damaged or foreign storage file, a server that does not answer
        raise UserError(store_problem(e, store) or f"{url}: cannot open the Optuna storage "
                        f"({type(e).__name__}: {first_line(e)[:120]})") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study '{name}' in {url} has {len(study.directions)} objective(s); "
                        f"this search has {len(directions)}: use --study NAME for a new one")
    return study


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite storage URL (None: another database, or in memory)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


def _check_sqlite(db: Path) -> None:
    """A SQLite storage is used only as vlmprune leaves one: a missing folder is named (not
    made: a misspelt path would silently start a new study), a new file is built aside and
    linked into place whole, and an empty file is refused. SQLite would take a 0-byte file
    for a new database and the study would start again beside its MLflow runs; vlmprune
    never leaves one (it writes whole files), so 0 bytes means the study was truncated away,
    or the file was made by another tool (`touch`): moving it aside says which is meant."""
    if not db.parent.is_dir():
        raise UserError(f"{db.parent}: no such folder, for the Optuna storage {db}; create "
                        "it (mkdir -p), or give --storage another URL")
    if not db.exists():
        _create_sqlite(db)
    elif db.is_file() and db.stat().st_size == 0:
        raise UserError(f"{db}: empty (0 bytes), not an Optuna storage: its study was lost "
                        f"(truncated?); move it aside (mv {db} {db}.bad) and run again to "
                        "start the study afresh, or point --storage at another one")


def _create_sqlite(db: Path) -> None:
    """Optuna's schema in a temporary sibling, then linked into place (no-clobber: a
    concurrent search's finished file wins)."""
    import optuna

    def build(tmp: Path) -> None:
        tmp.unlink()
        optuna.storages.RDBStorage(f"sqlite:///{tmp}").engine.dispose()

    new_file(db, build)


def _sampler(s: search_spec.SearchSpec):
    """The sampler; infeasible splits reach TPE and NSGA-II through `trial.set_constraint`
    (the run loop sets "budget": how far the derived sparsity falls outside its range)."""
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        import numpy as np

        space: dict[str, list] = {}
        for name in Space(s, {}).free:
            r = s.roles[name.split(".")[0]]
            assert r.step is not None  # the spec asks for a step with sampler grid
            space[f"sparsity.{name}"] = [round(float(v), 6) for v in
                                         np.arange(r.low, r.high + r.step / 2, r.step)]
        space |= dict(s.choices)
        return optuna.samplers.GridSampler(space, seed=s.seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed)


def _pruner(s: search_spec.SearchSpec):
    import optuna

    if s.pruner in ("none", "race"):  # a race stops its trials itself (run.py)
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)


def file_locked(storage: str | None) -> bool:
    """Searches of this storage ask their trials under the results folder's file lock
    (SQLite); a database server serializes on its own, and no shared folder is assumed."""
    return storage is None or storage.startswith("sqlite")


def fail_dead_trials(study, locked: bool = False) -> int:
    """Trials left RUNNING by a killed process of this host: FAIL (their cell's finished
    stages are cached, so a later trial with the same settings costs nothing). `locked`: the
    caller holds the study's lock, under which every search asks a trial and records its
    owner, so a RUNNING trial without an owner was asked by a process killed in between
    (a parallel search's workers, killed as they start, left one): FAIL too."""
    from optuna.trial import TrialState

    me = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get(OWNER) or [None, None]
        if (host == me and pid is not None and not alive(int(pid))) or (locked and host is None):
            study.tell(t.number, state=TrialState.FAIL)
            n += 1
    return n


def enqueue_baselines(study, space: Space) -> None:
    """Enqueue each baseline that has no COMPLETE, RUNNING or WAITING trial yet."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    have = {t.user_attrs.get(BASELINE) for t in study.get_trials(
        deepcopy=False, states=live)}
    for name, params in space.baselines().items():
        if name not in have:
            fixed = params | {k: v[0] for k, v in space.spec.choices.items()}
            study.enqueue_trial(fixed, user_attrs={BASELINE: name})


SAME = 1e-3  # sparsities this close prune alike (a row of 192 columns moves in 0.0052 steps)


def duplicate(study, trial) -> bool:
    """Another COMPLETE or RUNNING trial holds the same parameters (sparsities within
    `SAME`: TPE proposes near-repeats once it has converged)."""
    from optuna.trial import TrialState

    def same(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) <= SAME
        return a == b

    mine = trial.params
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number != trial.number and t.params.keys() == mine.keys() and all(
                same(t.params[k], v) for k, v in mine.items()):
            return True
    return False
