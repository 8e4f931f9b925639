"""`eval.race`: how a grid's cells race for the best score instead of each being scored on
every document (sweep/race.py runs it).

Every setting is scored on the same documents of one task, in slices that grow
geometrically (`start`, then times `growth`); after each slice, settings behind the leader
stop: `stop: interval` (default) those whose paired interval against the leader (at
`level`) lies entirely below it; `stop: holm` only those whose paired test (exact McNemar
for exact match, else the paired bootstrap) is significant after Holm's correction over the
round's comparisons, a more cautious rule that keeps more settings longer. The race ends
when one setting is left, when every one left is within `tolerance` of the leader (its
whole interval: one group, equal for practical purposes), or when the task's documents run
out. `finish` says what the settings left answer then: `suite` (default) the rest of the
raced task and the suite's other tasks, so their rows are whole; `task` the rest of the
raced task only; `none` nothing more (the race's last group, scored on the documents the
race used, marked partial like the stopped ones: the cheapest answer to "which settings are
best"). `metric`: the `task/metric` raced on (default: the first headline metric, an
accuracy before a caption score).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# the tags of a raced cell's run: how it left the race, after how many documents, and why
TAG, TAG_DOCS, TAG_NOTE = "vlmprune.race", "vlmprune.race.docs", "vlmprune.race.note"


class RaceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: int = Field(100, ge=10)
    growth: float = Field(2.0, gt=1.0, le=10.0)
    level: float = Field(0.95, gt=0.5, lt=1.0)
    tolerance: float = Field(0.01, ge=0.0)
    metric: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    finish: Literal["suite", "task", "none"] = "suite"
    stop: Literal["interval", "holm"] = "interval"

    def slices(self, total: int | None, most: int = 10**7) -> list[tuple[int, int]]:
        """(offset, size) of each slice: [0, start), [start, start*growth), ... up to
        `total` documents (None: until the task's documents run out, at most `most`)."""
        end = most if total is None else total
        out, lo, hi = [], 0, min(self.start, end)
        while lo < end:
            out.append((lo, hi - lo))
            lo, hi = hi, min(end, max(hi + 1, round(hi * self.growth)))
        return out
