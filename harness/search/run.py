"""The search loop: ask a trial, run its cell, tell its value, log it; then the summary.

See study.py for what makes it kill-safe and shareable. A trial's life:
ask (under the lock, with a duplicate check) -> sparsities from the space (infeasible:
PRUNED at once, with its constraint violation) -> quick evaluation and the pruner (not for
baselines) -> the full cell -> budget check -> tell -> MLflow child run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError, first_line
from harness.evaluation import intervals, paired
from harness.evaluation.metrics import ranked
from harness.evaluation.suite import task_size
from harness.paths import results_dir
from harness.search import output
from harness.search import study as st
from harness.search.space import Space
from harness.search.spec import SearchSpec
from harness.sweep import cache, grid
from harness.sweep.cell import Cell, CellSpec, EvalSpec, eval_key
from harness.sweep.console import console, quiet_libraries
from harness.sweep.display import Display
from harness.sweep.executors import Dispatch
from harness.sweep.result import CellResult

log = logging.getLogger(__name__)
# a search process stops after this many failed trials, or the wanted trials if more
MAX_FAILED = 3


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one search process shares: the grid file and its path, the
    search spec, the base cell that trials vary, and the space that samples them."""

    grid: grid.GridFile
    spec: SearchSpec
    base: CellSpec
    path: Path
    space: Space


def search(name: str, trials: int | None = None, storage: str | None = None,
           study_name: str | None = None, progress: bool = True, executor: str = "local",
           workers: int | None = None, ray_address: str | None = None) -> int:
    """Run (or resume) the search of a grid file; returns the exit code. With an executor
    other than local, its workers run the trials (parallel.py) and this process watches."""
    from harness.sweep.tracking import store_errors

    how = Dispatch(executor, workers, ray_address)
    how.check()
    ctx = _prepared(name, trials, study_name)
    g, s, space = ctx.grid, ctx.spec, ctx.space
    if how.here:
        quiet_libraries()
    with store_errors():
        study = st.open_study(s, study_name or g.name, storage)
        lock = _lock(storage)
        with lock:
            dead = st.fail_dead_trials(study, locked=st.file_locked(storage))
            if s.baselines:
                st.enqueue_baselines(study, space)
        if dead:
            log.warning("%d trial(s) left RUNNING by a killed search marked FAIL", dead)
        t0 = time.perf_counter()
        failures: list[str] = []
        if how.here:
            _trials(ctx, study, lock, progress)
        else:
            from harness.search import parallel
            from harness.sweep.tracking import Tracker

            pool = how.start(f"{g.name}-search")
            try:
                # the workers' MLflow experiment, made while they start (each would make it)
                Tracker(f"{g.name}-search", f"search: {g.description}")
                failures = parallel.run(study, s, space, pool, name, trials, storage, study_name,
                                        lock, progress)
            finally:
                pool.close()
            with lock:  # a retired worker's last trial
                st.fail_dead_trials(study, locked=st.file_locked(storage))

    output.summary(study, s, space, time.perf_counter() - t0)
    output.figures(study, s, g.name)
    complete, running = _count(study)
    if not failures and complete + running < s.trials:  # its loops stopped on failed trials
        failures.append(f"{study.study_name}: {complete} of {s.trials} trials complete; the "
                        "loop stopped after failed trials (their reasons are in the table)")
    for f in failures:
        log.warning("search %s", f)
    # stopped at the requested COMPLETE trials, or with the rest running elsewhere
    return 1 if failures else 0


def worker_loop(name: str, trials: int | None, storage: str | None, study_name: str | None,
                index: int) -> int:
    """One worker of a parallel search (parallel.py): the trial loop of `search`, sampling
    with seed + index, until the study holds its trials; its COMPLETE trials' count."""
    from harness.sweep.tracking import store_errors

    ctx = _prepared(name, trials, study_name)
    if ctx.spec.seed is not None:
        ctx = dataclasses.replace(
            ctx, spec=ctx.spec.model_copy(update={"seed": ctx.spec.seed + index}))
    with store_errors():
        study = st.open_study(ctx.spec, study_name or ctx.grid.name, storage)
        return _trials(ctx, study, _lock(storage), progress=False)


def _prepared(name: str, trials: int | None, study_name: str | None = None) -> TrialContext:
    g, s, base = st.prepare(name, study_name)
    if trials is not None:
        if trials < 1:
            raise UserError(f"--trials {trials}: give 1 or more")
        s = s.model_copy(update={"trials": trials})
    path = grid.path_of(name)
    return TrialContext(g, s, base, path, st.space_for(s, base, path))


def _trials(ctx: TrialContext, study, lock, progress: bool) -> int:
    """This process's trial loop, logged to MLflow; the study's COMPLETE trials after it."""
    # MLflow opens in a background thread: importing it and opening its store (~3 s of
    # Python) overlaps the first trial's compute instead of preceding it
    tracker_future = ThreadPoolExecutor(1, thread_name_prefix="mlflow").submit(
        _open_tracking, ctx.grid, study.study_name)
    try:
        done = _loop(ctx, study, tracker_future, lock, progress)
    except BaseException as e:  # stopped (Ctrl-C: KILLED) or failed: the run says so
        if tracker_future.exception() is None:  # (waits; a store that failed is not retried)
            tracker, parent = tracker_future.result()
            with suppress(Exception):  # what stopped the loop is what the user sees
                tracker.end(parent, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker, parent = tracker_future.result()
    tracker.client.log_metric(parent, "trials_complete", done)
    tracker.client.set_terminated(parent, "FINISHED")
    return done


def _open_tracking(g: grid.GridFile, study_name: str):
    """(tracker of the experiment `<grid>-search`, id of this invocation's parent run). The
    run carries its process (host, pid); the runs of this host's searches whose process is
    gone (killed) are marked KILLED first, the runs of live ones (another process on the
    study, a pool's workers) are theirs."""
    from harness.sweep.tracking import TAG_KIND, Tracker, owner_tags

    tracker = Tracker(f"{g.name}-search", f"search: {g.description}")
    tracker.close_orphans("search", st.alive)
    parent = tracker.client.create_run(
        tracker.experiment_id, run_name=f"search {time.strftime('%F %T')}",
        tags={TAG_KIND: "search", "vlmprune.study": study_name,
              "vlmprune.git_commit": tracker.commit, **owner_tags()}).info.run_id
    return tracker, parent


def _lock(storage: str | None):
    if not st.file_locked(storage):
        return nullcontext()
    from filelock import FileLock

    results_dir().mkdir(parents=True, exist_ok=True)
    return FileLock(str(results_dir() / "optuna.lock"))


def _count(study) -> tuple[int, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


def _loop(ctx: TrialContext, study, tracker_future: Future, lock, progress: bool) -> int:
    from optuna.trial import TrialState

    s, space = ctx.spec, ctx.space
    complete, _ = _count(study)
    asked = failed = 0
    with Display(study.study_name, s.trials, console, what="trials", bar=progress) as display:
        display.done = complete
        while True:
            with lock:
                complete, running = _count(study)
                if complete + running >= s.trials:
                    break
                if asked > 20 * s.trials + 20:
                    raise UserError(f"search: {asked} trials asked, {complete} complete: the "
                                    "space is mostly infeasible; widen the role ranges")
                trial = study.ask()
                asked += 1
                trial.set_user_attr(st.OWNER, st.owner())
                x, choices, violation = space.suggest(trial)
                trial.set_constraint("budget", violation)
                if violation > 0:
                    trial.set_user_attr(st.INFO, {"violation": violation})
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                if st.duplicate(study, trial):
                    trial.set_user_attr(st.INFO, {"duplicate": True})
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
            what = f"trial {trial.number}: {st.label(space.sparsity_map(x), choices)}"
            display.stage(what, "running")
            started = time.perf_counter()
            outcome = _trial(ctx, study, trial, x, choices, tracker_future)
            if outcome.startswith("COMPLETE"):
                display.finished(what, outcome.removeprefix("COMPLETE "),
                                 time.perf_counter() - started)
                continue
            if outcome.startswith("FAILED"):
                failed += 1
                log.warning("search %s: trial %d failed (%s)", study.study_name, trial.number,
                            outcome.removeprefix("FAILED "))
                if failed >= max(MAX_FAILED, s.trials):
                    log.warning("search %s: %d trials failed here; stopping (see the "
                                "trials table)", study.study_name, failed)
                    break
            elif not display.terminal:
                console.print(f"  {what}: {outcome}", highlight=False)
    return _count(study)[0]


def _trial(ctx: TrialContext, study, trial, x, choices: dict, tracker_future: Future) -> str:
    """Run one trial; returns what became of it, in a few words."""
    from optuna.trial import TrialState

    from harness.sweep import stages

    s, space = ctx.spec, ctx.space
    sparsity = space.sparsity_map(x)
    spec = st.cell_for(ctx.base, sparsity, choices, ctx.path)
    # the MLflow run's name: "trial=3, vision=0.310, language=0.620"
    cell = Cell(trial.number, {"trial": trial.number, **st.formatted(sparsity), **choices},
                spec, eval_key(spec))
    baseline = trial.user_attrs.get(st.BASELINE)
    model = None  # the pruned model, loaded once for both evaluations
    info: dict = {}  # written once, with the outcome (each storage write is a commit)
    try:
        if s.pruner == "race" and baseline is None:
            behind = _race(study, s, spec)
            if behind is not None:
                note, model = behind
                if note:
                    info["raced"] = note
                    trial.set_user_attr(st.INFO, info)
                    study.tell(trial, state=TrialState.PRUNED)
                    return note
        elif s.pruner != "none" and baseline is None:
            quick = spec.model_copy(update={"eval": spec.eval.model_copy(
                update={"limit": s.quick_limit})})
            if stages.cached_result(eval_key(quick)) is None:
                model = stages.recovered(quick)
            early = stages.evaluated(quick, model=model)
            info["quick_seconds"] = sum(early.seconds.get(k, 0.0) for k in st.STAGE_TIMES)
            trial.report(_objective(early, s), 0)
            if trial.should_prune():
                info["pruned_at"] = _objective(early, s)
                trial.set_user_attr(st.INFO, info)
                study.tell(trial, state=TrialState.PRUNED)
                return f"stopped early (quick {info['pruned_at']:.3f})"
        result = stages.evaluated(spec, model=model)
        achieved = space.achieved(result.prune["roles"])
        info |= {"achieved": achieved, "cell": cell.hash}
        if s.budget is not None and abs(achieved - s.budget) > st.BUDGET_TOLERANCE:
            raise RuntimeError(f"achieved sparsity {achieved:.4f} misses the budget "
                               f"{s.budget} by more than {st.BUDGET_TOLERANCE * 100:.1f} points")
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded, the study goes on
        from harness.sweep.tracking import store_problem

        if isinstance(e, UserError) or store_problem(e) is not None:
            raise  # the user's to fix (bad input, a full or read-only results folder)
        reason = f"{type(e).__name__}: {first_line(e)}"
        log.debug("trial %d failed:\n%s", trial.number, traceback.format_exc())
        trial.set_user_attr(st.INFO, info | {"failure": reason[:2000]})
        study.tell(trial, state=TrialState.FAIL)
        tracker, parent = tracker_future.result()
        tracker.log_cell(parent, cell, None, reason)
        return f"FAILED {reason}"
    values = [_objective(result, s)] + ([_second(result, s)] if s.second else [])
    # the trial's own stage time; after a quick evaluation the prune stage was its work
    counted = ("evaluate",) if "quick_seconds" in info else st.STAGE_TIMES
    info |= {"objective": _objective_name(result, s),
             "seconds": sum(result.seconds.get(k, 0.0) for k in counted)}
    trial.set_user_attr(st.INFO, info)
    tracker, parent = tracker_future.result()
    run_id = tracker.log_cell(parent, cell, result)
    tracker.client.set_tag(run_id, "vlmprune.trial", str(trial.number))
    tracker.client.log_metric(run_id, "search/achieved_budget", achieved)
    study.tell(trial, values)
    return f"COMPLETE {info['objective']} {values[0]:.4f}, achieved {achieved:.4f}"


def _race(study, s: SearchSpec, spec: CellSpec) -> tuple[str, Any] | None:
    """`pruner: race`: score the trial on growing slices of the objective's task, paired
    with the best complete trial so far on the same documents; (a note saying where it
    stopped, or "" when it never fell significantly behind; the pruned model, loaded once
    for the whole evaluation too), or None when there is no complete trial to race."""
    from optuna.trial import TrialState

    from harness.sweep import stages

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if st.info(t).get("cell") and st.info(t).get("objective")]
    if not done:
        return None
    sign = -1 if study.direction.name == "MINIMIZE" else 1
    best = max(done, key=lambda t: sign * t.values[0])
    key = st.info(best)["objective"]
    task, metric = key.partition("/")[0], intervals.metric_of(key)
    root = cache.open("eval", st.info(best)["cell"])
    if metric is None or root is None:
        return None
    theirs = CellResult.read(root).samples.get(task)
    if not theirs:
        return None
    model = stages.recovered(spec)
    limit = spec.eval.limit if spec.eval.limit is not None else spec.eval.resolved().limit
    total = min(x for x in (limit, task_size(task)) if x is not None)
    mine: list[dict] = []
    for offset, size in s.race.slices(total)[:-1]:  # the last slice: the whole evaluation
        part = spec.model_copy(update={"eval": EvalSpec(
            tasks=[task], limit=size, offset=offset, batch_size=spec.eval.batch_size)})
        mine += stages.evaluated(part, model=model).samples.get(task, [])
        d = paired.compare([theirs], [mine], metric)
        if d is not None and d.p < 1 - s.race.level and sign * d.delta < 0:
            return (f"stopped at {offset + size} documents, behind trial {best.number} by "
                    f"{d.delta:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"), model
    return "", model


def _objective_name(result: CellResult, s) -> str:
    if s.objective:
        return s.objective
    return ranked(result.metrics, result.headline)[0]


def _objective(result: CellResult, s) -> float:
    name = _objective_name(result, s)
    if name not in result.metrics:
        raise UserError(f"search.objective: '{name}' is not a metric of this suite (known: "
                        f"{', '.join(sorted(result.metrics))})")
    return float(result.metrics[name])


def _second(result: CellResult, s) -> float:
    sp = result.sparsity
    return float(sp["vision"] if s.second == "vision_sparsity" else sp["overall"])
