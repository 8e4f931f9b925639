"""A race between a grid's settings (`eval.race`, race_spec.py): score every setting on the
same slices of one task's documents, drop the ones significantly behind the leader after
each slice, and score the ones left as `finish` says (the whole suite by default).

- A setting is the grid's cells that differ only by seed (`seed=` in their label); its
  score is the mean over them (paired.py). The dense reference (a cell without pruning)
  does not race: it is scored whole.
- A slice is an ordinary cell whose evaluation is that task's documents [offset, offset +
  size) (`EvalSpec.offset`, `limit`): its eval stage is cached like any other, so a killed
  race resumes where it was (the slices it finished are read back, not computed), and the
  prune and recovery stages are shared with the whole evaluation. Documents keep their
  task's order: the shapes tasks cycle through their question types, so every prefix is
  stratified; a hub task's order is its dataset's.
- The settings left when the race ends answer what `finish` says (race_spec.py): the
  whole suite, the rest of the raced task, or nothing more (`none`: standing `group`, a
  partial score like a stopped setting's).
- A setting that stops keeps its partial score (the raced task's metrics on the documents
  it was scored on, with intervals) and the reason (`Standing.note`: "stopped at 200
  documents, behind X by Δ [lo, hi]"); what the sweep logs says so (tags
  `vlmprune.race*`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from harness.errors import UserError
from harness.evaluation import intervals, paired
from harness.evaluation.metrics import ranked
from harness.evaluation.suite import headline, task_config, task_size
from harness.sweep.cell import Cell, CellSpec, EvalSpec, eval_key
from harness.sweep.dispatch import Outcome
from harness.sweep.race_spec import TAG, TAG_DOCS, TAG_NOTE, RaceSpec
from harness.sweep.result import CellResult

# plain cells -> their outcomes by cell hash (run here or on the sweep's workers)
Runner = Callable[[list[Cell]], dict[str, Outcome]]


@dataclass
class Standing:
    """How a cell left the race: `survived` (then scored on what `finish` says), `group`
    (left in the race's last group and scored on its documents only: `finish: none`),
    `stopped`, or `failed`."""

    status: str
    docs: int = 0
    note: str = ""

    def tags(self) -> dict[str, str]:
        return {TAG: self.status, TAG_DOCS: str(self.docs), TAG_NOTE: self.note}


@dataclass
class Entrant:
    """A setting in the race: its cells (one per seed) and each one's documents so far."""

    label: str
    cells: list[Cell]
    rows: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    last: dict[str, CellResult] = field(default_factory=dict)  # each cell's latest slice
    seconds: dict[str, float] = field(default_factory=dict)
    reported: dict[str, dict[str, float]] = field(default_factory=dict)  # lmms-eval's numbers
    failure: str | None = None

    def add(self, cell: str, result: CellResult) -> None:
        """A slice's (or the rest's) result of one of this setting's cells."""
        self.last[cell] = result
        self.seconds[cell] = self.seconds.get(cell, 0.0) + result.seconds.get("evaluate", 0.0)
        for t, rows in result.samples.items():
            self.rows.setdefault(cell, {}).setdefault(t, []).extend(rows)
        self.reported.setdefault(cell, {}).update(result.metrics)

    def result(self, c: Cell) -> CellResult:
        """A cell's result from every document it answered: each task's metrics
        aggregated as lmms-eval aggregates them (its function, on the documents in id
        order), with intervals."""
        last, rows = self.last[c.hash], self.rows.get(c.hash, {})
        reported = self.reported.get(c.hash, {})  # the metrics that are numbers
        metrics, spans = {}, {}
        for task, task_rows in rows.items():
            ordered = intervals.ordered(task_rows)
            for m in intervals.metrics_of(task).values():
                key = f"{task}/{m.name}"
                items = [r[m.name] for r in ordered if r.get(m.name) is not None]
                if key not in reported or not items:
                    continue
                metrics[key] = float(_aggregation(m)(items))
                b = intervals.bounds(intervals.resampled(ordered, m))
                if b is not None:
                    spans[key] = b
        seconds = dict(last.seconds) | {"evaluate": self.seconds.get(c.hash, 0.0)}
        return CellResult(metrics=metrics, sparsity=last.sparsity, prune=last.prune,
                          recover=last.recover, seconds=seconds, samples=rows,
                          headline=_headline(metrics, rows),
                          intervals=spans)


def setting(cell: Cell) -> str:
    """The label of a cell's setting: its label without the seed."""
    return ", ".join(f"{k}={v}" for k, v in cell.overrides.items() if k != "seed") or "base"


def with_eval(cell: Cell, e: EvalSpec) -> Cell:
    """The cell scored as `e` says (its own hash: the key of that evaluation)."""
    spec = cell.spec.model_copy(update={"eval": e})
    return Cell(cell.index, cell.overrides, spec, eval_key(spec))


def plain(cell: Cell) -> Cell:
    return with_eval(cell, cell.spec.eval.plain())


def sliced(cell: Cell, task: str, offset: int, size: int) -> Cell:
    e = cell.spec.eval
    return with_eval(cell, EvalSpec(suite=e.suite if e.tasks else "tasks", tasks=[task],
                                    limit=size, offset=offset, batch_size=e.batch_size))


def racing(spec: CellSpec) -> bool:
    """Whether a cell races (a pruned cell whose evaluation names a race)."""
    return spec.eval.race is not None and spec.prune is not None


def run(cells: Sequence[Cell], execute: Runner, progress: Callable[[str], None] = logger.info
        ) -> dict[str, tuple[Outcome, Standing | None]]:
    """Race `cells` (those that race, `racing`; the others are scored whole) and score the
    settings left as the race's `finish` says; each cell's outcome (its result: the whole
    evaluation's, or a stopped setting's partial one) and standing, by the cell's hash."""
    out: dict[str, tuple[Outcome, Standing | None]] = {}
    entrants: dict[str, Entrant] = {}
    for c in cells:
        if racing(c.spec):
            entrants.setdefault(setting(c), Entrant(setting(c), [])).cells.append(c)
    whole = [c for c in cells if not racing(c.spec)]
    if entrants:
        first = next(iter(entrants.values())).cells[0]
        race = _one_race([c for e in entrants.values() for c in e.cells])
        left, ended = _race(list(entrants.values()), race, first, execute, progress, out)
        out |= _finish(left, ended, race.finish, execute)
    plain_of = {c.hash: plain(c) for c in whole}
    done = execute(list(plain_of.values())) if plain_of else {}
    for h, pc in plain_of.items():
        out[h] = (done[pc.hash], None)
    return out


@dataclass(frozen=True)
class Ended:
    """Where a race ended: its task, the documents it used, the task's documents (within
    the evaluation's limit), the suite's tasks and that limit."""

    task: str
    used: int
    total: int
    tasks: tuple[str, ...]
    limit: int | None


def _finish(left: list[Entrant], f: Ended, finish: str, execute: Runner
            ) -> dict[str, tuple[Outcome, Standing | None]]:
    """The settings left, scored on what `finish` says: the raced task's remaining
    documents (`task`, `suite`) and the other tasks (`suite`), merged with the slices
    already answered (no document twice); `none`: their slices alone."""
    parts: dict[str, list[Cell]] = {}
    for e in left:
        for c in e.cells:
            parts[c.hash] = []
            if finish == "none":
                continue
            if f.used < f.total:
                parts[c.hash].append(sliced(c, f.task, f.used, f.total - f.used))
            others = [t for t in f.tasks if t != f.task]
            if others and finish == "suite":
                ev = c.spec.eval
                parts[c.hash].append(with_eval(c, EvalSpec(
                    suite=ev.suite if ev.tasks else "tasks", tasks=others, limit=f.limit,
                    batch_size=ev.batch_size)))
    done = execute([p for ps in parts.values() for p in ps]) if finish != "none" else {}
    out: dict[str, tuple[Outcome, Standing | None]] = {}
    note = {"suite": f"left in the race after {f.used} documents, then scored on the "
                     "whole suite",
            "task": f"left in the race after {f.used} documents, then scored on the rest "
                    f"of {f.task}",
            "none": f"in the race's last group after {f.used} documents of {f.task}, "
                    "scored on those"}[finish]
    status = "group" if finish == "none" else "survived"
    for e in left:
        for c in e.cells:
            got = [done[p.hash] for p in parts[c.hash]]
            failed = next((g for g in got if g.result is None), None)
            standing = Standing(status, f.used, note)
            if failed is not None:
                out[c.hash] = (Outcome("failed", failure=failed.failure), standing)
                continue
            for g in got:
                assert g.result is not None
                e.add(c.hash, g.result)
            out[c.hash] = (Outcome("done", result=e.result(c)), standing)
    return out


def check(cells: Sequence[Cell]) -> None:
    """Before any work: the racing cells run one race (`_one_race`'s one line if not)."""
    racers = [c for c in cells if racing(c.spec)]
    if racers:
        _one_race(racers)


def _one_race(cells: list[Cell]) -> RaceSpec:
    """The race every racing cell names: one race, on one evaluation (else one line)."""
    first = cells[0].spec.eval
    assert first.race is not None
    for c in cells[1:]:
        e = c.spec.eval
        if e.race != first.race or e.resolved().tasks != first.resolved().tasks \
                or e.limit != first.limit:
            raise UserError(f"cell {c.label}: eval.race runs one race on one evaluation; "
                            "give every racing cell the same eval (suite, tasks, limit, race)")
    if first.race.metric and first.race.metric.partition("/")[0] not in \
            first.resolved().tasks:
        raise UserError(f"eval.race.metric {first.race.metric}: its task is not one the "
                        f"evaluation scores ({', '.join(first.resolved().tasks)})")
    return first.race


def _race(entrants: list[Entrant], race: RaceSpec, first: Cell, execute: Runner,
          progress: Callable[[str], None], out: dict[str, tuple[Outcome, Standing | None]]
          ) -> tuple[list[Entrant], Ended]:
    """The settings left when the race ends, and where it ended."""
    suite = first.spec.eval.resolved()
    metric_key = race.metric
    task = metric_key.partition("/")[0] if metric_key else suite.tasks[0]
    limit = first.spec.eval.limit if first.spec.eval.limit is not None else suite.limit
    total = min(x for x in (limit, task_size(task)) if x is not None)
    alive, used = list(entrants), 0
    for offset, size in race.slices(total):
        jobs = {c.hash: sliced(c, task, offset, size) for e in alive for c in e.cells}
        results = execute(list(jobs.values()))
        used = offset + size
        for e in alive:
            for c in e.cells:
                got = results[jobs[c.hash].hash]
                if got.result is None:
                    e.failure = got.failure or "failed"
                    continue
                e.add(c.hash, got.result)
        for e in [e for e in alive if e.failure]:
            alive.remove(e)
            for c in e.cells:
                out[c.hash] = (Outcome("failed", failure=e.failure), Standing("failed", used))
        if metric_key is None:
            any_result = next(r for e in alive for r in e.last.values())
            metric_key = ranked(any_result.metrics, any_result.headline)[0]
        name = metric_key.partition("/")[2]
        metric = intervals.metrics_of(task).get(name, intervals.Metric(name, "mean"))
        alive, ranking = _round(alive, metric, task, race, used, out)
        progress(f"race after {used} documents of {task}: {len(alive)} of {len(entrants)} "
                 "settings left")
        if len(alive) <= 1 or _one_group(alive, ranking, race):
            break
    return alive, Ended(task, used, total, tuple(suite.tasks), limit)


def _runs(e: Entrant, task: str) -> list[list[dict[str, Any]]]:
    return [e.rows.get(c.hash, {}).get(task, []) for c in e.cells]


def _round(alive: list[Entrant], metric: intervals.Metric, task: str, race: RaceSpec,
           used: int, out: dict[str, tuple[Outcome, Standing | None]]
           ) -> tuple[list[Entrant], paired.Ranking]:
    """The settings still in the race after a slice (the others get their partial
    results), and the round's ranking."""
    ranking = paired.best_group({e.label: _runs(e, task) for e in alive}, metric,
                                alpha=1 - race.level)
    if not ranking.scores:
        return alive, ranking
    sign = 1 if metric.higher_is_better else -1
    top = max(ranking.scores, key=lambda k: sign * ranking.scores[k].value)
    keep = []
    for e in alive:
        d = ranking.diffs.get(e.label)
        span = None if d is None else _span(ranking, e.label, top, race.level)
        # behind: the interval of (setting - leader) lies entirely on the worse side of 0
        behind = span is not None and (span[1] < 0 if sign > 0 else span[0] > 0)
        if race.stop == "holm":
            behind = e.label not in ranking.best and d is not None and sign * d.delta < 0
        if not behind or d is None or span is None:
            keep.append(e)
            continue
        note = (f"stopped at {used} documents, behind {top} by {d.delta:+.3f} "
                f"[{span[0]:+.3f}, {span[1]:+.3f}]")
        for c in e.cells:
            out[c.hash] = (Outcome("done", result=e.result(c)), Standing("stopped", used, note))
    return keep, ranking


def _span(ranking: paired.Ranking, label: str, top: str, level: float
          ) -> tuple[float, float] | None:
    """The interval of (setting - leader) at `level`, from their paired resamples."""
    a, b = ranking.scores[label].resampled, ranking.scores[top].resampled
    size = min(len(a), len(b))
    return intervals.bounds(a[:size] - b[:size], level)


def _one_group(alive: list[Entrant], ranking: paired.Ranking, race: RaceSpec) -> bool:
    """Every setting left within `tolerance` of the leader, its whole interval at the
    race's level (the round's differences from the leader: the leader is never stopped,
    and every setting answered the same documents, so they are the ones left's own)."""
    top = next((k for k in ranking.scores if k not in ranking.diffs), None)
    spans = [_span(ranking, e.label, top, race.level) for e in alive
             if e.label in ranking.diffs and top is not None]
    return bool(spans) and all(s is not None and -race.tolerance <= s[0]
                               and s[1] <= race.tolerance for s in spans)


def _aggregation(m: intervals.Metric) -> Callable[[list], float]:
    """The metric's aggregation as lmms-eval computes it (its `mean` is sum / len)."""
    if m.aggregation == "mean":
        return lambda items: sum(items) / len(items)
    if isinstance(m.aggregation, str):
        from lmms_eval.api.registry import get_aggregation

        return get_aggregation(m.aggregation)
    return m.aggregation


def _headline(metrics: dict[str, float], rows: dict[str, list]) -> list[str]:
    """Each task's headline metric, as an evaluation records it (`suite.headline`)."""
    return [h for task in rows if (h := headline(task, task_config(task), metrics))]
