"""Models named in config: `shapes-llava` (embedded), a local path, or a hub id in the local
Hugging Face cache. Nothing is downloaded: a model that is not on disk is a `UserError`."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import UserError, first_line, unknown
from harness.models import auto, blip, chat, generic, llava
from harness.models.layout import ROLES, Layout, Prompts
from harness.models.locate import EMBEDDED, local_folder, shipped_layout

if TYPE_CHECKING:  # torch loads with the first model, not with a grid file
    from torch import nn

    from harness.models.adapter import Adapter

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Family:
    """An architecture family: the config model_types it covers, the transformers class that
    loads it, where its roles live (None: a YAML layout) and how it is prompted."""

    model_types: tuple[str, ...]
    model_class: str
    layout: Callable[[nn.Module], Layout] | None = None
    prompts: Prompts | None = None


FAMILIES: dict[str, Family] = {
    "llava": Family(llava.MODEL_TYPES, "LlavaForConditionalGeneration", llava.layout,
                    llava.PROMPTS),
    "blip2": Family(blip.MODEL_TYPES[:1], "Blip2ForConditionalGeneration", blip.layout,
                    blip.PROMPTS["blip-2"]),
    "instructblip": Family(blip.MODEL_TYPES[1:], "InstructBlipForConditionalGeneration",
                           blip.layout, blip.PROMPTS["instructblip"]),
    "generic": Family((), "AutoModelForImageTextToText"),
}


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelSpec(BaseModel):
    """`model:` in a grid file."""

    model_config = ConfigDict(extra="forbid")
    name: str = "shapes-llava"
    # "auto" (from config.json's model_type) or a key of FAMILIES; `adapter:` is its old name
    family: str = Field("auto", validation_alias=AliasChoices("family", "adapter"))
    layout: str | None = None  # YAML file of module paths; required for family: generic
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto: cuda when there is one, else cpu
    # none: the whole model on `device`; disk: built on the meta device, each block read from
    # the folder's safetensors when its turn comes; cpu: in CPU memory, each block moved to
    # `device` in its turn (models/offload.py). A memory setting: never part of a key.
    offload: Literal["none", "cpu", "disk"] = "none"
    # offloaded: the calibration inputs passed between blocks held in memory up to this many
    # GiB, the rest written to the work folder (pruning/pipelines/activations.py). Memory too.
    spill_activations: float | None = Field(None, ge=0)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if v != "auto" and v not in FAMILIES:
            raise ValueError(f"unknown family '{v}' (known: auto, "
                             f"{', '.join(FAMILIES)})")
        return v

    @model_validator(mode="after")
    def _spill(self) -> ModelSpec:
        if self.spill_activations is not None and self.offload == "none":
            raise ValueError("spill_activations needs offload: disk or cpu (an in-memory "
                             "prune keeps its activations in memory)")
        return self

    def keyed(self, exclude: set[str]) -> dict:
        """The fields as stage and cache keys hash them: under the field's old name
        `adapter`, so that keys computed before the rename stay valid."""
        data = self.model_dump(exclude=exclude | {"offload", "spill_activations"})
        return {("adapter" if k == "family" else k): v for k, v in data.items()}


PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
VLM_FOLDER = ("a VLM folder holds config.json, its weights (*.safetensors) and its processor "
              "files, as save_pretrained writes them")


def resolve(name: str) -> str:
    """A local folder for `name`, or the hub id itself when the HF cache holds it."""
    if not name.strip():
        raise UserError(f"model name is empty: give an embedded model ({', '.join(EMBEDDED)}), "
                        "a folder, or a hub id in the Hugging Face cache")
    folder = local_folder(name)
    if folder is not None:
        return str(folder)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(
            f"model '{name}' is not available offline: it is not a local folder, not an "
            f"embedded model ({', '.join(EMBEDDED)}) and not in the Hugging Face cache; "
            f"download it where the hub is reachable, or name a local path") from None
    return name


def family_of(model_type: str) -> str:
    return next((name for name, f in FAMILIES.items() if model_type in f.model_types),
                "generic")


def adapter_for(model: nn.Module, processor, family: str = "auto", layout: str | None = None,
                name: str = "") -> Adapter:
    """Wrap a model already in memory (tests build tiny ones) in its role adapter."""
    if family == "auto":
        family = family_of(model.config.model_type)
    if family not in FAMILIES:
        raise unknown("adapter", family, FAMILIES)
    f = FAMILIES[family]
    prompts: Prompts
    lay: Layout
    layout = layout_file(family, model.config.model_type, layout)
    if layout is not None:
        lay, prompts = generic.load_layout(layout)
        source = layout
    elif f.layout is not None:
        lay, prompts = f.layout(model), f.prompts or Prompts()
        source = f"the {family} layout"
    else:  # nothing written for this model: its roles and prompts read from it
        lay = auto.detect(model)
        prompts = chat.prompts_from(processor) if processor is not None else Prompts()
        source = f"{name or model.config.model_type} (roles found from its config)"
    _check_paths(model, lay, source)
    auto.partition(model, lay, source)
    from harness.models.adapter import Adapter

    return Adapter(model, processor, lay, family, prompts, name)


def _check_paths(model: nn.Module, lay: Layout, source: str) -> None:
    """Every module path of a layout is in the model (a layout written for another
    architecture failed later, as an AttributeError from deep in torch): one line naming the
    file, the role and the path, and what the model holds where the path leaves it."""
    for role in ("vision", "bridge", "language"):
        for path in lay.paths(role):
            node, seen = model, []  # type: tuple[nn.Module, list[str]]
            for part in path.split("."):
                children = dict(node.named_children())
                if part not in children:
                    here = ".".join(seen) or "the model"
                    what = ", ".join(list(children)[:8]) or "no submodules"
                    raise UserError(
                        f"{source}: field '{role}': no module '{path}' in this "
                        f"{model.config.model_type} model ({here} holds: {what}); a layout "
                        "of another architecture? (see harness/models/layouts/)")
                node, seen = children[part], [*seen, part]


def load(spec: ModelSpec | str, weights: bool = True, work: Path | None = None) -> Adapter:
    """Load a named model and its processor offline, and wrap it in its adapter. With
    `weights=False` the model is built from its config on the meta device: shapes and roles
    without reading a byte of weights (a search counts each role's weights this way). With
    `spec.offload`, the adapter's `residency` streams its blocks; `work` is the folder where
    an offloaded model's changed blocks are written (a temporary one when None)."""
    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    where = resolve(spec.name)  # the cheap checks first: no torch for a misspelt path
    spec = _own_layout(spec, where)
    config = _config(where, weights, spec.layout)
    spec = spec.model_copy(update={"layout": layout_file(_named(spec, config.model_type),
                                                         config.model_type, spec.layout)})
    import torch

    if spec.layout is None:
        auto.refuse_early(where, config)
    if getattr(config, "vision_config", None) is None and spec.layout is None:
        raise UserError(f"{where}: model_type '{config.model_type}' has no vision_config: a "
                        "text-only model, not a vision-language model (vlmprune prunes VLMs; a "
                        "VLM of another shape needs --layout)")
    cls = _model_class(_family(spec, where, config.model_type))
    if not weights:
        with torch.device("meta"), _problems(where, "the model", config):
            if hasattr(cls, "_from_config"):
                model = cls._from_config(config, dtype=_dtype(spec.dtype))
            else:  # an Auto class (generic family): shapes only, dtype does not matter
                model = cls.from_config(config)
        return adapter_for(model, None, spec.family, spec.layout, spec.name)
    from transformers import AutoProcessor

    with _problems(where, "the processor", config):  # first: it fails fast, weights do not
        processor = AutoProcessor.from_pretrained(where, local_files_only=True)
    if isinstance(processor, str) or not hasattr(processor, "image_processor"):
        raise UserError(f"{where}: no image processor (found {type(processor).__name__}); "
                        f"{VLM_FOLDER}")
    device = spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.offload == "disk":
        model = _empty(cls, config, spec, where)
    else:
        with _problems(where, "the weights", config), _quiet_loading():
            model, info = cls.from_pretrained(where, local_files_only=True,
                                              dtype=_dtype(spec.dtype),
                                              output_loading_info=True,
                                              ignore_mismatched_sizes=True)
        _check_loaded(where, type(model).__name__, info)
        model.to("cpu" if spec.offload == "cpu" else device)
    model.eval()
    adapter = adapter_for(model, processor, spec.family, spec.layout, spec.name)
    if spec.offload != "none":
        from harness.models import offload

        adapter.residency = offload.stream(
            model, [(b.name, b.module) for r in ROLES for b in adapter.blocks(r)],
            spec.offload, _snapshot(where), torch.device(device), _dtype(spec.dtype),
            Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="vlmprune-")))
        if spec.spill_activations is not None:
            adapter.residency.spill = int(spec.spill_activations * 2**30)
    extra = Path(where) / "vlmprune.json"  # a model's own prompt format (shapes-llava has one)
    if extra.is_file():
        p = json.loads(extra.read_text()).get("prompts", {})
        adapter.prompts = Prompts(p.get("vqa", adapter.prompts.vqa),
                                  p.get("caption", adapter.prompts.caption),
                                  bool(p.get("instructions", adapter.prompts.instructions)))
    return adapter


def _empty(cls, config, spec: ModelSpec, where: str):
    """The model built on the meta device, its buffers real (offload: disk)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False), _problems(where, "the model", config):
        if hasattr(cls, "_from_config"):
            return cls._from_config(config, dtype=_dtype(spec.dtype))
        return cls.from_config(config, dtype=_dtype(spec.dtype))


def _snapshot(where: str) -> Path:
    """The folder holding a model's files: `where`, or its snapshot in the HF cache."""
    if Path(where).is_dir():
        return Path(where)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(where, local_files_only=True))


LAYOUT_FLAG = "--layout FILE (model.layout in a grid)"


def layout_file(family: str, model_type: str, layout: str | None) -> str | None:
    """The layout file a model loads with: the one named, else, for a family without a
    layout of its own, the one shipped for its model_type (None: there is none)."""
    if layout is not None or FAMILIES[family].layout is not None:
        return layout
    found = shipped_layout(model_type)
    return str(found) if found else None


def _named(spec: ModelSpec, model_type: str) -> str:
    return family_of(model_type) if spec.family == "auto" else spec.family


def _family(spec: ModelSpec, where: str, model_type: str) -> str:
    """The family a model loads as, decided from its config before anything loads: a family
    named for another model_type is refused (its class would load the weights it can and
    leave the rest: a VipLLaVA as a LLaVA lost its projector's LayerNorm). A model_type
    with neither a built-in family, a shipped layout nor a layout file loads as `generic`
    with its roles found from its config (models/auto.py)."""
    family = _named(spec, model_type)
    f = FAMILIES[family]
    if spec.family not in ("auto", "generic") and model_type not in f.model_types:
        right, shipped = family_of(model_type), shipped_layout(model_type)
        fix = (f"give --family auto (here: {right})" if FAMILIES[right].layout else
               f"give --family auto (here: the shipped layout {shipped})" if shipped else
               "give --family auto (here: roles found from its config) or a layout file, "
               f"{LAYOUT_FLAG}")
        raise UserError(
            f"{where}: --family (model.family) '{family}' is for model_type "
            f"{' or '.join(repr(m) for m in f.model_types)}, but its config.json says "
            f"model_type '{model_type}'; {fix}")
    return family


@contextmanager
def _quiet_loading():
    """transformers' multi-line load report (missing, unexpected keys) and its "Loading
    weights" bar off while the weights load: `_check_loaded` says what went wrong in one
    line, and an error is the only line on stderr."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _check_loaded(where: str, cls: str, info: dict) -> None:
    """Weights the class has no place for, places the weights leave empty, or shapes that
    differ: the folder holds another architecture (or a damaged file), and the model would
    run with random parts. One line naming a few of them."""
    def few(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    found = [(what, keys) for what, keys in (
        ("missing", info.get("missing_keys") or ()),
        ("unexpected", info.get("unexpected_keys") or ()),
        ("of another shape", {k[0] for k in info.get("mismatched_keys") or ()}))
        if keys]
    if found:
        said = "; ".join(f"{len(keys)} {what} ({few(keys)})" for what, keys in found)
        raise UserError(f"{where}: its weights do not fit {cls}: "
                        f"{said}; the folder holds another architecture, or a damaged "
                        "weights file")


def _own_layout(spec: ModelSpec, where: str) -> ModelSpec:
    """A saved pruned model of a `generic` VLM carries its layout (vlmprune.json names it):
    used when the caller gives none, so the folder reloads by its path alone."""
    meta = Path(where) / "vlmprune.json"
    if spec.layout is not None or not meta.is_file():
        return spec
    try:
        own = json.loads(meta.read_text()).get("layout")
    except ValueError:
        raise UserError(f"{meta}: not valid JSON") from None
    if not own:
        return spec
    return spec.model_copy(update={"layout": str(Path(where) / own), "family": "generic"})


def _config(where: str, weights: bool = True, layout: str | None = None):
    """The folder's config, or one line saying what is wrong with it (and, with `weights`,
    that the folder has weight files: all checked before transformers is imported)."""
    folder = Path(where)
    if folder.is_dir():
        file = folder / "config.json"
        if not file.is_file():
            raise UserError(f"{where}: no config.json; {VLM_FOLDER}")
        try:
            raw = json.loads(file.read_text())
            model_type = raw.get("model_type")
        except (ValueError, UnicodeDecodeError, AttributeError) as e:
            raise UserError(f"{file}: not valid JSON ({first_line(e)})") from None
        from transformers import __version__
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if model_type not in CONFIG_MAPPING_NAMES:  # before building any config class
            raise UserError(f"{file}: a model_type transformers {__version__} does not know "
                            f"({model_type!r}); a VLM folder's config.json names one, e.g. "
                            "'llava'")
        if layout is None and not any("vision" in k or "visual" in k for k in raw):
            raise UserError(f"{where}: model_type '{model_type}' has no vision part in its "
                            "config: a text-only model, not a vision-language model (vlmprune "
                            "prunes VLMs; a VLM of another shape needs --layout)")
        if weights and not any(p.suffix in (".safetensors", ".bin") for p in folder.iterdir()):
            raise UserError(f"{where}: no weights (*.safetensors or *.bin); {VLM_FOLDER}")
        if weights and not any((folder / n).is_file() for n in PROCESSOR_FILES):
            raise UserError(f"{where}: no processor ({' or '.join(PROCESSOR_FILES)}); "
                            f"{VLM_FOLDER}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = first_line(e, type(e).__name__)
        if isinstance(e, KeyError) or any(w in str(e) for w in (
                "model_type", "model type", "does not recognize")):
            from transformers import __version__

            raise UserError(f"{where}/config.json: a model_type transformers {__version__} "
                            f"does not know ({first[:160]})") from None
        raise UserError(f"{where}: cannot read its config ({first[:160]}); {VLM_FOLDER}"
                        ) from None


@contextmanager
def _problems(where: str, what: str, config):
    """transformers' failures to load a part of a model folder, as one line."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = first_line(e, type(e).__name__)
        if "Unrecognized configuration class" in str(e):
            raise UserError(f"{where}: model_type '{config.model_type}' is not a vision-language "
                            "model transformers can load for image-text-to-text (a text-only "
                            "model?); vlmprune prunes VLMs") from None
        raise UserError(f"{where}: cannot load {what} ({first[:160]}); {VLM_FOLDER}") from None


def _model_class(family: str):
    import transformers as tf

    return getattr(tf, FAMILIES[family].model_class)
