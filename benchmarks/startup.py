"""Start-up of the commands that read grids: `vlmprune plan smoke` on a fresh results folder
(target <= 4 s), `vlmprune list` (target <= 3 s) and `vlmprune --help`; wall time of the whole
process, median of 5. Neither imports torch, MLflow or lmms-eval."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(args: list[str], fresh: bool) -> float:
    env = dict(os.environ)
    if fresh:
        env["VLMPRUNE_RESULTS"] = tempfile.mkdtemp(prefix="vlmprune-startup-")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    for args, target in ((["plan", "smoke"], 4.0), (["list"], 3.0), (["--help"], None)):
        t = statistics.median(wall(args, fresh=True) for _ in range(5))
        goal = f" (target <= {target:.0f} s)" if target else ""
        print(f"vlmprune {' '.join(args):12s} {t:.2f} s{goal}")


if __name__ == "__main__":
    main()
