"""Running statistics of a Linear's inputs over calibration tokens.

What is kept depends on the method's `needs`: per-column sum of squares (Wanda's ‖X_j‖₂²),
per-column sum (DSnoT's mean), or the Gram matrix XᵀX (SparseGPT's Hessian). One block's
worth exists at a time, so memory stays bounded by the widest Linear.

`add(x, keep)` counts only the tokens where `keep` is true (the engine passes the text's
attention mask, so padding is not calibration data).

(Tried: scipy's symmetric rank-k update for the Gram matrix, half the flops of XᵀX. Alone it
was 35% faster; inside a pruning run its BLAS threads fought torch's OpenMP threads and
SparseGPT took 3x longer.)
"""

from __future__ import annotations

import torch


class InputStats:
    def __init__(self, cols: int, needs: str | None, device: torch.device | str = "cpu"):
        self.cols = cols
        self.needs = needs
        self.tokens = 0
        self.sq = torch.zeros(cols, dtype=torch.float32, device=device)
        self.sum = torch.zeros(cols, dtype=torch.float32, device=device) \
            if needs == "moments" else None
        self.gram = torch.zeros(cols, cols, dtype=torch.float32, device=device) \
            if needs == "hessian" else None
        self.memo: dict[str, torch.Tensor] = {}  # derived tensors shared by Linears (q, k, v)

    @torch.no_grad()
    def add(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Accumulate x's tokens, (..., cols); `keep` (shaped like x without its last
        dimension) selects the tokens that count."""
        x = x.reshape(-1, self.cols).float()  # (tokens, cols)
        weight = None
        if keep is not None:
            keep = keep.reshape(-1).to(x.device)
            if self.gram is not None:  # fewer rows make a cheaper product
                x, keep = x[keep.bool()], None
            else:  # a weighted sum avoids copying the kept rows
                weight = keep.to(x.dtype)
        self.tokens += x.shape[0] if weight is None else int(weight.sum())
        squares = x * x
        self.sq += squares.sum(0) if weight is None else weight @ squares
        if self.sum is not None:
            self.sum += x.sum(0) if weight is None else weight @ x
        if self.gram is not None:
            self.gram.addmm_(x.T, x)

    @property
    def norm(self) -> torch.Tensor:
        """‖X_j‖₂ per input column, (cols,)."""
        return self.sq.sqrt()

    @property
    def mean(self) -> torch.Tensor:
        if self.sum is None:
            raise ValueError("mean needs moments statistics")
        return self.sum / max(self.tokens, 1)

    @property
    def hessian(self) -> torch.Tensor:
        """XᵀX / tokens, (cols, cols)."""
        if self.gram is None:
            raise ValueError("hessian needs hessian statistics")
        return self.gram / max(self.tokens, 1)
