"""vlmprune against llm-compressor (vllm-project/llm-compressor), side by side: the same
random LLaVA saved to disk, the same calibration tensors, Wanda and SparseGPT at 50%
unstructured on every Linear of both towers' blocks.

llm-compressor is not a dependency of the project. This script installs it into its own
virtualenv (`results/lcvenv`, ignored by git) on first use: torch==2.14.1 and
torchvision==0.29.1 as the project pins them (llm-compressor 0.14.0.1 caps torch at 2.14.0,
so it and auto-round go in with --no-deps beside the rest of its requirements).

Each prune runs in a fresh process with the same thread policy (OMP_WAIT_POLICY=PASSIVE, one
thread per core); rounds are interleaved, the order rotated each round:
- vlmprune, `offload: none` and `offload: disk` (its stage's `seconds.prune` + allocation);
- llm-compressor's `oneshot` with the sequential pipeline over both towers' blocks
  (`CLIPEncoderLayer`, `LlamaDecoderLayer`), the model loaded in CPU memory (its default),
  timed around the `oneshot` call.
Peak memory is each process's peak RSS above its RSS once its libraries are imported (model
loading included). Printed: median time ratio vlmprune / llm-compressor per offload mode,
and each one's peak over the weights; in the first round, how many weights' keep/prune
decisions agree. vlmprune runs `propagation: blockwise`, llm-compressor's algorithm: each
block's Linears pruned from the block's dense statistics, the pruned block's outputs feeding the
next. llm-compressor's tracer makes the whole vision tower one subgraph, though, so its later
vision blocks calibrate on the dense blocks before them: the first vision block's masks agree
exactly, the later ones and the language blocks (which read the vision features) do not.

    .venv/bin/python benchmarks/versus_llmcompressor.py [--rounds 5] [--size mid]
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
LCVENV = ROOT / "results" / "lcvenv"
GiB = 2**30
SIZES = {  # d, layers, vision d, vision layers, intermediate
    "small": (768, 8, 512, 6, 2048),
    "mid": (1024, 12, 768, 12, 2816),
}
REQUIREMENTS = [  # llmcompressor 0.14.0.1's own, less its torch cap
    "transformers<=5.17.0,>=5.15.0", "datasets", "accelerate", "nvidia-ml-py", "pillow",
    "compressed-tensors==0.19.0", "psutil", "loguru", "pydantic", "pyyaml", "requests",
    "tqdm", "numpy",
]

BUILD = r"""
import sys, torch
from harness.testing.tiny import tiny_llava
from harness.models.load import adapter_for
from harness.pruning import calibration
from harness.pruning.spec import CalibrationSpec
d, layers, vd, vl, inter = map(int, sys.argv[3:8])
model, proc = tiny_llava(d=d, layers=layers, vision_d=vd, vision_layers=vl, intermediate=inter)
model.save_pretrained(sys.argv[1], max_shard_size="2GB")
proc.save_pretrained(sys.argv[1])
spec = CalibrationSpec(samples=16, batch_size=4, source="shapes")
torch.save(calibration.batches(spec, adapter_for(model, proc)), sys.argv[2])
print(sum(p.numel() for p in model.parameters()))
"""

VLMPRUNE = r"""
import json, resource, sys
from pathlib import Path
from harness import threads
threads.configure()
import numpy as np, psutil, torch
threads.apply()
from harness.models.load import ModelSpec, load
from harness.models import offload
from harness.pruning import stage
from harness.pruning.spec import PruneSpec
from transformers import LlavaForConditionalGeneration, AutoProcessor  # start-up: imported
folder, method, mode, work, masks_out = sys.argv[1:6]
torch.set_grad_enabled(False)
base = psutil.Process().memory_info().rss
a = load(ModelSpec(name=folder, offload=mode, dtype="float32"), work=Path(work))
spec = PruneSpec(method=method, sparsity=0.5, propagation="blockwise",
                 calibration={"samples": 16, "batch_size": 4, "source": "shapes"})
masks, rep = stage.run(a, spec, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
if masks_out != "-":
    np.savez(masks_out, **{n.removesuffix(".weight"): np.packbits(~masks[n].numpy())
                          for n in masks})
print(json.dumps({"prune": rep["seconds"]["prune"] + rep["seconds"]["allocation"],
                  "peak": peak, "weights": offload.weight_bytes(a.model),
                  "linears": len(masks)}))
"""

LLMCOMPRESSOR = r"""
import json, os, resource, sys, time
import numpy as np, psutil, torch
torch.set_num_threads(len(os.sched_getaffinity(0)))
from transformers import LlavaForConditionalGeneration, AutoProcessor
from llmcompressor import oneshot
from llmcompressor.modifiers.pruning import WandaPruningModifier
from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
folder, batches, method, masks_out = sys.argv[1:5]
torch.set_grad_enabled(False)
base = psutil.Process().memory_info().rss
model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
data = torch.load(batches)
loader = torch.utils.data.DataLoader(data, batch_size=None)
targets = [r"re:.*vision_tower\..*layers\.\d+\..*(_proj|fc1|fc2)$",
           r"re:.*language_model\..*layers\.\d+\..*_proj$"]
cls = WandaPruningModifier if method == "wanda" else SparseGPTModifier
t0 = time.perf_counter()
oneshot(model=model, recipe=[cls(sparsity=0.5, mask_structure="0:0", targets=targets)],
        dataset=loader, pipeline="sequential", num_calibration_samples=16,
        sequential_targets=["CLIPEncoderLayer", "LlamaDecoderLayer"])
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
pruned = {n.removesuffix(".weight"): p == 0 for n, p in model.named_parameters()
          if p.dim() == 2 and ".layers." in n}
if masks_out != "-":
    np.savez(masks_out, **{n: np.packbits(m.numpy()) for n, m in pruned.items()})
print(json.dumps({"prune": seconds, "peak": peak,
                  "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
                  "linears": sum(bool(m.any()) for m in pruned.values())}))
"""


def venv() -> Path:
    """llm-compressor's own virtualenv, made on first use; its python."""
    py = LCVENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import llmcompressor"],
                                      capture_output=True).returncode == 0:
        return py
    print(f"installing llm-compressor into {LCVENV} (first use)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LCVENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["torch==2.14.1", "torchvision==0.29.1"], check=True)
    subprocess.run(pip + REQUIREMENTS, check=True)
    subprocess.run(pip + ["--no-deps", "llmcompressor==0.14.0.1", "auto-round<=0.15.1"],
                   check=True)
    return py


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TQDM_DISABLE": "1",
            "LOGURU_LEVEL": "WARNING"}


def _child(cmd: list[str]) -> dict | None:
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    if run.returncode != 0:
        tail = run.stderr.strip().splitlines()[-1:] or [""]
        print(f"    ({cmd[3] if len(cmd) > 3 else cmd}: exit {run.returncode} "
              f"{tail[0][:160]})", flush=True)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def vlmprune(folder: Path, method: str, mode: str, masks: Path | None) -> dict | None:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=folder.parent))
    try:
        return _child([sys.executable, "-c", VLMPRUNE, str(folder), method, mode, str(work),
                       str(masks) if masks else "-"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def llmcompressor(py: Path, folder: Path, batches: Path, method: str,
                  masks: Path | None) -> dict | None:
    return _child([str(py), "-c", LLMCOMPRESSOR, str(folder), str(batches), method,
                   str(masks) if masks else "-"])


def agreement(a: Path, b: Path) -> dict[str, float]:
    """Share of weights whose keep/prune decision agrees, per tower, over the Linears both
    pruned."""
    import numpy as np
    x, y = np.load(a), np.load(b)
    same: dict[str, int] = {}
    total: dict[str, int] = {}
    for n in sorted(set(x.files) & set(y.files)):
        u, v = np.unpackbits(x[n]), np.unpackbits(y[n])
        roles = ["vision" if "vision_tower" in n else "language"]
        if "vision_tower.encoder.layers.0." in n:
            roles.append("first vision block")
        for role in roles:
            same[role] = same.get(role, 0) + int((u == v).sum())
            total[role] = total.get(role, 0) + u.size
    return {role: same[role] / total[role] for role in total}


def compare(root: Path, py: Path, folder: Path, batches: Path, rounds: int,
            label: str) -> None:
    tools = ["none", "disk", "llmc"]
    for method in ("wanda", "sparsegpt"):
        got: dict[str, list[dict]] = {t: [] for t in tools}
        for i in range(rounds):
            order = tools[i % 3:] + tools[:i % 3]
            for tool in order:
                masks = root / f"{method}-{tool}.npz" if i == 0 else None
                r = llmcompressor(py, folder, batches, method, masks) if tool == "llmc" \
                    else vlmprune(folder, method, tool, masks)
                if r is not None:
                    got[tool].append(r)
        if not all(got.values()):
            print(f"  {label} {method}: a run failed; no ratio", flush=True)
            continue
        w = got["llmc"][0]["weights"]
        lc = statistics.median(r["prune"] for r in got["llmc"])
        same = agreement(root / f"{method}-disk.npz", root / f"{method}-llmc.npz")
        print(f"  {label} {method}: llm-compressor {lc:.1f} s, peak / weights "
              f"{statistics.median(r['peak'] for r in got['llmc']) / w:.2f} "
              f"({got['llmc'][0]['linears']} Linears pruned)", flush=True)
        for mode in ("none", "disk"):
            ratio = statistics.median(v["prune"] / c["prune"]
                                      for v, c in zip(got[mode], got["llmc"], strict=True))
            print(f"    vlmprune offload {mode}: "
                  f"{statistics.median(r['prune'] for r in got[mode]):.1f} s, time / "
                  f"llm-compressor {ratio:.2f}x (median of {rounds} rounds); peak / weights "
                  f"{statistics.median(r['peak'] for r in got[mode]) / w:.2f} "
                  f"({got[mode][0]['linears']} Linears)", flush=True)
        print("    masks, vlmprune disk vs llm-compressor, share of weights that agree: "
              + ", ".join(f"{role} {v:.4f}" for role, v in same.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", choices=sorted(SIZES), default="mid")
    ap.add_argument("--loaded", action="store_true",
                    help="also beside a competing process (benchmarks/competitor.py)")
    a = ap.parse_args()
    py = venv()
    root = Path(tempfile.mkdtemp(prefix="vlmprune-versus-", dir=ROOT / "results"))
    try:
        folder, batches = root / "model", root / "batches.pt"
        out = subprocess.run([sys.executable, "-c", BUILD, str(folder), str(batches),
                              *map(str, SIZES[a.size])], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        params = int(out.stdout.split()[-1])
        print(f"random LLaVA, {params / 1e9:.2f}B parameters, float32; calibration 16 "
              f"samples in batches of 4, the same tensors for both", flush=True)
        compare(root, py, folder, batches, a.rounds, "quiet")
        if a.loaded:
            with competitor.running():
                compare(root, py, folder, batches, a.rounds, "loaded")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
