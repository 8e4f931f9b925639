"""SparseLoRA as a PEFT custom LoRA layer: the update is masked, so the merge keeps the zeros.

    forward: y = x [(W + s BA) * M]^T + b        merge: W <- (W + s BA) * M

W is the pruned weight (exactly zero where M is 0), so (W + s BA) * M = W + (s BA) * M: the
layer is PEFT's `lora.Linear` with its delta weight masked. Merging and unmerging, saving and
loading (PEFT's adapter format) are PEFT's own; `merge_and_unload` therefore returns Linears
whose pruned positions are exactly zero.

The mask is a non-persistent buffer: it belongs to the pruned model (its bit-packed masks
file), not to the adapter. A freshly wrapped layer takes M = (W != 0), and
`set_masks` installs the pruning stage's masks explicitly.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import layer as lora_layer
from torch import nn
from torch.nn import functional as F

from harness.models.adapter import Adapter
from harness.recovery import lora
from harness.recovery.spec import RecoverySpec


class SparseLoraLinear(lora_layer.Linear):
    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        super().__init__(base_layer, adapter_name, **kwargs)
        weight = self.get_base_layer().weight
        self.register_buffer("sparse_mask", weight.detach() != 0, persistent=False)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        delta = super().get_delta_weight(adapter)
        return delta * self.sparse_mask.to(delta.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """One GEMM with W + (s BA) * M: cheaper than base(x) + x ((s BA) * M)^T, whose
        backward needs a second input-gradient GEMM (dropout is not applied: it would need
        the two-GEMM form; recovery configs use lora_dropout 0)."""
        if self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        weight = base.weight
        for name in self.active_adapters:
            if name in self.lora_A:
                weight = weight + self.get_delta_weight(name)
        return F.linear(x.to(weight.dtype), weight, base.bias)

    def __repr__(self) -> str:
        return "sparse" + super().__repr__()


def register(config: LoraConfig) -> LoraConfig:
    """Make PEFT build SparseLoRA layers for this config's Linear targets."""
    config._register_custom_module({nn.Linear: SparseLoraLinear})
    return config


def inject(adapter: Adapter, spec: RecoverySpec,
           masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """`sparselora`: LoRA's targets with SparseLoRA layers, masked by the pruning stage's
    masks when given (else each layer's own zeros)."""
    model = get_peft_model(adapter.model, register(lora.config(adapter, spec)))
    if masks is not None:
        set_masks(model, masks)
    return model


def layers(model: nn.Module) -> dict[str, SparseLoraLinear]:
    """SparseLoRA layers by the path of the Linear they wrap (PEFT prefixes stripped)."""
    return {_strip(n): m for n, m in model.named_modules() if isinstance(m, SparseLoraLinear)}


def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> int:
    """Install the pruning stage's masks (keyed by Linear path); returns how many were set."""
    n = 0
    for path, layer in layers(model).items():
        if path in masks:
            layer.sparse_mask = masks[path].to(layer.sparse_mask.device, torch.bool)
            n += 1
    return n


def load_adapter(model: nn.Module, path: str, sparse: bool) -> PeftModel:
    """Load an adapter saved with `save_pretrained`; SparseLoRA needs its layer class again."""
    config = LoraConfig.from_pretrained(path)
    if sparse:
        register(config)
    return PeftModel.from_pretrained(model, path, config=config)


def _strip(name: str) -> str:
    for prefix in ("base_model.model.",):
        name = name.removeprefix(prefix)
    return name
