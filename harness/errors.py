"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input (a config field, a model name, a path): one line, no traceback, exit 2."""


def unknown(kind: str, name: str, known: Iterable[str]) -> UserError:
    """`unknown pruning method 'wnada'; did you mean 'wanda'? (known: ...)`."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint} (known: {', '.join(known)})")


def validate(model: Any, data: object, source: object, where: str = "") -> Any:
    """`model.model_validate(data)`; a failure is one UserError line naming the source (and
    `where` in it, e.g. a cell) and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {where}{format_validation_error(e)}") from None


def format_validation_error(e) -> str:
    """`field 'a.b': what is wrong` for the first error of a pydantic ValidationError."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-")) \
        or "(top level)"
    msg = err["msg"].removeprefix("Value error, ").replace("\n", " ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (misspelt?)"
    return f"field '{loc}': {msg}"


def first_line(e: BaseException, default: str = "") -> str:
    """The first line of an exception's message (`default` when it has none): how a failure
    is named in one line."""
    text = str(e)
    return text.splitlines()[0] if text else default
