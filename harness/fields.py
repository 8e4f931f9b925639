"""Field types shared by the specs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# A seed: a whole number (not true, not 1.5) that numpy and torch both accept.
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]
