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

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError

PACKAGED = ("json", "csv", "parquet", "arrow", "text", "imagefolder")

# Configs a task's code reads besides its own: task -> [(config, split)] of the same repo.
EXTRA = {"gqa": [("testdev_balanced_images", "testdev")]}


@dataclass(frozen=True)
class Located:
    repo: str  # the dataset as the task names it (a hub id)
    path: str  # what `load_dataset` is given: a snapshot folder, or the hub id (datasets cache)
    kind: str  # "snapshot" | "datasets cache" | "local"
    identity: str  # snapshot folder or cache folder: what a stored result depends on


def datasets_cache() -> str:
    """The datasets cache folder lmms-eval's loader uses ($LMMS_EVAL_DATASETS_CACHE, else
    $HF_DATASETS_CACHE, else $HF_HOME/datasets)."""
    from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

    return _resolve_hf_datasets_cache_dir()


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def offline() -> None:
    """No hub at run time: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE default to 1, and the copies
    huggingface_hub and datasets took of them when first imported follow (a library caller may
    have imported them before any of our code set the variables). A user who sets either to 0
    keeps the hub."""
    import datasets
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    on = all(os.environ[v].strip().lower() in ("1", "true", "yes", "on")
             for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    constants.HF_HUB_OFFLINE = on
    datasets.config.HF_HUB_OFFLINE = on


@contextlib.contextmanager
def _quiet():
    """datasets announces every offline cache hit as a warning; the check is not news."""
    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _splits(builder) -> list[str]:
    files = getattr(builder.config, "data_files", None)
    if files:
        return list(files)
    return list(builder.info.splits or {})


def _snapshot(repo: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, repo_type="dataset", local_files_only=True)
    except Exception:
        return None


def locate(task: str, repo: str, name: str | None, split: str) -> Located:
    """Where `repo` (config `name`, split `split`) loads from offline, checked by building the
    loader's own dataset builder; a one-line `UserError` with a working remedy otherwise."""
    import datasets

    offline()
    if repo in PACKAGED or Path(repo).is_dir():
        return Located(repo, repo, "local", str(Path(repo).resolve()) if repo not in PACKAGED
                       else repo)
    what = f"config '{name}', split '{split}'" if name else f"split '{split}'"
    folder = _snapshot(repo)
    if folder is not None:
        try:
            with _quiet():
                builder = datasets.load_dataset_builder(folder, name, cache_dir=datasets_cache())
        except Exception as e:
            raise UserError(f"task {task}: the hub snapshot of {repo} at {folder} cannot be read "
                            f"for {what} ({_line(e)}); download it whole: `hf download {repo} "
                            f"--repo-type dataset`") from None
        if split not in _splits(builder):
            raise UserError(f"task {task}: the hub snapshot of {repo} at {folder} has no split "
                            f"'{split}' (has: {', '.join(_splits(builder)) or 'none'}); download "
                            f"it whole: `hf download {repo} --repo-type dataset`")
        return Located(repo, folder, "snapshot", folder)
    try:
        with _quiet():
            builder = datasets.load_dataset_builder(repo, name, cache_dir=datasets_cache())
    except Exception as e:
        if "Couldn't find cache" in str(e) and "for config" in str(e):  # cached, not that one
            raise UserError(f"task {task}: the datasets cache of {repo} under {datasets_cache()} "
                            f"has no {what}: {_line(e)}") from None
        raise UserError(
            f"task {task}: its dataset {repo} is not on this machine (no hub snapshot under "
            f"{hub_cache()}, no datasets cache under {datasets_cache()}); where the hub is "
            f"reachable run `hf download {repo} --repo-type dataset` and bring that hub folder "
            f"here (or point HF_HOME at it)") from None
    if split not in _splits(builder):
        raise UserError(f"task {task}: the datasets cache of {repo} at {builder.cache_dir} has "
                        f"no split '{split}' (has: {', '.join(_splits(builder)) or 'none'})")
    return Located(repo, repo, "datasets cache", str(builder.cache_dir))


def _line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


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

    with _quiet():
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
