"""VQA accuracy of shapes-llava at 50% unstructured sparsity in both modalities, by method.

Target: wanda and sparsegpt keep more accuracy than magnitude. 1000 test questions.
"""

from __future__ import annotations

import sys

from harness.models.load import load
from harness.pruning import stage
from harness.pruning.spec import PruneSpec
from harness.zoo.check import vqa_accuracy

MODEL = sys.argv[1] if len(sys.argv) > 1 else "shapes-llava"


def main(n: int = 1000) -> None:
    dense = vqa_accuracy(load(MODEL), n)["overall"]
    print(f"shapes-llava dense VQA {dense:.3f} ({n} test questions); 50% unstructured, "
          "vision + language, sequential, 128 calibration samples")
    for method in ("magnitude", "random", "wanda", "sparsegpt", "dsnot"):
        adapter = load(MODEL)
        _, rep = stage.run(adapter, PruneSpec(method=method, sparsity=0.5), progress=False)
        acc = vqa_accuracy(adapter, n)
        print(f"  {method:10s} sparsity {rep['overall']['sparsity']:.4f}  VQA "
              f"{acc['overall']:.3f}  " + " ".join(f"{k} {v:.2f}" for k, v in acc.items()
                                                    if k != "overall"))


if __name__ == "__main__":
    main()
