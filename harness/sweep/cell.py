"""One cell of a grid: model + prune spec + recovery spec + evaluation + seed, and the keys of
its three stages.

A stage's key hashes everything that determines its output (and the keys of the stages it
reads), so one prune stage serves every recovery method and seed that share it, and a cell's
hash is the key of its last stage. "Everything" means the normalized specs (fields that
cannot matter are canonical, see pruning/spec.py and recovery/spec.py) and the *content* of
every file they name by path (`harness.fingerprint`): the model folder's weights and
config, a layout file, calibration and recovery data with their images, the evaluation
suite's definition and its task files. Nothing else: a key never holds a setting that could
not change the output."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness import fingerprint, hub, registry
from harness.errors import UserError
from harness.evaluation.suite import (
    CUSTOM,
    TASKS_DIR,
    Suite,
    check,
    is_local,
    of_tasks,
    resolve,
    suites,
)
from harness.fields import Seed
from harness.fingerprint import digest
from harness.jsonl import CALIBRATION, RECOVERY
from harness.models.load import ModelSpec
from harness.models.locate import model_content
from harness.pruning.spec import PruneSpec
from harness.recovery.spec import RecoverySpec
from harness.sweep.race_spec import RaceSpec

# Bump when a stage's code changes what it produces (2: statistics skip padding; 3: keys hold
# input contents and normalized specs, stage folders a manifest).
VERSION = 3
# The recovery stage's own (2: LoRA's initial adapters are drawn from the recovery seed, not
# from whatever state the process's generator was in).
RECOVER_VERSION = 2


class EvalSpec(BaseModel):
    """What a cell is scored on: a named suite, or `tasks` (lmms-eval task names; `suite` is
    then only their label: a user suite's name, else "tasks"). `limit` caps the documents per
    task (null: the suite's own limit, else all), from the `offset`-th on (a race's slice).
    `race`: the grid's cells race (sweep/race.py) instead of each being scored whole."""

    model_config = ConfigDict(extra="forbid")
    suite: str = "shapes"
    tasks: list[str] | None = Field(None, min_length=1)
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    race: RaceSpec | None = None

    @model_validator(mode="after")
    def _one_evaluation(self) -> EvalSpec:
        if self.tasks is None:
            return self
        if "suite" not in self.model_fields_set:
            self.suite = CUSTOM
        elif self.suite in suites():
            raise ValueError(f"suite '{self.suite}' and tasks {self.tasks} name two "
                             "evaluations: give one")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {self.tasks}: a task is named twice")
        return self

    def resolved(self) -> Suite:
        """The suite these settings name (`suite.resolve`)."""
        return resolve(self.suite, self.tasks)

    def keyed(self) -> dict[str, Any]:
        """What the eval stage's key holds of these settings: not the batch size (it cannot
        change an answer), nor `tasks`, `offset` or `race` while unset (keys from before
        those fields stay as they were)."""
        unset = {k for k, v in (("tasks", self.tasks), ("race", self.race)) if v is None}
        return self.model_dump(exclude={"batch_size"} | unset | (
            {"offset"} if self.offset == 0 else set()))

    def plain(self) -> EvalSpec:
        """These settings without the race: how each of its cells is scored whole."""
        return self.model_copy(update={"race": None})


class CellSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    prune: PruneSpec | None = Field(default_factory=PruneSpec)  # null: the dense model
    recover: RecoverySpec = Field(default_factory=RecoverySpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    seed: Seed = 0


@dataclass
class Cell:
    """A grid's cell: its spec, what distinguishes it from the grid's base (its label), and its
    hash (the key of its last stage, `eval_key`)."""

    index: int
    overrides: dict[str, Any]
    spec: CellSpec
    hash: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "base"


def seeded(c: CellSpec) -> CellSpec:
    """What a grid's `seeds: [0, 1, 2]` repeats. With recovery, the training: the cell's seed
    is the recovery seed, and every seed shares the cell's prune stage. Without, the pruning:
    the seed offsets `prune.calibration.seed` and `prune.seed` (seed 0 leaves a cell as
    written; a method that reads neither gets the same stage for every seed, computed once)."""
    if c.recover.method != "none":
        return c.model_copy(update={"recover": c.recover.model_copy(update={"seed": c.seed})})
    if c.prune is None or c.seed == 0:
        return c
    data = c.prune.model_dump()
    data["seed"] = (data["seed"] + c.seed) % 2**32  # seeds stay in range: never an error here
    if data.get("calibration"):
        data["calibration"]["seed"] = (data["calibration"]["seed"] + c.seed) % 2**32
    return c.model_copy(update={"prune": PruneSpec.model_validate(data)})


def suite_content(e: EvalSpec) -> dict[str, str]:
    """The suite's definition and its tasks' files (local tasks), and lmms-eval's version and
    where each built-in task's data was found (a hub snapshot is named by its commit, a
    datasets cache by its folder)."""
    try:
        s = e.resolved()
    except UserError:
        return {"suite": f"unknown:{e.suite}"}
    out = {"suite": digest(s.model_dump())}
    if s.builtin:
        out |= {"tasks": f"lmms-eval {version('lmms_eval')}",
                "data": _builtin_data(tuple(s.tasks))}
        if any(is_local(t) for t in s.tasks):
            out["local"] = fingerprint.of_folder(TASKS_DIR)
        return out
    return out | {"tasks": fingerprint.of_folder(TASKS_DIR)}


@functools.cache
def _builtin_data(tasks: tuple[str, ...]) -> str:
    try:
        found = check(of_tasks(list(tasks)))
    except UserError as e:
        return f"unavailable: {e}"  # the eval stage stops with this line; nothing is stored
    return digest({t: [place.identity for place in where] for t, where in found.items()})


def _hub_identity(field: str, source: str, split: str) -> str:
    """Where a hub source was found: a snapshot is named by its commit, a datasets cache by
    its folder (as the data of built-in suites is). Not found: the checks before work and the
    stage reading it stop with the line saying so, in their order (a missing model first);
    nothing is stored under such a key."""
    try:
        return hub.located(field, source, split).identity
    except UserError as e:
        return f"unavailable: {e}"


def prune_key(c: CellSpec) -> str:
    model = c.model.keyed(exclude={"device"})  # the field's old name: keys stay as they were
    inputs: dict[str, object] = {"model": model_content(c.model)}
    cal = c.prune.calibration if c.prune else None
    if cal is not None and hub.is_source(cal.source):
        inputs["calibration"] = _hub_identity(CALIBRATION[0], cal.source, cal.split)
    elif cal is not None and cal.source != "shapes":
        inputs["calibration"] = fingerprint.of_source(cal.source)
    if c.prune and cal and c.prune.propagation == "sequential" and cal.samples > cal.batch_size:
        # several batches under `sequential` ran block-wise statistics before the pipelines
        # were named (now `blockwise`); the same spec now prunes Linear by Linear, so it
        # must not be served from such a stored stage. One-batch keys are unchanged.
        inputs["pipeline"] = "sequential-linear-by-linear"
    if c.prune and registry.get("methods", c.prune.method).needs == "hessian":
        # H⁻¹'s factor is now computed on one thread (it followed the thread count before):
        # a stage stored by the earlier code may hold the other bits, so it is not served.
        inputs["hessian_factor"] = "one-thread"
    return digest({"v": VERSION, "stage": "prune", "model": model, "inputs": inputs,
                   "prune": c.prune.model_dump() if c.prune else None})


def recover_key(c: CellSpec) -> str:
    if c.recover.method == "none":
        return prune_key(c)  # nothing trained: the pruned model is the recovered one
    d = c.recover.data
    data = (_hub_identity(RECOVERY[0], d.source, d.split) if hub.is_source(d.source)
            else fingerprint.of_source(d.source) if d.source != "shapes" else None)
    return digest({"v": VERSION, "rv": RECOVER_VERSION, "stage": "recover", "prune": prune_key(c),
                   "recover": c.recover.model_dump(), "data": data})


def eval_key(c: CellSpec) -> str:
    return digest({"v": VERSION, "stage": "eval", "recover": recover_key(c),
                   "eval": c.eval.keyed(), "suite": suite_content(c.eval)})


def flat(obj, prefix: str = "") -> dict[str, object]:
    """Dotted keys for nested dicts: {"prune.method": "wanda", ...} (MLflow params)."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= flat(v, f"{prefix}{k}.")
        return out
    out[prefix[:-1]] = obj
    return out
