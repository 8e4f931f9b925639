"""500 shapes_vqa questions through lmms-eval: our batched class against lmms-eval's stock
`llava_hf` class on the same model and the same prompts, side by side in one run.

Target: ours >= 3x faster, accuracy equal within 0.5 point. The stock class runs at batch
size 1 (it asserts so) and applies a chat template; the template given here renders our
model's own prompt ("<image> question : ... answer :"), so both classes ask the same thing.
Times are the medians of REPEATS alternating runs (the machine is noisy).
"""

from __future__ import annotations

import statistics
import sys
import time

from harness.evaluation.run import evaluate
from harness.models.load import EMBEDDED, load

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
REPEATS = 2
TEMPLATE = ("{% for m in messages %}<image> question : "
            "{{ m['content'].split('\\n')[-1] }} answer :{% endfor %}")


def stock():
    from lmms_eval.models.simple.llava_hf import LlavaHf

    return LlavaHf(pretrained=str(EMBEDDED["shapes-llava"]), device="cpu", device_map="cpu",
                   dtype="float32", batch_size=1, chat_template=TEMPLATE)


def timed(**kw):
    t0 = time.perf_counter()
    r = evaluate(suite="quick", limit=N, progress=False, **kw)
    return time.perf_counter() - t0, r.metrics["shapes_vqa/exact_match"]


def main() -> None:
    ours = load("shapes-llava")
    timed(adapter=ours, run_hash="warm")  # materialize data, index tasks, warm caches
    t_ours, t_stock, acc = [], [], {}
    for _ in range(REPEATS):
        t, acc["ours"] = timed(adapter=ours, run_hash="ours")
        t_ours.append(t)
        base = stock()  # fresh each time: evaluate()'s clean() deletes the stock class's model
        t, acc["stock"] = timed(adapter=None, lm=base)
        t_stock.append(t)
    a, b = statistics.median(t_ours), statistics.median(t_stock)
    print(f"{N} shapes_vqa questions, lmms-eval simple_evaluate, median of {REPEATS}")
    print(f"  vlmprune (batch 32):      {a:6.2f} s  exact match {acc['ours']:.3f}")
    print(f"  stock llava_hf (batch 1): {b:6.2f} s  exact match {acc['stock']:.3f}")
    print(f"  speed-up {b / a:.2f}x (target >= 3), accuracy difference "
          f"{100 * abs(acc['ours'] - acc['stock']):.1f} points (target <= 0.5)")


if __name__ == "__main__":
    main()
