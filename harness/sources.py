"""The sample sources calibration (pruning) and recovery (training) both read: the shapes
world's train split, and JSONL files of images with text (each reader names its keys), in a
seeded order, and hub datasets in the local Hugging Face cache (`hf:REPO[:CONFIG]`). Each
stage keeps its own schedule of which items it takes; this is where an item is read."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from harness import hub, jsonl
from harness.errors import UserError
from harness.world.scene import render
from harness.world.splits import caption_sample, vqa_sample


def shapes_item(index: int, caption: bool) -> tuple[np.ndarray, str, str]:
    """Train-split item `index`: (image, question or "" for a caption, answer or caption)."""
    if caption:
        scene, text = caption_sample("train", index)
        return render(scene), "", text
    s = vqa_sample("train", index)
    return render(s.scene), s.qa.question, s.qa.answer


def rows(path: str, kind: tuple) -> list[dict]:
    """A JSONL source's rows, checked whole (`kind`: jsonl.CALIBRATION or jsonl.RECOVERY);
    read again when the file changes (same process, edited file: never the old rows)."""
    try:
        st = Path(path).stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        stamp = None  # jsonl.rows says what is wrong
    return _rows(path, kind, stamp)


@cache
def _rows(path: str, kind: tuple, stamp: tuple | None) -> list[dict]:
    return jsonl.rows(path, *kind)


@cache
def order(n: int, seed: int) -> np.ndarray:
    """The seeded order of a source's n rows (computed once, not per batch)."""
    return np.random.default_rng(seed).permutation(n)


def image(source: str | Path, row: dict) -> Image.Image:
    """A JSONL row's image (its path is relative to the file), as RGB."""
    return Image.open(Path(source).parent / row["image"]).convert("RGB")


# ---- hub datasets: `hf:REPO[:CONFIG]` --------------------------------------------------------
def hub_rows(field: str, source: str, split: str, columns: dict[str, str]):
    """A hub source's split as a `datasets.Dataset`, with the columns named in `columns`
    (what -> column) checked (one line naming the missing column and those there are), and
    the folder its files lie in (where images it names are found)."""
    where = hub.located(field, source, split)
    table = _hub_table(where.path, hub.source_name(source)[1], split, where.identity)
    for what, column in columns.items():
        if column not in table.column_names:
            raise UserError(f"{field}: {source} (split '{split}') has no column '{column}' "
                            f"for its {what}; its columns: {', '.join(table.column_names)}")
    return table, where.path


@cache
def _hub_table(path: str, config: str | None, split: str, identity: str):
    """Loaded once per process and place (`identity`: a new snapshot is a new entry), not for
    every batch that recovery training draws."""
    import datasets

    with hub.quiet():
        return datasets.load_dataset(path, config, split=split, cache_dir=hub.datasets_cache())


def hub_image(value, where: str, who: str) -> Image.Image:
    """A dataset row's image: decoded by datasets, raw bytes, or a path in the dataset's
    folder; `who` (field and source) starts the error for anything else."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes"):
        return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and (Path(where) / path).is_file():
        return Image.open(Path(where) / path).convert("RGB")
    raise UserError(f"{who}: an image that is not in the dataset: {str(path)[:120]!r} (a URL or a "
                    f"file outside {where}; images must be in the dataset or beside it)")


def hub_text(value) -> str:
    """A text cell: a string, or the first of a list of them (captions)."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), "")
    return value if isinstance(value, str) else str(value)
