"""2:4 sparse vs dense fp16 Linear (4096x4096) on a GPU, through
torch.sparse.to_sparse_semi_structured; batch 1 x 4096 tokens. Prints speedups.

Run on a machine with a CUDA GPU (Ampere or newer): `python benchmarks/gpu_semi_structured.py`.
"""

from __future__ import annotations

import torch


def bench(fn, iters: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    from torch.sparse import to_sparse_semi_structured

    from harness.pruning.masks import n_of_m

    torch.manual_seed(0)
    lin = torch.nn.Linear(4096, 4096, bias=False).half().cuda()
    with torch.no_grad():
        lin.weight.mul_(n_of_m(lin.weight.abs(), 2, 4))
    dense_w = lin.weight.detach().clone()
    sparse_w = to_sparse_semi_structured(dense_w)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for tokens in (1, 4096):
        x = torch.randn(tokens, 4096, dtype=torch.half, device="cuda")
        if tokens == 1:  # the kernels need at least 8 rows: pad the single token
            x = torch.nn.functional.pad(x, (0, 0, 0, 7))
        ref = torch.nn.functional.linear(x, dense_w)
        out = torch.nn.functional.linear(x, sparse_w)
        err = (out - ref).abs().max().item()
        td = bench(lambda x=x: torch.nn.functional.linear(x, dense_w))
        ts = bench(lambda x=x: torch.nn.functional.linear(x, sparse_w))
        print(f"  tokens {tokens:5d}: dense {td * 1e3:8.1f} us  2:4 {ts * 1e3:8.1f} us  "
              f"speedup {td / ts:.2f}x  max |diff| {err:.3g}")


if __name__ == "__main__":
    main()
