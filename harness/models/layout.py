"""Roles, layouts and prompt formats: what an adapter is made of, as plain data (no torch,
so a grid can be read and validated without importing it)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import unknown

ROLES = ("vision", "bridge", "language")


@dataclass(frozen=True)
class Layout:
    vision: tuple[str, ...]
    bridge: tuple[str, ...]
    language: tuple[str, ...]
    exclude: tuple[str, ...] = ("lm_head",)
    # Per segment path, besides the hidden state (output 0 -> input 0), what a block hands
    # the next one: (output index, input position or keyword). T5 shares its position biases.
    carry: tuple[tuple[str, tuple[tuple[int, int | str], ...]], ...] = ()

    def carry_for(self, path: str) -> tuple[tuple[int, int | str], ...]:
        return dict(self.carry).get(path, ())

    def paths(self, role: str) -> tuple[str, ...]:
        if role not in ROLES:
            raise unknown("role", role, ROLES)
        return getattr(self, role)


@dataclass(frozen=True)
class Prompts:
    """How a model wants a question or a caption request phrased (`{question}` is replaced).
    `instructions`: whether the model follows the instructions lmms-eval's built-in tasks add
    around a question ("Answer the question using a single word or phrase."); a model trained
    on bare questions (shapes-llava) gets the bare question."""

    vqa: str = "{question}"
    caption: str = "a photo of"
    instructions: bool = True

    def question(self, q: str) -> str:
        return self.vqa.replace("{question}", q)


def linear_path(block: str, rel: str) -> str:
    """A Linear's path in the model from its block's path and its path in the block (empty
    when the block is the Linear itself)."""
    return f"{block}.{rel}" if rel else block


def under(path: str, prefix: str) -> bool:
    """`path` is the module `prefix` or one inside it."""
    return path == prefix or path.startswith(prefix + ".")
