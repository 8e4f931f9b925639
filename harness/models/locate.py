"""Where a model name is on disk: an embedded model, a local folder, or a snapshot in the
Hugging Face cache (never the network), and the fingerprints of what a model spec names.
Loading (`load.resolve`), the stage keys and the checks before work all ask here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from harness import fingerprint
from harness.models import blip, llava

if TYPE_CHECKING:
    from harness.models.load import ModelSpec

EMBEDDED = {"shapes-llava": Path(__file__).resolve().parent.parent / "zoo" / "shapes-llava"}
LAYOUTS = Path(__file__).resolve().parent / "layouts"  # shipped layouts, one per model_type
ROLE_CODE = Path(__file__).resolve().parent  # auto.py and chat.py: roles and prompts found


def shipped_layout(model_type: str | None) -> Path | None:
    """The layout shipped for a model_type (`layouts/<model_type>.yaml`): a model of a type
    without a Python family loads with it when no layout file is named."""
    file = LAYOUTS / f"{model_type}.yaml"
    return file if model_type and file.is_file() else None


def model_type_of(folder: Path) -> str | None:
    """config.json's model_type, or None when it cannot be read (loading says why)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def local_folder(name: str) -> Path | None:
    """The folder `name` is without the hub: an embedded model or a local path."""
    if name in EMBEDDED:
        return EMBEDDED[name]
    if name and Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    return None


def hub_snapshot(name: str) -> Path | None:
    """The Hugging Face cache's snapshot of a hub id; None when the cache has none."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or not a hub id): the stage says so
        return None


def model_folder(m: ModelSpec) -> Path | None:
    """The folder a model spec names: embedded, local, or the Hugging Face cache's snapshot
    of a hub id; None when there is none."""
    return local_folder(m.name) or hub_snapshot(m.name)


def model_content(m: ModelSpec) -> dict[str, str]:
    """Fingerprints of what a model spec names: its folder and its layout file (with none,
    for a model whose roles are found: the code that finds them)."""
    folder = model_folder(m)
    out = {"folder": fingerprint.of_folder(folder) if folder else f"missing:{m.name}"}
    kind = model_type_of(folder) if folder else None
    layout = m.layout or (shipped_layout(kind) if folder else None)
    if layout:
        out["layout"] = fingerprint.of_file(layout)
    elif folder and kind not in (*llava.MODEL_TYPES, *blip.MODEL_TYPES):
        # nothing written for it: its roles and prompts come from the code that finds them
        out["roles"] = fingerprint.digest([fingerprint.of_file(ROLE_CODE / f)
                                           for f in ("auto.py", "chat.py")])
    return out
