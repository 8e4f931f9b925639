"""What passes between blocks: each calibration batch's inputs of the block being pruned.

In memory by default. An offloaded model with `model.spill_activations` (GiB) keeps them in
memory up to that many bytes and writes the batches past it to its work folder, reading
each back when its turn comes: a block's inputs and the next one's are both alive while a
block runs, so at most twice the limit is held. A file is removed as soon as nothing holds
its batch's inputs, and the folder goes when the prune ends.

```yaml
model: {name: llava-hf/llava-1.5-7b-hf, offload: disk, spill_activations: 2}
```
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

Inputs = tuple[tuple, dict[str, Any]]  # a block's (args, kwargs) for one calibration batch
_names = itertools.count()


def nbytes(item: Any) -> int:
    """Bytes of the tensors in a block's (args, kwargs), nested in tuples, lists and dicts."""
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, (tuple, list)):
        return sum(nbytes(x) for x in item)
    if isinstance(item, dict):
        return sum(nbytes(x) for x in item.values())
    return 0


class Activations(Sequence[Inputs]):
    """Inputs by calibration batch, in memory up to `limit` bytes, the rest in `folder`."""

    def __init__(self, folder: Path | None = None, limit: int | None = None) -> None:
        self.folder, self.limit = folder, limit
        self.items: list[Inputs | Path] = []
        self.held = 0  # bytes in memory
        self.spilled = 0  # bytes written

    def like(self) -> Activations:
        """An empty one with the same place and limit (the next block's inputs)."""
        return Activations(self.folder, self.limit)

    def append(self, item: Inputs) -> None:
        size = nbytes(item)
        if self.limit is None or self.folder is None or self.held + size <= self.limit:
            self.items.append(item)
            self.held += size
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"activations-{os.getpid()}-{next(_names)}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(item, tmp)
        os.replace(tmp, path)
        weakref.finalize(self, _remove, path)
        self.items.append(path)
        self.spilled += size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        item = self.items[i]
        if isinstance(item, Path):
            return torch.load(item, weights_only=False)
        return item

    def __iter__(self) -> Iterator[Inputs]:
        for i in range(len(self.items)):
            yield self[i]

    def __len__(self) -> int:
        return len(self.items)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
