"""Census: for every model_type of transformers' image-text-to-text mapping, whether a toy
model of it builds (harness/testing/shrunk.py, meta device) and what vlmprune finds in it with
nothing given (harness/models/auto.py): the roles and the partition check, or the reason it
is refused. The figures of docs/decisions/023-roles-from-the-model.md.

    .venv/bin/python -m benchmarks.census [MODEL_TYPE ...]
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter

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


def main(types: list[str]) -> None:
    warnings.filterwarnings("ignore")
    counts: Counter[str] = Counter()
    for t in types or image_text_types():
        what, detail = outcome(t)
        counts[what] += 1
        print(f"| {t} | {what} | {detail} |", flush=True)
    print(", ".join(f"{n} {what}" for what, n in counts.most_common()))


if __name__ == "__main__":
    main(sys.argv[1:])
