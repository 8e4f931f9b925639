"""Census: for every model_type of transformers' image-text-to-text mapping, whether a toy
model of it builds (harness/testing/shrunk.py, meta device) and what vlmprune finds in it with
nothing given (harness/models/auto.py): the roles and the partition check, or the reason it
is refused. The figures of docs/decisions/023-roles-from-the-model.md.

    .venv/bin/python -m benchmarks.census [--run] [MODEL_TYPE ...]

With `--run`, each type whose roles are found is also built with its own processor
(`shrunk.tiny_pair`), pruned by Wanda at 50% per role on two calibration samples and asked to
generate: "runs" when all of it works, else the step that fails first and its error ("toy
forward": the model's own forward on its processor's output, before vlmprune does anything:
the shrunk config and the processor's defaults disagree).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

from harness.errors import UserError
from harness.models import auto
from harness.testing.shrunk import image_text_types, tiny_model


def outcome(model_type: str) -> tuple[str, str]:
    try:
        model = tiny_model(model_type, meta=True)
    except Exception as e:  # noqa: BLE001 - the census records whatever transformers raises
        return "does not build", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    try:
        layout = auto.detect(model)
        auto.partition(model, layout, model_type)
    except UserError as e:
        return "refused", str(e)[:140]
    return "roles found", (f"{len(layout.vision)} vision, {len(layout.bridge)} bridge, "
                           f"{len(layout.language)} language segments")


def runs(model_type: str) -> tuple[str, str]:
    import json

    import numpy as np
    from PIL import Image

    from harness.models.load import adapter_for
    from harness.pruning import stage
    from harness.pruning.spec import load as load_spec
    from harness.testing.shrunk import tiny_pair

    step = "processor"
    try:
        model, processor = tiny_pair(model_type)
        step = "load"
        a = adapter_for(model, processor, name=model_type)
        images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
                  for i in range(2)]
        step = "toy forward"  # the toy model and its processor disagree: not vlmprune's part
        a.forward(a.prepare(images, [a.prompt_for("what ?")] * 2))
        step = "prune"
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for i, im in enumerate(images):
                Image.fromarray(im).save(Path(tmp) / f"{i}.png")
                rows.append({"image": f"{i}.png", "text": a.prompts.question("what ?")})
            (Path(tmp) / "cal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            spec = load_spec({"method": "wanda", "sparsity": 0.5, "calibration": {
                "source": str(Path(tmp) / "cal.jsonl"), "samples": 2, "batch_size": 2}})
            stage.run(a, spec, progress=False)
        step = "generate"
        a.generate(images, [a.prompt_for("what ?"), a.prompt_for("")], max_new_tokens=2)
    except Exception as e:  # noqa: BLE001 - the census records whatever fails
        first = str(e).splitlines()[0][:100] if str(e) else ""
        return f"{step} fails", f"{type(e).__name__}: {first}"
    return "runs", "prunes (Wanda 50%) and generates"


def main(types: list[str]) -> None:
    warnings.filterwarnings("ignore")
    run = "--run" in types
    types = [t for t in types if t != "--run"]
    counts: Counter[str] = Counter()
    for t in types or image_text_types():
        what, detail = outcome(t)
        if run and what == "roles found":
            what, detail = runs(t)
        counts[what] += 1
        print(f"| {t} | {what} | {detail} |", flush=True)
    print(", ".join(f"{n} {what}" for what, n in counts.most_common()))


if __name__ == "__main__":
    main(sys.argv[1:])
