"""`vlmprune server`: an MLflow tracking server over the results folder's store.

It serves `results/mlflow.db` (the store local sweeps write; created whole first, see
tracking.create_store) with its artifacts under `results/mlartifacts`, on 127.0.0.1 by
default. A sweep, search or report anywhere that can reach it uses it with
`MLFLOW_TRACKING_URI=http://HOST:PORT`; the UI is at the same address.
"""

from __future__ import annotations

import os
import sys

from harness.errors import UserError
from harness.paths import results_dir


def command(host: str, port: int) -> list[str]:
    from harness.sweep.tracking import create_store, store_errors

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: give a port number from 1 to 65535")
    results = results_dir().resolve()
    db = results / "mlflow.db"
    with store_errors():
        if not db.exists():
            create_store(db)
        (results / "mlartifacts").mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", str(results / "mlartifacts"), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]


def serve(host: str, port: int) -> int:
    """Replace this process by the server (Ctrl-C stops it)."""
    argv = command(host, port)
    print(f"MLflow tracking server for {results_dir().resolve()} on http://{host}:{port}\n"
          f"  point sweeps at it: export MLFLOW_TRACKING_URI=http://{host}:{port}", flush=True)
    os.execv(argv[0], argv)
    return 0  # not reached
