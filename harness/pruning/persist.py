"""Save and load a pruned model: safetensors weights plus bit-packed keep masks.

Layout of the folder: the model's own `save_pretrained` output (config, weights, processor)
and `masks.safetensors`, holding for each pruned Linear its mask packed 8 to a byte
(`numpy.packbits`, uint8) and its shape. Reloading restores weights and masks exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.models.adapter import Adapter
from harness.models.generic import dump_layout

MASKS = "masks.safetensors"


def pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.cpu().numpy().astype(np.uint8).ravel()))


def unpack(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    bits = np.unpackbits(packed.numpy(), count=n)
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


class PackedMasks(MutableMapping[str, torch.Tensor]):
    """Keep masks held bit-packed, 8 to a byte: a bool mask costs a byte per weight, so an
    offloaded prune that kept them as they come would hold a quarter of an fp32 model's
    bytes (half a bf16 one's) by its end. A mask is packed as it is stored and unpacked as
    it is read. With `spill` (a folder; `offload: disk` gives its work folder) the packed
    bits go to an unnamed file in that folder and only their place stays in memory: a 3B
    model's masks are 0.35 GiB even packed, more than its largest block."""

    def __init__(self, spill: Path | None = None) -> None:
        # an unnamed file in the folder `spill` (gone when closed or when the process ends,
        # however it ends): nothing is left beside the model's shards
        self._file = tempfile.TemporaryFile(dir=spill) if spill is not None else None
        self.place: dict[str, tuple[torch.Tensor | int, int, tuple[int, ...]]] = {}
        self._end = 0

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        bits = pack(mask)
        if self._file is None:
            self.place[name] = (bits, bits.numel(), tuple(mask.shape))
            return
        self._file.seek(self._end)
        self._file.write(bits.numpy().tobytes())
        self.place[name] = (self._end, bits.numel(), tuple(mask.shape))
        self._end += bits.numel()

    def bits(self, name: str) -> torch.Tensor:
        where, n, _ = self.place[name]
        if isinstance(where, torch.Tensor):
            return where
        assert self._file is not None
        self._file.flush()
        data = bytearray(os.pread(self._file.fileno(), n, where))
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8))

    def shape(self, name: str) -> tuple[int, ...]:
        return self.place[name][2]

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack(self.bits(name), self.shape(name))

    def __contains__(self, name: object) -> bool:  # Mapping's would unpack the mask
        return name in self.place

    def __delitem__(self, name: str) -> None:
        del self.place[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.place)

    def __len__(self) -> int:
        return len(self.place)


LAYOUT = "vlmprune-layout.yaml"


def save(adapter: Adapter, masks: Mapping[str, torch.Tensor], path: str | Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    streamed = adapter.residency
    if streamed is not None and streamed.mode == "disk":  # its blocks are in files already
        streamed.save(path)
        adapter.model.config.save_pretrained(path)
        if adapter.model.can_generate():
            adapter.model.generation_config.save_pretrained(path)
    else:
        if streamed is not None:  # offload: cpu: the model whole again, in CPU memory
            streamed.close()
            adapter.residency = None
        adapter.model.save_pretrained(path, safe_serialization=True)
    adapter.processor.save_pretrained(path)
    save_masks(masks, path / MASKS)
    meta: dict = {"family": adapter.family, "prompts": {
        "vqa": adapter.prompts.vqa, "caption": adapter.prompts.caption,
        "instructions": adapter.prompts.instructions}}
    if adapter.family == "generic":  # reloads by path alone: the layout travels with it
        (path / LAYOUT).write_text(dump_layout(adapter.layout, adapter.prompts))
        meta["layout"] = LAYOUT
    (path / "vlmprune.json").write_text(json.dumps(meta, indent=2) + "\n")


def save_masks(masks: Mapping[str, torch.Tensor], file: str | Path) -> None:
    """Bit-packed masks with their shapes in the safetensors metadata."""
    if isinstance(masks, PackedMasks):  # packed already
        tensors = {name: masks.bits(name) for name in masks}
        shapes = {name: list(masks.shape(name)) for name in masks}
    else:
        tensors = {name: pack(m) for name, m in masks.items()}
        shapes = {name: list(m.shape) for name, m in masks.items()}
    save_file(tensors, str(file), metadata={"shapes": json.dumps(shapes)})


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """Masks of a saved pruned model folder (or of a masks file itself)."""
    from safetensors import safe_open

    file = str(path if Path(path).is_file() else Path(path) / MASKS)
    with safe_open(file, "pt") as f:
        shapes = json.loads(f.metadata()["shapes"])
    packed = load_file(file)
    return {name: unpack(packed[name], tuple(shape)) for name, shape in shapes.items()}
