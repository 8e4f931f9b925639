"""One registry for what a grid or the command line names and a newcomer may add: pruning
methods, layer-wise allocations, recovery methods, executors and report figures (the five
*kinds*). Adding one is one module plus one registration: a line in `BUILTIN` below, or an
entry point in another package's pyproject.toml.

An `Entry` names its object as "module:attr", imported only when the entry is used (as
lm-evaluation-harness's registry does), so a grid is validated without importing torch. It
may name the pydantic model of its options, which a spec keeps under a key named after the
entry and validates with that model when it loads (`OptionBlocks`; errors name the field,
`prune.dsnot.cycles`); only the chosen entry's block enters the spec, and so its stage key:
```yaml
prune: {method: dsnot, dsnot: {cycles: 20}, distribution: owl, owl: {lam: 0.05}}
```

What an entry's object is, by kind:
- methods: `prune(weight, stats, target, seed=0, **options) -> Pruned` (pruning/methods/);
  its options arrive as keyword arguments;
- allocations: `levels(adapter, blocks, sizes, budget, batches, options)`, a sparsity per
  block (pruning/allocate.py); its options may set `across` (role | roles) and define
  `check(levels)`, which refuses a spec whose sparsity it cannot spread;
- recovery: `inject(adapter, spec, masks)`, the model with trainable adapters
  (recovery/lora.py); no target: nothing is trained (`none`); options under `recover.NAME`;
  `shares`: (another method, "module:attr") when this one trains exactly as that one and
  differs only in its merge: that method's stage is trained (or read) once for both, and
  `attr(pruned, merged, masks)` turns its merged weights into this one's (lora-remask);
- executors: `start(dispatch, tag) -> Workers` (sweep/pool.py); no target: cells run here;
  no options block: `takes` lists the `Dispatch` options (flags) it accepts;
- figures: `draw(df, metric) -> Figure | None` (report/figures.py); `help` is its caption.

A method also says which calibration statistics it needs (`needs`: None, "norms": per-column
sums of squared inputs, "hessian": XᵀX, "moments": norms and means), whether Linears reading
one input may be pruned in one call on their stacked rows (`stack`: rows independent given
the statistics, as SparseGPT's) and whether it draws from `prune.seed` (`seeded`).

Another installed package adds entries through Python entry points, one group per kind
(`vlmprune.methods`, `vlmprune.allocations`, `vlmprune.recovery`, `vlmprune.executors`,
`vlmprune.figures`); the object an entry point names is an `Entry`, or a function returning
one, whose name is the entry point's (tests/plugins/ holds an example):
```toml
[project.entry-points."vlmprune.methods"]
half_magnitude = "vlmprune_plugin_demo:ENTRY"
```
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from harness.errors import UserError, first_line, unknown

Kind = Literal["methods", "allocations", "recovery", "executors", "figures"]
KINDS: tuple[Kind, ...] = get_args(Kind)
Needs = Literal[None, "norms", "hessian", "moments"]
# how an error names an entry of each kind
WHAT: dict[Kind, str] = {"methods": "pruning method", "allocations": "allocation",
                         "recovery": "recovery method", "executors": "executor",
                         "figures": "figure"}


@dataclass(frozen=True)
class Entry:
    kind: Kind
    name: str
    target: str | Callable[..., Any] | None  # "module:attr" (or the object); None: nothing
    help: str = ""  # a few words (`--executor`'s help, a figure's caption)
    options: type[BaseModel] | str | None = None  # its options' model, or its "module:attr"
    needs: Needs = None  # methods: the calibration statistics the engine collects
    stack: bool = False  # methods: Linears reading one input are pruned in one call
    seeded: bool = False  # methods: draws random numbers from `prune.seed`
    takes: tuple[str, ...] = ()  # executors: the `Dispatch` options it accepts
    shares: tuple[str, str] | None = None  # recovery: (method trained alike, "module:attr")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"entry {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.needs not in get_args(Needs):
            raise ValueError(f"{WHAT[self.kind]} {self.name!r}: needs {self.needs!r} is not "
                             f"one of {get_args(Needs)}")
        if self.kind != "methods" and (self.needs or self.stack or self.seeded):
            raise ValueError(f"{WHAT[self.kind]} {self.name!r}: needs, stack and seeded are "
                             "for pruning methods")
        if self.kind != "executors" and self.takes:
            raise ValueError(f"{WHAT[self.kind]} {self.name!r}: takes is for executors")
        if self.kind != "recovery" and self.shares:
            raise ValueError(f"{WHAT[self.kind]} {self.name!r}: shares is for recovery methods")

    def load(self) -> Any:
        """The entry's object (its module is imported now)."""
        if self.target is None:
            raise ValueError(f"{WHAT[self.kind]} {self.name!r} has nothing to load")
        return resolve(self.target)

    def options_model(self) -> type[BaseModel] | None:
        """The pydantic model of the entry's options, or None if it takes none."""
        if self.options is None:
            return None
        model = resolve(self.options)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{WHAT[self.kind]} {self.name!r}: options {self.options!r} is "
                            "not a pydantic model")
        return model


def resolve(target: str | Any) -> Any:
    """The object a "module:attr" string names (imported now); anything else is itself."""
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not (sep and module and attr):
        raise ValueError(f"{target!r}: expected 'module:attr'")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# The built-in entries, in the order a kind lists them (`--executor`'s help, the report's
# figures). Adding one: its module, and one line here.
BUILTIN: tuple[Entry, ...] = (
    Entry("methods", "magnitude", "harness.pruning.methods.magnitude:prune", "|W|"),
    Entry("methods", "random", "harness.pruning.methods.random:prune", "uniform noise",
          seeded=True),
    Entry("methods", "wanda", "harness.pruning.methods.wanda:prune", "|W|·‖X‖",
          needs="norms"),
    Entry("methods", "sparsegpt", "harness.pruning.methods.sparsegpt:prune",
          "OBS pruning with reconstruction", needs="hessian", stack=True),
    Entry("methods", "sparsegpt-mask", "harness.pruning.methods.sparsegpt_mask:prune",
          "SparseGPT's mask on the original weights (no update)", needs="hessian",
          stack=True),
    Entry("methods", "dsnot", "harness.pruning.methods.dsnot:prune",
          "a Wanda or magnitude mask refined by swaps", "harness.pruning.methods.dsnot:Options",
          needs="moments"),

    Entry("allocations", "owl", "harness.pruning.allocate:owl_levels",
          "less pruning where more outliers", "harness.pruning.allocate:OwlOptions"),
    Entry("allocations", "ecoflap", "harness.pruning.allocate:ecoflap_levels",
          "zeroth-order block scores", "harness.pruning.allocate:EcoflapOptions"),

    Entry("recovery", "none", None, "no training"),
    Entry("recovery", "lora", "harness.recovery.lora:inject",
          "LoRA per role; the merge fills the pruned zeros"),
    Entry("recovery", "sparselora", "harness.recovery.sparse_lora:inject",
          "LoRA whose update the pruning mask keeps sparse"),
    Entry("recovery", "lora-remask", "harness.recovery.lora_remask:inject",
          "LoRA, the pruning mask applied again after the merge",
          shares=("lora", "harness.recovery.lora_remask:from_lora")),

    Entry("executors", "local", None, "here one at a time"),
    Entry("executors", "pool", "harness.sweep.pool:start",
          "a worker per GPU or N CPU workers of this machine", takes=("workers",)),
    Entry("executors", "ray", "harness.sweep.ray_pool:start", "a Ray cluster",
          takes=("workers", "ray_address")),

    Entry("figures", "modality_split", "harness.report.figures:modality_split",
          "Score vs the split of sparsity between vision and language; one line per total, "
          "dense reference dashed."),
    Entry("figures", "modality_choice", "harness.report.figures:modality_choice",
          "Pruning both models, only the language model or only the vision model, at each "
          "sparsity or pattern."),
    Entry("figures", "recovery", "harness.report.figures:recovery",
          "No recovery, LoRA and SparseLoRA at each sparsity or pattern; the label is the "
          "sparsity after recovery (LoRA's merge makes weights dense)."),
    Entry("figures", "methods", "harness.report.figures:methods",
          "Score vs unstructured sparsity, one line per pruning method."),
    Entry("figures", "question_types", "harness.report.figures:question_types",
          "Exact match per question type for every setting."),
    Entry("figures", "allocation", "harness.report.figures:allocation",
          "Per-block sparsity chosen by each layer-wise allocation (OWL, ECoFLaP) beside the "
          "uniform split, measured from the weights."),
)


@functools.cache
def plugins(kind: Kind) -> tuple[Entry, ...]:
    """The entries other installed packages add to `kind` (entry point group vlmprune.KIND),
    by name. A plugin that fails to load, or clashes with another entry, is a one-line error
    naming it, never skipped."""
    builtin = {e.name for e in BUILTIN if e.kind == kind}
    out: dict[str, Entry] = {}
    for ep in sorted(entry_points(group=f"vlmprune.{kind}"), key=lambda e: e.name):
        dist = getattr(ep.dist, "name", "?")
        where = f"plugin {ep.name} = {ep.value} (entry point group vlmprune.{kind}, {dist})"
        try:
            obj = ep.load()
            entry = obj if isinstance(obj, Entry) else obj()
        except Exception as e:  # noqa: BLE001 - any failure of a plugin is named, in one line
            raise UserError(f"{where}: {type(e).__name__}: {first_line(e)}") from e
        if not isinstance(entry, Entry) or entry.kind != kind or entry.name != ep.name:
            raise UserError(f"{where}: expected an Entry of kind {kind!r} named {ep.name!r}, "
                            f"got {entry!r}"[:300])
        if entry.name in builtin or entry.name in out:
            raise UserError(f"{where}: {WHAT[kind]} {ep.name!r} is registered twice")
        out[entry.name] = entry
    return tuple(out.values())


def entries(kind: Kind) -> list[Entry]:
    """The built-in entries of `kind` in table order, then the plugins' by name."""
    return [e for e in BUILTIN if e.kind == kind] + list(plugins(kind))


def names(kind: Kind) -> list[str]:
    return [e.name for e in entries(kind)]


def get(kind: Kind, name: str) -> Entry:
    """The entry; an unknown name is a UserError with the closest known one."""
    for e in BUILTIN:  # built-ins without looking at the installed packages
        if e.kind == kind and e.name == name:
            return e
    for e in plugins(kind):
        if e.name == name:
            return e
    raise unknown(WHAT[kind], name, names(kind))


def known(kind: Kind, name: str) -> str:
    """`name` if it is an entry of `kind`; a ValueError otherwise (for a spec's field
    validator: pydantic reports it under the field's name)."""
    try:
        get(kind, name)
    except UserError as e:
        raise ValueError(str(e)) from None
    return name


class OptionBlocks(BaseModel):
    """A spec (`prune:`, `recover:`) whose chosen entries keep their options under keys named
    after them. Every block present is validated by its entry's model (errors at
    `<name>.<field>`); the chosen entries' blocks are kept, their defaults when absent, the
    others dropped, so that a spec holds only options that take effect. A key that names no
    entry with options is an unknown key, as in any other spec. Fields named in `DECLARED`
    are blocks declared as fields (they stay in the spec's dump, None when not chosen, as
    stored stage keys hold them); any other entry's block is an extra key, only when chosen."""

    model_config = ConfigDict(extra="allow")
    KINDS: ClassVar[tuple[Kind, ...]] = ()  # the kinds whose entries may have a block here
    DECLARED: ClassVar[tuple[str, ...]] = ()

    def options(self, name: str | None) -> Any:
        """The options of entry `name` as this spec holds them (None without)."""
        if name is None:
            return None
        if name in self.DECLARED:
            return getattr(self, name)
        return (self.__pydantic_extra__ or {}).get(name)

    @classmethod
    def block_names(cls) -> list[str]:
        """Every key a block may have here (the entries of KINDS with options)."""
        return sorted({e.name for kind in cls.KINDS for e in entries(kind) if e.options})

    def _blocks(self, chosen: list[str]) -> None:
        """Validate the blocks and keep those of the `chosen` entries' names (call first in
        the spec's model validator)."""
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        present = {k: getattr(self, k) for k in self.DECLARED} | extra
        blocks = {}
        for key, value in present.items():
            entry = self._owner(key)
            if entry is None:
                raise _error(type(self).__name__, "extra_forbidden", (key,), value)
            model = entry.options_model()
            assert model is not None  # _owner finds entries with options
            try:
                blocks[key] = None if value is None else model.model_validate(value)
            except ValidationError as e:
                raise _prefixed(e, key, type(self).__name__) from None
        for name in chosen:
            entry = self._owner(name)
            if entry is None:
                continue
            if name in type(self).model_fields and name not in self.DECLARED:
                raise ValueError(f"{WHAT[entry.kind]} '{name}': its options would be the "
                                 f"field '{name}'; the entry needs another name")
            if blocks.get(name) is None:
                model = entry.options_model()
                assert model is not None
                blocks[name] = model()
        for key in self.DECLARED:
            setattr(self, key, blocks[key] if key in chosen else None)
        extra.clear()
        extra.update({k: v for k, v in blocks.items() if k in chosen and k not in self.DECLARED
                      and v is not None})

    @classmethod
    def _owner(cls, key: str) -> Entry | None:
        """The entry (of KINDS, with options) whose block `key` is."""
        found = [e for kind in cls.KINDS for e in entries(kind) if e.name == key and e.options]
        if len(found) > 1:
            raise ValueError(f"'{key}' names a {WHAT[found[0].kind]} and a "
                             f"{WHAT[found[1].kind]} with options; rename one")
        return found[0] if found else None


def _error(title: str, kind: str, loc: tuple[int | str, ...], value: object
           ) -> ValidationError:
    return ValidationError.from_exception_data(
        title, [InitErrorDetails(type=kind, loc=loc, input=value)])


def _prefixed(e: ValidationError, key: str, title: str) -> ValidationError:
    """`e` with its locations under `key` (pydantic reports them under the spec's field)."""
    out: list[InitErrorDetails] = []
    for x in e.errors():
        d = InitErrorDetails(type=x["type"], loc=(key, *x["loc"]), input=x["input"])
        if "ctx" in x:
            d["ctx"] = x["ctx"]
        try:  # a type pydantic knows is rebuilt as itself; a custom one keeps its message
            ValidationError.from_exception_data(title, [d])
        except KeyError:
            message = x["msg"].replace("{", "{{").replace("}", "}}")
            d = InitErrorDetails(type=PydanticCustomError(x["type"], message), loc=d["loc"],
                                 input=x["input"])
        out.append(d)
    return ValidationError.from_exception_data(title, out)
