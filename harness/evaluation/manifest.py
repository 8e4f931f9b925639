"""lmms-eval's entry point for the `vlmprune` model (pyproject's `lmms_eval.models` group): a
function, so that loading this module imports nothing. lmms-eval builds its model registry
while `lmms_eval.models` loads, and loads every entry point then; an entry point in
lmms_model.py, which imports lmms_eval, was a circle whenever lmms_model was the first to
load (the registry met a half-loaded module and skipped the model with a warning)."""

from __future__ import annotations

from typing import Any


def manifest() -> Any:
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="vlmprune",
                         simple_class_path="harness.evaluation.lmms_model.VlmpruneLM")
