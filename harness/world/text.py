"""Questions with one-word answers, and captions, about a shapes-world scene.

Question types: colour of a named shape, shape of a named colour, size of a named shape,
count (all / large / small objects) and the spatial relation of two objects.
Captions list the objects in reading order: "a large red circle left of a small blue square".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from harness.world.scene import COLORS, SHAPES, SIZES, Obj, Scene

QUESTION_TYPES = ("color", "shape", "size", "count", "spatial")
NUMBERS = ("zero", "one", "two", "three", "four")
RELATIONS = ("left", "right", "above", "below")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    qtype: str


def relation(a: Obj, b: Obj) -> str | None:
    """Where a lies relative to b, along the dominant axis; None when ambiguous (diagonal)."""
    dr, dc = a.row - b.row, a.col - b.col
    if abs(dr) == abs(dc):
        return None
    if abs(dc) > abs(dr):
        return "left" if dc < 0 else "right"
    return "above" if dr < 0 else "below"


def spatial_pairs(scene: Scene) -> list[tuple[Obj, Obj]]:
    objs = scene.objects
    return [(a, b) for a in objs for b in objs if a is not b and relation(a, b) is not None]


def ask(scene: Scene, qtype: str, rng: np.random.Generator) -> QA | None:
    """One question of the given type about the scene, or None if the scene has none."""
    objs = scene.objects
    o = objs[int(rng.integers(len(objs)))]
    if qtype == "color":
        return QA(f"what color is the {o.shape} ?", o.color, qtype)
    if qtype == "shape":
        return QA(f"what shape is the {o.color} object ?", o.shape, qtype)
    if qtype == "size":
        return QA(f"what size is the {o.shape} ?", o.size, qtype)
    if qtype == "count":
        which = ("", "large ", "small ")[int(rng.integers(3))]
        n = sum(1 for x in objs if not which or x.size == which.strip())
        return QA(f"how many {which}objects are there ?", NUMBERS[n], qtype)
    if qtype == "spatial":
        pairs = spatial_pairs(scene)
        if not pairs:
            return None
        a, b = pairs[int(rng.integers(len(pairs)))]
        q = f"where is the {a.color} {a.shape} relative to the {b.color} {b.shape} ?"
        return QA(q, str(relation(a, b)), qtype)
    raise ValueError(f"unknown question type {qtype!r}")


def caption(scene: Scene) -> str:
    objs = scene.reading_order()
    if len(objs) == 2:
        a, b = objs
        rel = {"left": "left of", "right": "right of"}.get(relation(a, b) or "", "above")
        return f"a {a.phrase} {rel} a {b.phrase}"
    return " and ".join(f"a {o.phrase}" for o in objs)


_OBJ_RE = re.compile(
    rf"\b({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\b"
)


def described_objects(text: str) -> frozenset[tuple[str, str, str]]:
    """The (size, colour, shape) triples a caption mentions."""
    return frozenset(_OBJ_RE.findall(text.lower()))


def scene_objects(scene: Scene) -> frozenset[tuple[str, str, str]]:
    return frozenset((o.size, o.color, o.shape) for o in scene.objects)


def vocabulary() -> list[str]:
    """Every word that questions, answers, captions and prompts use."""
    words = {"what", "color", "is", "the", "shape", "object", "size", "how", "many", "objects",
             "are", "there", "where", "relative", "to", "a", "and", "of", "?", ":",
             "question", "answer", "caption"}
    words |= set(COLORS) | set(SHAPES) | set(SIZES) | set(NUMBERS) | set(RELATIONS)
    return sorted(words)
