"""Models named in config: `shapes-llava` (embedded), a local path, or a hub id in the local
Hugging Face cache. Nothing is downloaded: a model that is not on disk is a `UserError`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from harness.errors import UserError, unknown
from harness.models import blip, generic, llava
from harness.models.layout import Layout, Prompts

if TYPE_CHECKING:  # torch loads with the first model, not with a grid file
    from torch import nn

    from harness.models.adapter import Adapter

log = logging.getLogger(__name__)

EMBEDDED = {"shapes-llava": Path(__file__).resolve().parent.parent / "zoo" / "shapes-llava"}
FAMILIES = ("llava", "blip2", "instructblip", "generic")


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class ModelSpec(BaseModel):
    """`model:` in a grid file."""

    model_config = ConfigDict(extra="forbid")
    name: str = "shapes-llava"
    adapter: Literal["auto", "llava", "blip2", "instructblip", "generic"] = "auto"
    layout: str | None = None  # YAML file of module paths; required for adapter: generic
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto: cuda when there is one, else cpu


def resolve(name: str) -> str:
    """A local folder for `name`, or the hub id itself when the HF cache holds it."""
    if name in EMBEDDED:
        return str(EMBEDDED[name])
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
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
    if model_type in llava.MODEL_TYPES:
        return "llava"
    if model_type == "blip-2":
        return "blip2"
    if model_type == "instructblip":
        return "instructblip"
    return "generic"


def adapter_for(model: nn.Module, processor, family: str = "auto", layout: str | None = None,
                name: str = "") -> Adapter:
    """Wrap a model already in memory (tests build tiny ones) in its role adapter."""
    if family == "auto":
        family = family_of(model.config.model_type)
    if family not in FAMILIES:
        raise unknown("adapter", family, FAMILIES)
    prompts: Prompts
    lay: Layout
    if family == "generic" or layout is not None:
        if layout is None:
            raise UserError(f"model '{name or model.config.model_type}' needs adapter: generic "
                            "with a layout file (module paths of vision, bridge, language)")
        lay, prompts = generic.load_layout(layout)
    elif family == "llava":
        lay, prompts = llava.layout(model), llava.PROMPTS
    else:
        lay = blip.layout(model)
        prompts = blip.PROMPTS["blip-2" if family == "blip2" else "instructblip"]
    from harness.models.adapter import Adapter

    return Adapter(model, processor, lay, family, prompts, name)


def load(spec: ModelSpec | str, weights: bool = True) -> Adapter:
    """Load a named model and its processor offline, and wrap it in its adapter. With
    `weights=False` the model is built from its config on the meta device: shapes and roles
    without reading a byte of weights (a search counts each role's weights this way)."""
    import torch
    from transformers import AutoConfig, AutoProcessor

    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    where = resolve(spec.name)
    config = AutoConfig.from_pretrained(where, local_files_only=True)
    cls = _model_class(family_of(config.model_type) if spec.adapter == "auto" else spec.adapter)
    if not weights:
        with torch.device("meta"):
            model = cls._from_config(config, dtype=_dtype(spec.dtype))
        return adapter_for(model, None, spec.adapter, spec.layout, spec.name)
    model = cls.from_pretrained(where, local_files_only=True, dtype=_dtype(spec.dtype))
    processor = AutoProcessor.from_pretrained(where, local_files_only=True)
    device = spec.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    adapter = adapter_for(model, processor, spec.adapter, spec.layout, spec.name)
    extra = Path(where) / "vlmprune.json"  # a model's own prompt format (shapes-llava has one)
    if extra.is_file():
        p = json.loads(extra.read_text()).get("prompts", {})
        adapter.prompts = Prompts(p.get("vqa", adapter.prompts.vqa),
                                  p.get("caption", adapter.prompts.caption))
    return adapter


def _model_class(family: str):
    import transformers as tf

    return {"llava": tf.LlavaForConditionalGeneration,
            "blip2": tf.Blip2ForConditionalGeneration,
            "instructblip": tf.InstructBlipForConditionalGeneration,
            "generic": tf.AutoModelForImageTextToText}[family]
