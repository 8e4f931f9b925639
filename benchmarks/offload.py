"""Pruning offloaded (`model.offload`, models/offload.py) against pruning in memory, on random
LLaVAs saved to disk (tiny_llava at larger sizes, random weights).

Every prune runs in its own process, with the CLI's thread policy (harness/threads.py), so
that its peak RSS is its own; peak memory is that
process's peak RSS above its RSS once torch, transformers and vlmprune are imported (the
issue's measure), and the pruning-call time is the prune stage's own `seconds.prune`.

- `fits`: a model that fits (default ~0.1B parameters, fp32). For wanda and sparsegpt,
  pairs of runs with offload none and disk, interleaved, quiet and then beside a competing
  process (benchmarks/competitor.py): the median time ratio disk / none, and each one's
  peak memory over the weights.
- `large`: a model whose weights are at least twice the memory allowed (default ~3B
  parameters in bf16, 5.65 GiB, under a 2.5 GiB limit). The limit is a memory cgroup (v1 or v2,
  created here; root only): the process joins it before it starts, so the kernel kills it
  past the limit. Wanda and sparsegpt with offload disk, and wanda with offload none (which
  the limit must kill); each one's peak against the bound largest block + calibration
  activations + 1 GiB.

    .venv/bin/python benchmarks/offload.py [fits|large ...] [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import competitor

ROOT = Path(__file__).resolve().parents[1]

GiB = 2**30
SIZES = {  # d, layers, vision d, vision layers, intermediate, dtype
    "fits": (768, 8, 512, 6, 2048, "float32"),
    "large": (3072, 24, 1024, 24, 8192, "bfloat16"),
}
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from harness import threads
threads.configure()  # the CLI's thread policy (passive waits), before torch loads
import psutil, torch
threads.apply()
from harness.models.load import ModelSpec, load
from harness.models import offload
from harness.pruning import stage
from harness.pruning.spec import PruneSpec
folder, method, mode, dtype, work = sys.argv[1:6]
import transformers
from transformers import LlavaForConditionalGeneration, AutoProcessor  # start-up: imported
torch.set_grad_enabled(False)
base = psutil.Process().memory_info().rss
a = load(ModelSpec(name=folder, offload=mode, dtype=dtype), work=Path(work))
spec = PruneSpec(method=method, sparsity=0.5,
                 calibration={"samples": 16, "batch_size": 4, "source": "shapes"})
masks, rep = stage.run(a, spec, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
weights = offload.weight_bytes(a.model)
print(json.dumps({"prune": rep["seconds"]["prune"] + rep["seconds"]["allocation"],
                  "peak": peak, "weights": weights, "memory": rep.get("memory"),
                  "sparsity": rep["overall"]["sparsity"]}))
"""
BUILD = r"""
import sys, torch
from harness.testing.tiny import tiny_llava
d, layers, vd, vl, inter = map(int, sys.argv[2:7])
torch.set_default_dtype(getattr(torch, sys.argv[7]))
model, proc = tiny_llava(d=d, layers=layers, vision_d=vd, vision_layers=vl, intermediate=inter)
model.save_pretrained(sys.argv[1], max_shard_size="2GB")
proc.save_pretrained(sys.argv[1])
print(sum(p.numel() for p in model.parameters()))
"""


def build(folder: Path, size: str) -> int:
    d, layers, vd, vl, inter, dtype = SIZES[size]
    out = subprocess.run([sys.executable, "-c", BUILD, str(folder), str(d), str(layers),
                          str(vd), str(vl), str(inter), dtype], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def prune(folder: Path, method: str, mode: str, dtype: str, limit: int | None = None
          ) -> dict | None:
    """One prune in a fresh process (in a memory cgroup of `limit` bytes when given);
    None when it was killed."""
    work = Path(tempfile.mkdtemp(prefix="vlmprune-offload-bench-", dir=folder.parent))
    group = _cgroup(limit) if limit else None
    try:
        run = subprocess.run([sys.executable, "-c", CHILD, str(folder), method, mode, dtype,
                              str(work)], cwd=ROOT, capture_output=True, text=True,
                             preexec_fn=(lambda: _join(group)) if group else None)
        if run.returncode != 0:
            tail = run.stderr.strip().splitlines()[-1:] or [""]
            print(f"    ({method}, offload {mode}: exit {run.returncode} {tail[0][:120]})")
            return None
        out = json.loads(run.stdout.strip().splitlines()[-1])
        if group:
            out["cgroup_peak"] = _cgroup_peak(group)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if group:
            _cgroup_remove(group)


def _cgroup(limit: int) -> Path:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    root = Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory")
    group = root / f"vlmprune-bench-{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
    if not v2 and (group / "memory.memsw.limit_in_bytes").exists():
        (group / "memory.memsw.limit_in_bytes").write_text(str(limit))  # no swap either
    return group


def _join(group: Path) -> None:
    (group / "cgroup.procs").write_text(str(os.getpid()))


def _cgroup_peak(group: Path) -> int | None:
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        if (group / name).exists():
            return int((group / name).read_text())
    return None


def _cgroup_remove(group: Path) -> None:
    try:
        group.rmdir()
    except OSError:
        pass


def fits(root: Path, pairs: int, conditions: tuple[str, ...] = ("quiet", "loaded")) -> None:
    folder = root / "fits"
    params = build(folder, "fits")
    dtype = SIZES["fits"][-1]
    print(f"fits: random LLaVA, {params / 1e9:.2f}B parameters, {dtype}")
    for label, ctx in (("quiet", _quiet), ("loaded", competitor.running)):
        if label not in conditions:
            continue
        with ctx():
            for method in ("wanda", "sparsegpt"):
                got: dict[str, list[dict]] = {"none": [], "disk": []}
                for i in range(pairs):
                    for mode in (("none", "disk") if i % 2 == 0 else ("disk", "none")):
                        r = prune(folder, method, mode, dtype)
                        if r is not None:
                            got[mode].append(r)
                ratio = statistics.median(d["prune"] / n["prune"]
                                          for n, d in zip(got["none"], got["disk"], strict=True))
                w = got["none"][0]["weights"]
                print(f"  {label} {method}: time disk / none, median of {pairs} pairs "
                      f"{ratio:.2f}x (none {statistics.median(r['prune'] for r in got['none']):.1f}"
                      f" s, disk {statistics.median(r['prune'] for r in got['disk']):.1f} s); "
                      f"peak / weights: none "
                      f"{statistics.median(r['peak'] for r in got['none']) / w:.2f}, disk "
                      f"{statistics.median(r['peak'] for r in got['disk']) / w:.2f} "
                      f"(weights {w / GiB:.2f} GiB)", flush=True)


def large(root: Path, limit_gib: float, runs: list[tuple[str, str]]) -> None:
    folder = root / "large"
    params = build(folder, "large")
    dtype = SIZES["large"][-1]
    limit = int(limit_gib * GiB)
    print(f"large: random LLaVA, {params / 1e9:.2f}B parameters, {dtype}, under a memory "
          f"cgroup of {limit_gib:g} GiB", flush=True)
    for method, mode in runs:
        r = prune(folder, method, mode, dtype, limit)
        if r is None:
            print(f"  {method}, offload {mode}: killed or failed under the limit", flush=True)
            continue
        m = r["memory"] or {}
        bound = m.get("largest_block", 0) + m.get("activations", 0) + GiB
        print(f"  {method}, offload {mode}: finished in {r['prune']:.0f} s; weights "
              f"{r['weights'] / GiB:.2f} GiB ({r['weights'] / limit:.1f}x the limit); peak "
              f"{r['peak'] / GiB:.2f} GiB above start-up (cgroup peak "
              f"{(r.get('cgroup_peak') or 0) / GiB:.2f} GiB, page cache included); bound "
              f"largest block {m.get('largest_block', 0) / GiB:.2f} + activations "
              f"{m.get('activations', 0) / GiB:.2f} + 1 = {bound / GiB:.2f} GiB: "
              f"{'within' if r['peak'] <= bound else 'ABOVE'}", flush=True)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=["fits", "large"])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--limit", type=float, default=2.5, help="GiB, for `large`")
    ap.add_argument("--conditions", default="quiet,loaded", help="for `fits`")
    ap.add_argument("--runs", default="wanda:disk,sparsegpt:disk,wanda:none",
                    help="METHOD:OFFLOAD,... for `large`")
    a = ap.parse_args()
    runs = [(r.split(":")[0], r.split(":")[1]) for r in a.runs.split(",")]
    root = Path(tempfile.mkdtemp(prefix="vlmprune-offload-", dir=ROOT / "results"))
    try:
        for part in a.parts:
            if part == "fits":
                fits(root, a.pairs, tuple(a.conditions.split(",")))
            else:
                large(root, a.limit, runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
