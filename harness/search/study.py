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
import logging
import os
import socket
from pathlib import Path
from typing import Any

from harness.errors import UserError, validate
from harness.paths import results_dir
from harness.search import spec as search_spec
from harness.search.space import Space, dim_name
from harness.sweep import grid
from harness.sweep.cell import CellSpec

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


def prepare(name: str) -> tuple[grid.GridFile, search_spec.SearchSpec, CellSpec]:
    """The grid, its validated `search:` section and its base cell; nothing written."""
    g = grid.read(name)
    path = grid.path_of(name)
    if g.search is None:
        raise UserError(f"{path}: no 'search:' section (see harness/search/spec.py)")
    s = search_spec.load(g.search, str(path))
    data = copy.deepcopy(g.base)
    grid.set_dotted(data, "prune.sparsity", {r: 0.5 for r in s.roles})
    data["seed"] = g.seeds[0]
    base = validate(CellSpec, data, path, "search: base cell: ")
    if base.prune is None:
        raise UserError(f"{path}: field 'base.prune': a search prunes; the base cannot be dense")
    if base.prune.nm:
        raise UserError(f"{path}: field 'base.prune.pattern': {base.prune.pattern} fixes the "
                        "sparsity; a search needs pattern: unstructured")
    for key in s.choices:
        if not grid.is_field(key):
            raise UserError(f"{path}: field 'search.choices.{key}': not a cell field")
    return g, s, base


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
    """Prunable weights of each searched dimension, from the model built on the meta
    device; kept in the user cache under a key of the model's content, layout and groups
    (building it means importing transformers: seconds a resumed search need not spend)."""
    from harness.paths import memo_json
    from harness.sweep.cell import digest, model_content

    groups = {r: rng.groups for r, rng in s.roles.items()}
    key = digest({"model": base.model.model_dump(exclude={"device"}),
                  "content": model_content(base.model), "groups": groups})
    return memo_json("weights", key, lambda: _count_weights(s, base, path),
                     lambda v: isinstance(v, dict) and all(isinstance(n, int)
                                                           for n in v.values()))


def _count_weights(s: search_spec.SearchSpec, base: CellSpec, path: Path) -> dict[str, int]:
    from harness.models.load import load
    from harness.pruning.spec import group_params

    adapter = load(base.model, weights=False)
    params = {}
    for role, rng in s.roles.items():
        blocks = len(adapter.blocks(role))
        if rng.groups > max(1, blocks):
            raise UserError(f"{path}: field 'search.roles.{role}.groups': {rng.groups} groups "
                            f"for {blocks} {role} blocks; give 1 to {blocks}")
        sizes = group_params(adapter, role, rng.groups) if rng.groups > 1 else \
            [adapter.parameter_count(role)]
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

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(storage)
    directions = ["maximize"] + (["maximize"] if s.second else [])
    try:
        study = optuna.create_study(storage=url, study_name=name, load_if_exists=True,
                                    directions=directions, sampler=_sampler(s),
                                    pruner=_pruner(s))
    except Exception as e:  # a damaged or foreign storage file
        from harness.sweep.tracking import store_problem

        raise UserError(store_problem(e) or f"{url}: cannot open the Optuna storage "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise UserError(f"study '{name}' in {url} has {len(study.directions)} objective(s); "
                        f"this search has {len(directions)}: use --study NAME for a new one")
    return study


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

    if s.pruner == "none":
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
