"""Scenes of the shapes world: 64x64 images holding 1-4 coloured shapes on a 4x4 grid.

Everything is a pure function of a numpy Generator, so a seed gives the same pixels on every
machine. Within one scene shapes are distinct and colours are distinct, so "the circle" and
"the red object" always name exactly one object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64
GRID = 4  # cells per side; each cell is one 16x16 patch of the vision tower
CELL = IMAGE_SIZE // GRID

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 50),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": 3.6, "large": 6.6}  # radius in pixels
BACKGROUND = (30, 30, 30)
MAX_OBJECTS = 4


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    size: str
    row: int
    col: int
    cy: float  # centre, pixels
    cx: float

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    noise_seed: int

    def by_shape(self, shape: str) -> Obj:
        return next(o for o in self.objects if o.shape == shape)

    def reading_order(self) -> list[Obj]:
        return sorted(self.objects, key=lambda o: (o.row, o.col))


def sample_scene(rng: np.random.Generator, min_objects: int = 1) -> Scene:
    n = int(rng.integers(min_objects, MAX_OBJECTS + 1))
    colors = rng.choice(list(COLORS), size=n, replace=False)
    shapes = rng.choice(SHAPES, size=n, replace=False)
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    objs = []
    for color, shape, cell in zip(colors, shapes, cells, strict=True):
        size = "large" if rng.random() < 0.5 else "small"
        slack = CELL / 2 - SIZES[size] - 1.0  # keep the shape inside its cell
        row, col = divmod(int(cell), GRID)
        cy = row * CELL + CELL / 2 + rng.uniform(-slack, slack)
        cx = col * CELL + CELL / 2 + rng.uniform(-slack, slack)
        objs.append(Obj(str(color), str(shape), size, row, col, cy, cx))
    return Scene(tuple(objs), int(rng.integers(2**31)))


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    ady, adx = np.abs(dy), np.abs(dx)
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(ady, adx) <= r * 0.82
    if shape == "diamond":
        return ady + adx <= r * 1.15
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= r * 0.8) & (adx <= (dy + r) * 0.58)
    if shape == "cross":
        arm = max(r / 3, 1.0)
        return ((adx <= arm) & (ady <= r)) | ((ady <= arm) & (adx <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene) -> np.ndarray:
    """Pixels of a scene, (64, 64, 3) uint8."""
    rng = np.random.default_rng(scene.noise_seed)
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
    for o in scene.objects:
        mask = _shape_mask(o.shape, yy - o.cy, xx - o.cx, SIZES[o.size])
        jitter = rng.uniform(-15, 15, size=3)
        img[mask] = np.clip(np.array(COLORS[o.color]) + jitter, 0, 255)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)
