"""Content fingerprints of the inputs a cell names by path, for its stage keys.

A stage key must change when what a path holds changes, not only when the path does: a
layout file edited, a calibration JSONL or one of its images replaced, a datasets folder
rewritten, a local model retrained in place. So keys hold these fingerprints:
- a file: the SHA-256 of its bytes;
- a folder: one hash over (relative path, fingerprint) of its files, hidden ones and
  `__pycache__` excepted;
  a Hugging Face cache snapshot's files are symlinks to blobs named by their own hash, and
  count by that name, unread;
- a JSONL source: the file, plus every image its lines name (relative to the file);
- a path that does not exist: `missing:<path>` (the stage then fails with its reader's error).

Hashing a 7B model's 14 GB at every start would cost seconds, so a file's hash is memoized by
(path, size, mtime, inode), in memory and in results/cache/fingerprints.json. Only `save()`
writes that file (a sweep calls it; `plan` and dry runs never write). Folder and JSONL
fingerprints are memoized per grid expansion (`fresh()` starts one), since a folder of a
hundred thousand images costs as many stats.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from harness import integrity
from harness.paths import cache_dir

_BLOB = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # HF cache blobs: git sha1 or LFS sha256
_files: dict[str, list] = {}  # absolute path -> [size, mtime_ns, inode, sha256]
_loaded_from: Path | None = None
_dirty = False
_scoped: dict[tuple[str, str], str] = {}


def memo_file() -> Path:
    return cache_dir("fingerprints.json")


def _load_memo() -> None:
    global _loaded_from
    where = memo_file()
    if _loaded_from == where:
        return
    _loaded_from = where
    _files.clear()
    try:
        data = json.loads(where.read_text())
        if isinstance(data, dict):
            _files.update({k: v for k, v in data.items() if isinstance(v, list) and len(v) == 4})
    except (OSError, ValueError):
        pass  # no memo yet, or a damaged one: hash again


def save() -> None:
    """Write the memo of file hashes (atomically), if anything new was hashed."""
    global _dirty
    if not _dirty:
        return
    where = memo_file()
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.with_name(f".tmp-{where.name}-{os.getpid()}")
    tmp.write_text(json.dumps(_files))
    os.replace(tmp, where)
    _dirty = False


def fresh() -> None:
    """Forget folder and JSONL fingerprints (a new grid expansion may follow edits)."""
    _scoped.clear()


def of_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoized by its stat; `missing:<path>` if there is none."""
    global _dirty
    p = Path(path)
    if p.is_symlink() and _BLOB.match(os.path.basename(os.readlink(p))):
        return os.path.basename(os.readlink(p))  # a content-addressed HF cache blob
    try:
        st = p.stat()
    except OSError:
        return f"missing:{path}"
    if not p.is_file():
        return of_folder(p)
    _load_memo()
    key = str(p.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = _files.get(key)
    if hit and hit[:3] == stamp:
        return hit[3]
    h = integrity.digest(p)
    _files[key] = [*stamp, h]
    _dirty = True
    return h


def digest(obj) -> str:
    """A short hash of a JSON-able object (a normalized spec, a key's parts): 16 hex digits
    of the SHA-256 of its canonical JSON."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def of_folder(path: str | Path) -> str:
    """One hash over every (relative path, file fingerprint) under a folder, hidden excepted."""
    p = Path(path)
    if ("folder", str(p)) in _scoped:
        return _scoped[("folder", str(p))]
    if not p.is_dir():
        return of_file(p) if p.exists() else f"missing:{path}"
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        rel = f.relative_to(p)
        if f.is_dir() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{of_file(f)}\n".encode())
    _scoped[("folder", str(p))] = out = h.hexdigest()
    return out


def of_source(path: str | Path, image_key: str = "image") -> str:
    """A data source named by path: a folder (datasets' save_to_disk), or a JSONL file with
    the images its lines name (relative to the file) hashed in too."""
    p = Path(path)
    if p.is_dir():
        return of_folder(p)
    if ("source", str(p)) in _scoped:
        return _scoped[("source", str(p))]
    h = hashlib.sha256(of_file(p).encode())
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the reader reports bad lines; the file's own hash covers them
            if isinstance(row, dict) and isinstance(row.get(image_key), str):
                h.update(f"{row[image_key]}\0{of_file(p.parent / row[image_key])}\n".encode())
    _scoped[("source", str(p))] = out = h.hexdigest()
    return out
