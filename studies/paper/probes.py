"""Probes of the paper study (`make paper`): experiments that test a reason instead of guessing.

`outliers`: shapes-llava carries outlier channels put in on purpose (zoo/outliers.py: a
function-preserving rescaling, sigma 0.75, seed 0). Wanda's score |W|·‖X‖ and SparseGPT's
saliency are invariant to that rescaling; magnitude's |W| is not. The probe undoes the
rescaling (the same factors, inverted) and prunes both forms with magnitude, Wanda and
SparseGPT: if magnitude's gap to Wanda is the outliers' doing, it closes on the model without
them, while Wanda and SparseGPT score the same on both.

`python -m studies.paper.probes --out reports/paper` writes probe_outliers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from harness.models.load import EMBEDDED, ModelSpec
from harness.paths import atomic_dir, results_dir
from harness.sweep.cell import CellSpec
from studies.paper.summary import CIDER, VQA

SIGMA, SEED = 0.75, 0  # zoo/train.py's Recipe.outliers and its seed
METHODS = ("magnitude", "wanda", "sparsegpt")
LEVELS = (0.5, 0.6)


def without_outliers() -> Path:
    """shapes-llava with its outlier rescaling undone, saved once under results/probes/."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from harness.zoo.outliers import rescale

    out = results_dir() / "probes" / "shapes-llava-no-outliers"
    if (out / "model.safetensors").is_file():
        return out
    src = EMBEDDED["shapes-llava"]
    with atomic_dir(out) as tmp:
        for f in src.iterdir():
            if f.name != "model.safetensors":
                shutil.copy2(f, tmp / f.name)
        model = LlavaForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
        rescale(model, -SIGMA, SEED)  # exp(-sigma z) = 1 / exp(sigma z): the same channels
        model.save_pretrained(tmp, safe_serialization=True)
    return out


def outliers() -> dict:
    from harness.sweep.stages import evaluated

    plain = without_outliers()
    res: dict = {}
    for name, model in (("with outliers (shapes-llava)", "shapes-llava"),
                        ("outliers undone", str(plain))):
        rows = {"dense": evaluated(CellSpec(model=ModelSpec(name=model), prune=None))}
        for method in METHODS:
            for level in LEVELS:
                spec = CellSpec.model_validate({"model": {"name": model}, "prune": {
                    "method": method, "sparsity": level, "distribution": "equal"}})
                rows[f"{method} {level:.0%}"] = evaluated(spec)
        res[name] = {k: {"vqa": v.metrics[VQA], "cider": v.metrics[CIDER]}
                     for k, v in rows.items()}
    return res


def markdown(res: dict) -> str:
    names = list(res)
    lines = ["# Probe: magnitude vs Wanda with and without shapes-llava's outlier channels", "",
             "VQA exact match (CIDEr) on the shapes test split, calibration seed 0, "
             "both roles at the level shown. Written by `python -m studies.paper.probes`.", "",
             "| cell | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for cell in res[names[0]]:
        lines.append(f"| {cell} | " + " | ".join(
            f"{res[n][cell]['vqa'] * 100:.1f} ({res[n][cell]['cider']:.2f})" for n in names)
            + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.paper.probes")
    p.add_argument("--out", type=Path, default=Path("reports/paper"))
    a = p.parse_args(argv)
    res = outliers()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "probe_outliers.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "probe_outliers.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
