"""`vlmprune server`: an MLflow tracking server over the results folder's store.

It serves `results/mlflow.db` (the store local sweeps write; created whole first, see
tracking.create_store) with its artifacts under `results/mlartifacts`, on 127.0.0.1 by
default. A sweep, search or report anywhere that can reach it uses it with
`MLFLOW_TRACKING_URI=http://HOST:PORT`; the UI is at the same address.

Whoever reaches the port can delete runs, log metrics and upload files, so a host other than
loopback is refused unless `--auth` is on (MLflow's own basic-auth app: every request needs a
user and password; clients give them with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)
or the user says `--insecure`. With `--auth` the users live in `results/basic_auth.db`
(`results/basic_auth.ini` is MLflow's configuration for it, unless MLFLOW_AUTH_CONFIG_PATH
names the user's own); the first start creates the admin user from MLFLOW_AUTH_ADMIN_USERNAME
(default admin) and MLFLOW_AUTH_ADMIN_PASSWORD, or from `admin_password` in that file.
Credentials come from the environment or a file, never the command line (where `ps` shows
them to everyone on the machine).
"""

from __future__ import annotations

import configparser
import importlib.util
import ipaddress
import os
import secrets
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path

from harness.errors import UserError, first_line
from harness.paths import results_dir

ADMIN = "admin"  # MLflow's default admin user name
MIN_PASSWORD = 12  # MLflow refuses shorter ones
JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def loopback(host: str) -> bool:
    """Only this machine can connect: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name or 0.0.0.0 (every interface)
        return False


def command(host: str, port: int, auth: bool = False,
            insecure: bool = False) -> tuple[list[str], dict[str, str]]:
    """The server's command line and what its environment needs beside ours. Every check
    comes before anything is written."""
    from harness.sweep.tracking import create_store, store_errors

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: give a port number from 1 to 65535")
    if not (auth or insecure or loopback(host)):
        raise UserError(f"--host {host}: other machines could reach the server, and without "
                        "authentication anyone who does can delete runs, log metrics and "
                        "upload files; add --auth (a user and password on every request; "
                        "see `vlmprune server -h`), or --insecure on a network you trust")
    results = results_dir().resolve()
    env = _auth_env(results, os.environ) if auth else {}
    # MLflow's job runner (three more processes: a runner and two huey consumers of 2 and 10
    # threads) serves its GenAI jobs; sweeps log runs, metrics and files, and never use it
    if JOBS not in os.environ:  # the user may want it
        env[JOBS] = "false"
    db = results / "mlflow.db"
    with store_errors():
        if not db.exists():
            create_store(db)
        (results / "mlartifacts").mkdir(parents=True, exist_ok=True)
        if auth and "MLFLOW_AUTH_CONFIG_PATH" not in os.environ:
            _write(Path(env["MLFLOW_AUTH_CONFIG_PATH"]), _config(results))
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
            "--artifacts-destination", str(results / "mlartifacts"), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]
    return argv + (["--app-name", "basic-auth"] if auth else []), env


def _config(results: Path) -> str:
    """MLflow's basic-auth configuration (its basic_auth.ini) with the users beside the
    store instead of in the working folder; no password in it."""
    return ("[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{results / 'basic_auth.db'}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")


def _auth_env(results: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What MLflow's basic-auth app needs: Flask-WTF, its configuration, a secret key for its
    forms, and, before its first start, an admin password. Checked here, since MLflow says
    so in a traceback."""
    if importlib.util.find_spec("flask_wtf") is None:
        raise UserError("--auth: MLflow's basic-auth app needs Flask-WTF; install it with "
                        "pip install 'mlflow[auth]'")
    env = {}
    if "MLFLOW_FLASK_SERVER_SECRET_KEY" not in environ:  # signs the UI's forms; one server
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
    path = given = environ.get("MLFLOW_AUTH_CONFIG_PATH")
    parser = configparser.ConfigParser()
    if path:
        try:
            read = parser.read(path)
        except configparser.Error as e:
            raise UserError(f"MLFLOW_AUTH_CONFIG_PATH={path}: not an INI file "
                            f"({first_line(e)})") from None
        if not read or "mlflow" not in parser or "database_uri" not in parser["mlflow"]:
            raise UserError(f"MLFLOW_AUTH_CONFIG_PATH={path}: no such file, or no [mlflow] "
                            "section with database_uri (MLflow's basic_auth.ini is the model)")
    else:
        path = str(results / "basic_auth.ini")
        env["MLFLOW_AUTH_CONFIG_PATH"] = path
        parser.read_string(_config(results))
    section = parser["mlflow"]
    where = path if given else "a file named by MLFLOW_AUTH_CONFIG_PATH (MLflow's basic_auth.ini)"
    # as MLflow reads them: an environment variable that is set wins, even when empty
    try:
        user = environ.get("MLFLOW_AUTH_ADMIN_USERNAME", section.get("admin_username", ""))
        password = environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", section.get("admin_password", ""))
    except configparser.Error as e:  # a lone '%' (ConfigParser reads '%%' as '%')
        raise UserError(f"MLFLOW_AUTH_CONFIG_PATH={path}: {first_line(e)}") from None
    if not user:
        raise UserError("--auth: no admin user name: set MLFLOW_AUTH_ADMIN_USERNAME, or "
                        f"admin_username in {where}")
    if not _has_user(section["database_uri"], user) and len(password) < MIN_PASSWORD:
        raise UserError(f"--auth: the first start creates the admin user '{user}' and needs "
                        f"its password, {MIN_PASSWORD} characters or more, in the environment "
                        f"(MLFLOW_AUTH_ADMIN_PASSWORD) or as admin_password in {where}, "
                        "never on the command line")
    return env


def _has_user(database_uri: str, user: str) -> bool:
    """Whether a SQLite user store already holds the user (then no password is needed to
    start); any other database is left to MLflow to check."""
    if not database_uri.startswith("sqlite:///"):
        return True
    db = Path(database_uri.removeprefix("sqlite:///"))
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
            return con.execute("SELECT 1 FROM users WHERE username = ?", (user,)).fetchone() \
                is not None
    except sqlite3.Error:  # not made yet, or half made by a start that failed
        return False


def _write(path: Path, text: str) -> None:
    """A file written whole (a temporary file renamed into place)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def serve(host: str, port: int, auth: bool = False, insecure: bool = False) -> int:
    """Replace this process by the server (Ctrl-C stops it)."""
    argv, env = command(host, port, auth, insecure)
    shown = host if loopback(host) else "THIS-HOST"
    lines = [f"MLflow tracking server for {results_dir().resolve()} on http://{host}:{port}",
             f"  point sweeps at it: export MLFLOW_TRACKING_URI=http://{shown}:{port}"]
    if auth:
        lines.append("  every request needs a user and password: export "
                     "MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...")
    elif not loopback(host):
        lines.append("  WARNING: no authentication (--insecure): anyone who reaches this port "
                     "can delete runs, log metrics and upload files")
    print("\n".join(lines), flush=True)
    os.execve(argv[0], argv, {**os.environ, **env})
    return 0  # not reached
