"""Evaluation on a shared machine: one full-suite cell (shapes-llava, 1000 VQA + 500 captions,
`vlmprune eval`), quiet and with one competing 2-thread torch process that this script
starts in its own session (as another user's job would run), side by side in one run.

Prints the evaluation seconds `vlmprune eval` reports (start-up excluded) for the project's
thread policy (harness/threads.py: passive waiting, threads = cores) and for torch's default
(spinning threads; OMP_WAIT_POLICY=ACTIVE), and loaded / quiet. Targets: loaded / quiet <= 1.5
with the policy, and quiet not slower than 15.7 s (the figure measured before the policy).
A run that passes LIMIT seconds is stopped and shown as "> LIMIT".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import competitor

LIMIT = 150


def evaluate(policy: str, results: str) -> float | None:
    env = {**os.environ, "VLMPRUNE_RESULTS": results, "TQDM_DISABLE": "1"}
    env.pop("VLMPRUNE_THREADS", None)
    if policy == "default":
        env["OMP_WAIT_POLICY"] = "ACTIVE"  # torch's own behaviour: idle threads spin
    else:
        env.pop("OMP_WAIT_POLICY", None)  # the CLI sets PASSIVE
    try:
        p = subprocess.run([sys.executable, "-m", "harness.cli", "eval", "--model",
                            "shapes-llava", "--suite", "shapes"], env=env, capture_output=True,
                           text=True, timeout=LIMIT + 60)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"\(([\d.]+) s\)", p.stdout)
    if p.returncode or not m:
        sys.exit(p.stderr[-3000:])
    seconds = float(m.group(1))
    return seconds if seconds <= LIMIT else None


def show(x: float | None) -> str:
    return f"> {LIMIT} s" if x is None else f"{x:.1f} s"


def main() -> None:
    results = tempfile.mkdtemp(prefix="vlmprune-eval-cell-")
    evaluate("policy", results)  # materializes the test split once, outside the timings
    quiet = {p: evaluate(p, results) for p in ("policy", "default")}
    with competitor.running():
        loaded = {p: evaluate(p, results) for p in ("policy", "default")}
    for p, label in (("policy", "thread policy (passive, threads = cores)"),
                     ("default", "torch default (spinning threads)")):
        q, ld = quiet[p], loaded[p]
        ratio = "-" if q is None or ld is None else f"{ld / q:.2f}"
        print(f"{label:42s} quiet {show(quiet[p])}, loaded {show(loaded[p])}, "
              f"loaded / quiet {ratio}")
    print("targets: policy loaded / quiet <= 1.5; policy quiet <= 15.7 s")


if __name__ == "__main__":
    main()
