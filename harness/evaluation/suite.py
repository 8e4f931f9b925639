"""What a cell is scored on: a named suite (suites.yaml, or a user's suites file beside the
grid) or a list of lmms-eval tasks, resolved into one `Suite`, and each task checked before
any model loads.

- A *local* task is one whose YAML ships in tasks/ (the shapes tasks); any other name must be
  one of lmms-eval's built-in tasks, whose dataset must lie in the Hugging Face cache
  (`hub_data`): a name lmms-eval does not know, a group named where a task is wanted, or data
  that is not on this machine is one line before work.
- A task's *headline* metric is the first of its own `metric_list` that its evaluation
  reports (lmms-eval's task YAML, includes resolved): `exact_match` for VQAv2, `pope_accuracy`
  for POPE, `nocaps_Bleu_4` for NoCaps. Nothing is guessed from a metric's name.
- User suites: a grid's `suites:` names a YAML file beside it (or holds the mapping itself),
  with the shipped file's shape; a user suite cannot take a shipped suite's name.
"""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Any

import yaml
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import yamlfile
from harness.errors import UserError, format_validation_error, unknown
from harness.evaluation import task_index
from harness.evaluation.hub_data import offline, task_sources
from harness.evaluation.metrics import is_caption

SUITES_FILE = Path(__file__).with_name("suites.yaml")
TASKS_DIR = Path(__file__).parent / "tasks"
CUSTOM = "tasks"  # the suite label of an evaluation given as `eval.tasks` alone


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(None, ge=1)
    builtin: bool = False  # lmms-eval's own tasks (hub datasets, checked offline first)


@functools.cache
def _shipped() -> dict[str, Suite]:
    data = yaml.safe_load(SUITES_FILE.read_text())
    return {name: Suite(**body) for name, body in data.items()}


def suites() -> dict[str, Suite]:
    """The shipped suites by name."""
    return dict(_shipped())


def get_suite(name: str) -> Suite:
    known = _shipped()
    if name not in known:
        raise unknown("evaluation suite", name, known)
    return known[name]


def is_local(task: str) -> bool:
    """A task whose YAML ships in tasks/ (its file is named after it)."""
    return task in _local_names()


@functools.cache
def _local_names() -> frozenset[str]:
    return frozenset(p.stem for p in TASKS_DIR.rglob("*.yaml"))


def of_tasks(tasks: list[str], label: str = CUSTOM) -> Suite:
    """An evaluation given as a task list: built-in as soon as one task is lmms-eval's."""
    return Suite(description=label, tasks=list(tasks),
                 builtin=any(not is_local(t) for t in tasks))


def resolve(suite: str, tasks: list[str] | None) -> Suite:
    """The suite an `eval:` mapping names: its `tasks` when given, else the shipped suite."""
    return of_tasks(tasks, suite) if tasks else get_suite(suite)


def user_suites(value: str | dict[str, Any] | None, grid: Path) -> dict[str, Suite]:
    """A grid's own suites: `value` names a YAML file relative to the grid file, or is the
    mapping itself. One line naming the file and the field when a suite is malformed or takes
    a shipped suite's name."""
    if value is None:
        return {}
    if isinstance(value, str):
        source = grid.parent / value
        if not source.is_file():
            raise UserError(f"{grid}: field 'suites': no such file {source}")
        data = yamlfile.load(source, "suites file")
    else:
        source, data = grid, value
    if not isinstance(data, dict) or not data:
        raise UserError(f"{source}: a suites file maps suite names to {{tasks: [...], "
                        "limit: N}}")
    out = {}
    for name, body in data.items():
        if name in _shipped():
            raise UserError(f"{source}: suite '{name}' is a shipped suite's name (shipped: "
                            f"{', '.join(_shipped())}); choose another")
        try:
            out[str(name)] = Suite.model_validate(body)
        except ValidationError as e:
            raise UserError(f"{source}: suite '{name}': {format_validation_error(e)}") from None
        out[str(name)].builtin = any(not is_local(t) for t in out[str(name)].tasks)
    return out


@functools.cache
def task_manager(include_defaults: bool):
    """lmms-eval's TaskManager with the shapes tasks on its include path (indexing lmms-eval's
    hundreds of built-in task folders only when a suite needs them, from the user cache when
    it is current: harness/evaluation/task_index.py). lmms-eval logs through
    loguru, whose default prints DEBUG lines while the index is built: warnings only."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    return task_index.manager(str(TASKS_DIR), include_defaults)


def check_task(task: str, tm) -> None:
    """One line when lmms-eval does not know `task`, or knows it as a group or tag."""
    index = tm.task_index
    if task not in index:
        tasks = [n for n, v in index.items() if v.get("type") in ("task", "python_task")]
        close = difflib.get_close_matches(task, tasks, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"unknown lmms-eval task '{task}'{hint} (`vlmprune tasks` lists "
                        f"the {len(tasks)} tasks lmms-eval knows)")
    kind = index[task].get("type")
    if kind not in ("task", "python_task"):
        raise UserError(f"'{task}' is an lmms-eval {kind}, not a task: name its tasks "
                        f"(`vlmprune tasks {task}` lists them)")


def members(group: str, tm) -> list[str]:
    """The tasks an lmms-eval group or tag holds (its index entry, else its config)."""
    listed = tm.task_index[group].get("task")
    if not isinstance(listed, list):
        listed = tm._get_config(group).get("task") or []
    return [t if isinstance(t, str) else str(t.get("task", t)) for t in listed]


def check_offline(tasks: list[str], tm) -> dict[str, list]:
    """Where each built-in task's data lies on this machine (`hub_data.locate`): a one-line
    `UserError` naming the task, the dataset and a working remedy when any is missing."""
    found = {}
    for task in tasks:
        check_task(task, tm)
        found[task] = task_sources(task, tm._get_config(task))
    return found


def check(s: Suite) -> dict[str, list]:
    """Every task of the suite there: local ones by their YAML, built-in ones known to
    lmms-eval with their data in the HF cache. Returns where the built-in ones' data lies."""
    if not s.builtin:
        return {}
    return check_offline([t for t in s.tasks if not is_local(t)], task_manager(True))


class _Tolerant(yaml.SafeLoader):
    """A task YAML with lmms-eval's tags (`!function utils.x`) read as plain data."""


_Tolerant.add_multi_constructor("!", lambda loader, suffix, node: None)


def task_config(task: str) -> dict[str, Any]:
    """A task's configuration: a local task's YAML (tags as None), or lmms-eval's (includes
    resolved, from its task index)."""
    if is_local(task):
        file = next(TASKS_DIR.rglob(f"{task}.yaml"))
        return yaml.load(file.read_text(), Loader=_Tolerant) or {}  # noqa: S506 - safe
    return task_manager(True)._get_config(task)


def task_size(task: str) -> int:
    """How many documents a task's evaluation split holds (lmms-eval builds the task: its
    data is read, offline)."""
    from lmms_eval.tasks import get_task_dict

    offline()
    built = get_task_dict([task], task_manager(not is_local(task)))
    return len(built[task].eval_docs)


def metric_names(config: dict[str, Any]) -> list[str]:
    """The task's own `metric_list`, in its order."""
    return [str(m["metric"]) for m in config.get("metric_list") or []
            if isinstance(m, dict) and m.get("metric")]


def suite_metrics(s: Suite) -> list[str] | None:
    """The `task/metric` names the suite's evaluation reports (each task's `metric_list`, as
    lmms-eval reports them); None when that cannot be told (an unknown task, one without a
    metric list)."""
    names = []
    for task in s.tasks:
        try:  # a built-in task's config: lmms-eval's task index (seconds)
            config = task_config(task)
        except Exception:  # noqa: BLE001 - what the suite check reports, not this one
            return None
        metrics = metric_names(config)
        if not metrics:
            return None
        names += [f"{task}/{m}" for m in metrics]
    return names


def headline(task: str, config: dict[str, Any], reported: dict[str, float]) -> str | None:
    """`task/metric` for the first metric of the task's list that its evaluation reported (a
    list entry such as TextVQA's `submission` reports no number)."""
    return next((f"{task}/{m}" for m in metric_names(config) if f"{task}/{m}" in reported),
                None)


def task_kind(config: dict) -> str:
    """"caption" when the task scores its answers with caption metrics (CIDEr, BLEU, METEOR,
    ROUGE, SPICE: its own `metric_list` says so), else "vqa"."""
    return "caption" if any(is_caption(n) for n in metric_names(config)) else "vqa"
