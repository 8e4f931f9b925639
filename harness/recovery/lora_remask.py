"""`lora-remask`: plain LoRA, then the pruning mask applied again after the merge.

    forward: y = x (W + s BA)^T + b          merge: W <- (W + s BA) * M

LoRA's merged update is dense: merged plainly it fills the pruned zeros and the model is no
longer sparse. Masking the merge keeps the sparsity, at the price of the part of the update
that fell on pruned weights, which training never learned to do without. Beside SparseLoRA,
whose update is masked while it trains, it asks how much recovery the masking during training
is worth at equal final sparsity (docs/REPRODUCTION.md, finding 4).

Its forward is LoRA's, so from the same recovery seed it trains exactly the adapters plain
LoRA trains; only the merge differs. Its registry entry says so (`shares`): a sweep trains
LoRA's stage once and `from_lora` masks that merge, bit for bit what this merge would give.
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
        # +0 where pruned (not ΔW·0, whose sign is ΔW's): merged, a pruned weight is then +0
        # whatever sign its zero had, as `from_lora` gives it
        delta = super().get_delta_weight(adapter)
        return torch.where(self.sparse_mask, delta, delta.new_zeros(()))

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


def from_lora(pruned: dict[str, torch.Tensor], merged: dict[str, torch.Tensor],
              masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lora-remask's merged weights from plain LoRA's (`merged`, the same training), given
    the pruned weights of the same Linears and the pruning masks (a Linear without one: its
    own zeros, as `inject`). Bit for bit the merge above: where the mask keeps, both merges
    are W + ΔW; where it prunes, W is a zero and the masked ΔW +0, so the sum is +0."""
    out = {}
    for path, m in merged.items():
        w = pruned[path]
        keep = masks[path].to(w.device, torch.bool) if path in masks else w != 0
        out[path] = torch.where(keep, m, m.new_zeros(()))
    return out
