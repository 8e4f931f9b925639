"""Reading a user's JSONL sample file (calibration, recovery data): one row per line, each a
JSON object with the keys the reader needs; any problem is one line naming the file, the
line and the field that points at it."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError


def rows(path: str | Path, field: str, keys: tuple[str, ...],
         optional: tuple[str, ...] = ()) -> list[dict]:
    """The rows of `path`, each holding `keys`, each row's `image` (a path relative to the
    file) present; `field` is the setting that named the file (`prune.calibration.source`)."""
    path = Path(path)
    want = ", ".join(f"'{k}'" for k in keys) + "".join(f" (and optional '{k}')"
                                                       for k in optional)
    if not path.is_file():
        raise UserError(f"{field}: {path}: no such file (a JSONL file with {want} on each "
                        "line)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{field}: {path}: cannot read it as text ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{field}: {path}: line {n} is not JSON ({e.msg} at column "
                            f"{e.colno})") from None
        if not isinstance(row, dict) or not set(keys) <= set(row):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise UserError(f"{field}: {path}: line {n} needs {want}; it has {got}")
        image = row.get("image")
        if isinstance(image, str) and not (path.parent / image).is_file():
            raise UserError(f"{field}: {path}: line {n}: image '{image}' not found (image paths "
                            "are relative to the JSONL file)")
        out.append(row)
    if not out:
        raise UserError(f"{field}: {path}: no rows (each line: a JSON object with {want})")
    return out


CALIBRATION = ("prune.calibration.source", ("image", "text"), ())
RECOVERY = ("recover.data.source", ("image", "answer"), ("prompt",))


def check_sources(cell, seen: set | None = None) -> None:
    """The JSONL files a cell's calibration and recovery read, checked whole before any
    model loads (`shapes`, hub sources and datasets folders are not JSONL: `sweep/checks.py`
    finds hub sources); `seen` skips files checked
    for an earlier cell."""
    seen = set() if seen is None else seen
    wanted: list[tuple[str, tuple]] = []
    if cell.prune is not None and cell.prune.calibration is not None:
        wanted.append((cell.prune.calibration.source, CALIBRATION))
    if getattr(cell, "recover", None) is not None and cell.recover.method != "none":
        wanted.append((cell.recover.data.source, RECOVERY))
    for source, kind in wanted:
        if source == "shapes" or source.startswith("hf:") or Path(source).is_dir() \
                or (source, kind) in seen:
            continue
        rows(source, *kind)
        seen.add((source, kind))
