"""lmms-eval's built-in tasks without the hub: where each task's dataset lies on this machine.

A user holds a hub dataset in one of two ways: a hub snapshot (`hf download REPO --repo-type
dataset`, under $HF_HOME/hub) or the datasets cache an earlier online `load_dataset` left
(under $HF_HOME/datasets). In offline mode `datasets.load_dataset(REPO)` reads only the
second, so a snapshot is handed to lmms-eval as its folder (the task's `dataset_path`
overridden) and a datasets cache as the hub id. The check asks the very builder the loader
will use for the task's config and split, in the cache folder lmms-eval will use: what passes
the check is what loads.

A task's own code may read more than its dataset: lmms-eval's GQA loads its images by hub id
inside `process_docs`, so GQA gets a `process_docs` that reads them from where its questions
were found.
"""

from __future__ import annotations

import functools
from typing import Any

from harness import hub
from harness.errors import UserError
from harness.hub import Located, offline  # noqa: F401 - re-exported: evaluation reads them

# Configs a task's code reads besides its own: task -> [(config, split)] of the same repo.
EXTRA = {"gqa": [("testdev_balanced_images", "testdev")]}


def datasets_cache() -> str:
    """The datasets cache folder lmms-eval's loader uses ($LMMS_EVAL_DATASETS_CACHE, else
    $HF_DATASETS_CACHE, else $HF_HOME/datasets)."""
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    return _resolve_hf_datasets_cache_dir()


def locate(task: str, repo: str, name: str | None, split: str) -> Located:
    """Where a task's `repo` (config `name`, split `split`) loads from offline, in the cache
    folder lmms-eval's loader uses (`harness/hub.py`)."""
    return hub.locate(f"task {task}", repo, name, split, datasets_cache())


def task_sources(task: str, config: dict) -> list[Located]:
    """Every dataset the task reads: its own, then any EXTRA config of the same repo."""
    repo = config.get("dataset_path")
    if not repo:
        return []
    split = config.get("test_split") or config.get("validation_split") or "test"
    found = [locate(task, repo, config.get("dataset_name"), split)]
    for name, extra_split in EXTRA.get(task, []):
        found.append(locate(task, repo, name, extra_split))
    return found


def override(task: str, config: dict, found: list[Located],
             bare: bool = False) -> str | dict[str, Any]:
    """The task as lmms-eval's `simple_evaluate(tasks=...)` takes it: its name, or a dict
    that changes what it must (the rest of its config stays lmms-eval's): a snapshot folder
    as its `dataset_path`, GQA's image loading, and for a model trained on bare questions
    (`bare`) the instructions the task would add around each question."""
    res: dict[str, Any] = {}
    if found and found[0].kind != "local":
        res["dataset_path"] = found[0].path
        res["dataset_kwargs"] = {k: v for k, v in (config.get("dataset_kwargs") or {}).items()
                                 if k != "token"}
    if task == "gqa" and len(found) == 2:
        res["process_docs"] = functools.partial(gqa_docs, images=found[1].path)
    default = dict(((config.get("lmms_eval_specific_kwargs") or {}).get("default")) or {})
    if bare and {"pre_prompt", "post_prompt"} & default.keys():
        res["lmms_eval_specific_kwargs"] = {"default": default | {"pre_prompt": "",
                                                                  "post_prompt": ""}}
    return {"task": task, **res} if res else task


def gqa_docs(dataset, images: str):
    """lmms-eval's `gqa_process_docs`, reading the images config from `images` (a snapshot
    folder or the hub id) instead of the hub: each question gets its image by `imageId`."""
    import datasets

    with hub.quiet():
        table = datasets.load_dataset(images, "testdev_balanced_images", split="testdev",
                                      cache_dir=datasets_cache())
    raw = table.cast_column("image", datasets.Image(decode=False))
    index = {image_id: i for i, image_id in enumerate(raw["id"])}
    missing = sorted(set(dataset["imageId"]) - index.keys())
    if missing:
        raise UserError(f"task gqa: {len(missing)} question(s) name images that "
                        f"{images} (testdev_balanced_images) lacks, e.g. '{missing[0]}'")
    column = raw["image"]
    features = dataset.features.copy()
    features["image"] = datasets.Image()
    return dataset.map(lambda doc: {"image": column[index[doc["imageId"]]]}, features=features,
                       desc="GQA images")
