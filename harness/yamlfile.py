"""Reading a user's YAML file (grids, prune specs, layouts) so that every way it can be wrong
is one line naming the file: not text, not YAML (with the line), a key given twice at any
depth (YAML keeps the last one silently: a sweep ran `prune:` twice as the second), and a
document that aliases blow up past a size limit (a "billion laughs" hangs whoever walks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError

MAX_VALUES = 100_000  # values in the document with every alias expanded


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (merge keys `<<` excepted)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
                if first is not None:
                    raise _Duplicate(key, first, key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _Duplicate(Exception):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


def load(path: Path, what: str = "file") -> Any:
    """The document in `path`; any problem with it is a one-line `UserError`."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text {what} (not UTF-8 at byte {e.start}); a {what} "
                        "is YAML text") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _Duplicate as d:
        raise UserError(f"{path}: line {d.again}: key '{d.key}' given twice (first at line "
                        f"{d.first}); YAML would keep only the last: remove one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None)
        raise UserError(f"{path}: invalid YAML{where}" + (f" ({problem})" if problem else "")
                        ) from None
    n = expanded_size(data)
    if n > MAX_VALUES:
        raise UserError(f"{path}: the document expands to more than {MAX_VALUES:,} values "
                        "(aliases repeating aliases?); write it out, or split it")
    return data


def expanded_size(data: Any) -> int:
    """Values in `data` with shared (aliased) parts counted every time they appear; counted
    once per distinct object, so a billion laughs is measured without being walked."""
    memo: dict[int, int] = {}

    def size(x: Any) -> int:
        if isinstance(x, dict):
            items = [*x.keys(), *x.values()]
        elif isinstance(x, list):
            items = x
        else:
            return 1
        if id(x) in memo:
            return memo[id(x)]
        memo[id(x)] = MAX_VALUES + 1  # a cycle (a recursive alias) counts as too large
        memo[id(x)] = total = min(1 + sum(size(i) for i in items), 10 * MAX_VALUES)
        return total

    try:
        return size(data)
    except RecursionError:
        return 10 * MAX_VALUES
