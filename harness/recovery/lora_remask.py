"""`lora-remask`: plain LoRA, then the pruning mask applied again after the merge.

    forward: y = x (W + s BA)^T + b          merge: W <- (W + s BA) * M

LoRA's merged update is dense: merged plainly it fills the pruned zeros and the model is no
longer sparse. Masking the merge keeps the sparsity, at the price of the part of the update
that fell on pruned weights, which training never learned to do without. Beside SparseLoRA,
whose update is masked while it trains, it asks how much recovery the masking during training
is worth at equal final sparsity (docs/REPRODUCTION.md, finding 4).
```yaml
recover: {method: lora-remask, steps: 100}
```
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import layer as lora_layer
from torch import nn

from harness.models.adapter import Adapter
from harness.recovery import lora
from harness.recovery.spec import RecoverySpec


class RemaskLoraLinear(lora_layer.Linear):
    """PEFT's LoRA layer as it is (its forward adds s B(A(x)), unmasked), whose delta weight,
    which only a merge reads, is masked."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        super().__init__(base_layer, adapter_name, **kwargs)
        weight = self.get_base_layer().weight
        self.register_buffer("sparse_mask", weight.detach() != 0, persistent=False)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        delta = super().get_delta_weight(adapter)
        return delta * self.sparse_mask.to(delta.dtype)

    def __repr__(self) -> str:
        return "remask" + super().__repr__()


def inject(adapter: Adapter, spec: RecoverySpec,
           masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """`lora-remask`: LoRA's targets with layers whose merge keeps the pruning stage's
    masks when given (else each layer's own zeros)."""
    config: LoraConfig = lora.config(adapter, spec)
    config._register_custom_module({nn.Linear: RemaskLoraLinear})
    model = get_peft_model(adapter.model, config)
    if masks is not None:
        for name, layer in model.named_modules():
            path = name.removeprefix("base_model.model.")
            if isinstance(layer, RemaskLoraLinear) and path in masks:
                layer.sparse_mask = masks[path].to(layer.sparse_mask.device, torch.bool)
    return model
