"""Where generated output goes: `results/` under the working directory unless
`VLMPRUNE_RESULTS` names another folder. Nothing under it is tracked by git. Reports go to
`reports/` (or `VLMPRUNE_REPORTS`). The folders come from the running command's settings
(settings.py), which alone read those variables."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.settings import current

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: folders made by mkdtemp (0700) get the usual mode instead


def results_dir() -> Path:
    return current().results


def reports_dir() -> Path:
    """Where reports go (a grid's, a search's figures): `reports/`, or VLMPRUNE_REPORTS."""
    return current().reports


def user_cache() -> Path:
    """Derived data worth keeping across results folders (an empty MLflow store, models'
    weight counts): $VLMPRUNE_CACHE_HOME, default ~/.cache/vlmprune. Everything in it is
    keyed by the content it derives from, and rebuilt when missing or damaged."""
    home = current().cache_home
    if home is not None:
        return home
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlmprune"


def memo_json(kind: str, key: str, make: Callable[[], Any],
              valid: Callable[[Any], bool] = lambda _: True) -> Any:
    """A JSON value derived from content that `key` digests, kept in the user cache as
    <kind>/<key>.json: read when there and `valid`, else made and written whole (a temporary
    file renamed into place). A cache that cannot be written only means making it again."""
    memo = user_cache() / kind / f"{key}.json"
    try:
        value = json.loads(memo.read_text())
        if valid(value):
            return value
    except (OSError, ValueError):
        pass
    value = make()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".tmp-{os.getpid()}-{memo.name}")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, memo)
    except OSError:
        pass
    return value


def cache_dir(*parts: str) -> Path:
    """results/cache/<parts>: stage outputs, materialized data, response caches."""
    return results_dir().joinpath("cache", *parts)


@contextmanager
def atomic_dir(final: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary sibling of `final` to write into; when the block succeeds it
    is renamed to `final`, whole. A `final` already there is replaced, or with
    `replace=False` kept (another writer finished first). The temporary folder is removed
    on failure; one a killed process left behind is named `.tmp-*`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # others may read a shared cache, as any folder
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def new_file(final: Path, fill: Callable[[Path], None]) -> None:
    """Create `final` whole: `fill` writes a hidden temporary sibling (a missing path it may
    create), which is then linked into place without clobbering (a concurrent writer's
    finished file wins). Nothing half-written is ever seen under `final`'s name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{final.name}-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fill(tmp)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
