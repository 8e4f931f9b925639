"""`vlmprune search GRID --executor pool|ray [--workers N]`: one study, several trial loops.

Each worker runs the search loop of run.py (`worker_loop`), as a second `vlmprune search`
process sharing the study would: it asks under the study's lock, drops a trial whose
settings another worker already runs, runs its trials as cells through the shared stage
cache and logs them to MLflow. Worker i samples with seed + i (the same seed in every
worker would make each one's first suggestion the others' too: duplicates, dropped). This
process only prepares the study (dead trials, baselines), starts the workers through the
sweep's executors (pool.py, ray_pool.py), shows trials as they complete, and prints the
summary and figures once every worker is done.

A worker that dies (SIGKILL, out of memory, a node lost) leaves its trial RUNNING: that
trial is marked FAIL (its owner is gone) and the worker is started again once; a worker
that dies a second time is not replaced, and the others finish the trials. A baseline
killed that way is asked for again. Trials run in parallel are not reproducible one by one:
what a sampler suggests depends on which trials had finished when it was asked.
"""

from __future__ import annotations

import logging

from harness.errors import UserError
from harness.search import study as st
from harness.sweep.console import console
from harness.sweep.dispatch import ATTEMPTS, Call, Job
from harness.sweep.display import Display

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def run(study, s, space, workers, name: str, trials: int | None, storage: str | None,
        study_name: str | None, lock, progress: bool) -> list[str]:
    """Run the search's trials on `workers` until each worker's loop ends; returns the
    failures of workers that could not finish (empty: all did)."""
    from optuna.trial import TrialState

    def job(i: int, attempt: int) -> Job:
        return Job(Call(f"search worker {i}", "harness.search.run:worker_loop",
                        (name, trials, storage, study_name, i)), attempt)

    attempts = {i: 1 for i in range(workers.size)}
    for i in range(workers.size):
        workers.submit(i, job(i, 1))
    busy = set(attempts)
    failures: list[str] = []
    shown = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    console.print(f"running {workers.size} trial loops on a {workers.describe()}")
    with Display(study.study_name, s.trials, console, what="trials", bar=progress) as display:
        display.done = len(shown)
        while busy:
            for slot, outcome in workers.wait(timeout=POLL_SECONDS):
                if slot not in busy:  # its loop had ended; then the worker died: let it be
                    workers.retire(slot)
                    continue
                busy.discard(slot)
                if outcome.kind == "fatal":
                    raise UserError(outcome.failure or "the search's storage cannot be used")
                if outcome.kind == "died":
                    with lock:  # its trial, RUNNING with its owner gone: FAIL; a baseline
                        st.fail_dead_trials(study, locked=st.file_locked(storage))
                        if s.baselines:
                            st.enqueue_baselines(study, space)
                    if attempts[slot] < ATTEMPTS:
                        log.warning("search worker %d died (%s); starting it again", slot,
                                    outcome.failure)
                        attempts[slot] += 1
                        workers.restart(slot)
                        workers.submit(slot, job(slot, attempts[slot]))
                        busy.add(slot)
                        continue
                    workers.retire(slot)
                    failures.append(f"worker {slot}: {outcome.failure} (on all {ATTEMPTS} "
                                    "attempts)")
                elif outcome.kind == "failed":
                    failures.append(f"worker {slot}: {outcome.failure}")
            _show_new(study, shown, display)
    return failures


def _show_new(study, shown: set[int], display) -> None:
    """Trials completed since the last look, one line each (or the bar advanced)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number in shown:
            continue
        shown.add(t.number)
        i = st.info(t)
        what = ", ".join(f"{k.removeprefix('sparsity.')}={v:.3f}" if isinstance(v, float)
                         else f"{k}={v}" for k, v in t.params.items())
        score = f"{i.get('objective', 'score')} {t.values[0]:.4f}"
        if i.get("achieved") is not None:
            score += f", achieved {i['achieved']:.4f}"
        display.finished(f"trial {t.number}: {what}", score, float(i.get("seconds", 0.0)))

