"""Hub datasets without the hub: where a dataset lies on this machine, for evaluation tasks
(`evaluation/hub_data.py`) and for calibration and recovery sources (`hf:REPO[:CONFIG]`).

A user holds a hub dataset in one of two ways: a hub snapshot (`hf download REPO --repo-type
dataset`, under $HF_HOME/hub) or the datasets cache an earlier online `load_dataset` left
(under $HF_HOME/datasets). In offline mode `datasets.load_dataset(REPO)` reads only the
second, so a snapshot is handed to the loader as its folder and a datasets cache as the hub
id. The check asks the very builder the loader will use for the config and split, in the
cache folder it will use: what passes the check is what loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, model_serializer, model_validator

from harness.errors import UserError

PACKAGED = ("json", "csv", "parquet", "arrow", "text", "imagefolder")


@dataclass(frozen=True)
class Located:
    repo: str  # the dataset as named (a hub id)
    path: str  # what `load_dataset` is given: a snapshot folder, or the hub id (datasets cache)
    kind: str  # "snapshot" | "datasets cache" | "local"
    identity: str  # snapshot folder or cache folder: what a stored result depends on


def hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def datasets_cache() -> str:
    """The datasets library's own cache folder ($HF_DATASETS_CACHE, else $HF_HOME/datasets)."""
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


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
def quiet() -> Iterator[None]:
    """datasets announces every offline cache hit as a warning; the check is not news."""
    log = logging.getLogger("datasets")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def splits(builder) -> list[str]:
    files = getattr(builder.config, "data_files", None)
    if files:
        return list(files)
    return list(builder.info.splits or {})


def snapshot(repo: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, repo_type="dataset", local_files_only=True)
    except Exception:
        return None


def locate(who: str, repo: str, name: str | None, split: str, cache_dir: str) -> Located:
    """Where `repo` (config `name`, split `split`) loads from offline, checked by building the
    loader's own dataset builder; a one-line `UserError` starting with `who` and naming a
    working remedy otherwise."""
    import datasets

    offline()
    if repo in PACKAGED or Path(repo).is_dir():
        return Located(repo, repo, "local", str(Path(repo).resolve()) if repo not in PACKAGED
                       else repo)
    what = f"config '{name}', split '{split}'" if name else f"split '{split}'"
    folder = snapshot(repo)
    if folder is not None:
        try:
            with quiet():
                builder = datasets.load_dataset_builder(folder, name, cache_dir=cache_dir)
        except Exception as e:
            raise UserError(f"{who}: the hub snapshot of {repo} at {folder} cannot be read "
                            f"for {what} ({line(e)}); download it whole: `hf download {repo} "
                            f"--repo-type dataset`") from None
        if split not in splits(builder):
            raise UserError(f"{who}: the hub snapshot of {repo} at {folder} has no split "
                            f"'{split}' (has: {', '.join(splits(builder)) or 'none'}); download "
                            f"it whole: `hf download {repo} --repo-type dataset`")
        return Located(repo, folder, "snapshot", folder)
    try:
        with quiet():
            builder = datasets.load_dataset_builder(repo, name, cache_dir=cache_dir)
    except Exception as e:
        if "Couldn't find cache" in str(e) and "for config" in str(e):  # cached, not that one
            raise UserError(f"{who}: the datasets cache of {repo} under {cache_dir} "
                            f"has no {what}: {line(e)}") from None
        raise UserError(
            f"{who}: its dataset {repo} is not on this machine (no hub snapshot under "
            f"{hub_cache()}, no datasets cache under {cache_dir}); where the hub is "
            f"reachable run `hf download {repo} --repo-type dataset` and bring that hub folder "
            f"here (or point HF_HOME at it)") from None
    if split not in splits(builder):
        raise UserError(f"{who}: the datasets cache of {repo} at {builder.cache_dir} has "
                        f"no split '{split}' (has: {', '.join(splits(builder)) or 'none'})")
    return Located(repo, repo, "datasets cache", str(builder.cache_dir))


def line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


# ---- calibration and recovery sources: `hf:REPO[:CONFIG]` -----------------------------------
HF = "hf:"


def is_source(source: str) -> bool:
    return source.startswith(HF)


def source_name(source: str) -> tuple[str, str | None]:
    """(repo, config) of `hf:REPO[:CONFIG]`."""
    repo, _, config = source[len(HF):].partition(":")
    return repo, (config or None)


def located(field: str, source: str, split: str) -> Located:
    """Where a hub source's split lies on this machine, or one line naming what is missing
    and the command that fetches it (checked before any model loads)."""
    repo, config = source_name(source)
    if not repo or repo.count("/") != 1:
        raise UserError(f"{field}: '{source}': give hf:OWNER/NAME or hf:OWNER/NAME:CONFIG")
    return locate(f"{field} {source}", repo, config, split, datasets_cache())


class HubColumns(BaseModel):
    """A source spec whose `HUB_FIELDS` (split, columns) mean something for a hub source
    only: given with another source they are refused, and they are left out of the dump of
    any other source's spec, so that its stage keys stay as they were before the fields
    existed."""

    HUB_FIELDS: ClassVar[tuple[str, ...]] = ()
    source: str = "shapes"

    @model_validator(mode="after")
    def _hub_fields(self) -> HubColumns:
        given = [f for f in self.HUB_FIELDS if f in self.model_fields_set]
        if given and not is_source(self.source):
            raise ValueError(f"{', '.join(given)}: only with a hub source (source: "
                             f"hf:REPO[:CONFIG]); source is '{self.source}'")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict:
        data = handler(self)
        if not is_source(self.source):
            for f in self.HUB_FIELDS:
                data.pop(f, None)
        return data
