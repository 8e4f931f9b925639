"""Field types shared by the specs, and the rule for names that become paths."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from harness.errors import UserError

# A seed: a whole number (not true, not 1.5) that numpy and torch both accept.
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
NAME_RULE = ("a name is letters, digits, '_', '-' and '.', at most 100 characters, not "
             "starting with '.'")


def check_name(name: str) -> str:
    """A grid, experiment or study name, returned as it is; a ValueError otherwise. Names
    become file and folder names (reports/NAME/, results/NAME.parquet, results/logs/NAME-*,
    reports/compare-A-B/), so none may climb out of its folder, hide, or carry markup."""
    if not _NAME.fullmatch(name) or name.startswith("."):
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise ValueError(f"{shown!r} is not allowed: {NAME_RULE}")
    return name


def name_flag(name: str, flag: str) -> str:
    """`check_name` for a command-line value: a UserError naming the flag."""
    try:
        return check_name(name)
    except ValueError as e:
        raise UserError(f"{flag} {e}") from None


# A name field of a spec (a grid's `name:`): the error names the file and the field.
Name = Annotated[str, AfterValidator(check_name)]
