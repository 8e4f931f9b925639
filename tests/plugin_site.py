"""Plugin packages installed the way a user's would be, but into a folder of the test's own:
pip builds them without an index or build isolation into `--target`, and a `vlmprune`
subprocess finds their entry points through PYTHONPATH (the test process never sees them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def install(src: Path, site: Path) -> Path:
    """pip-install the package in `src` into `site`; returns `site`."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return site


def vlmprune(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`vlmprune ARGS` in `cwd` with the plugins installed in `site`."""
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1"})
