"""`vlmprune server` on a host other machines reach: refused without authentication (unless
--insecure); with --auth a request without the right user and password is refused, and a
client that gives them logs as a sweep does. The README told users `--host 0.0.0.0` with no
authentication: anyone on the network could delete runs, log metrics and upload files."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from harness.errors import UserError
from harness.sweep import server
from harness.sweep.tracking import tracking_uri
from harness.testing import demo
from tests.sweep import serve
from tests.sweep.runs import cell_runs

pytestmark = pytest.mark.system


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host):
    assert server.loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "headnode", ""])
def test_other_hosts(host):
    assert not server.loopback(host)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env,
                          capture_output=True, text=True)


def test_open_host_without_auth_is_refused_in_one_line(tmp_path):
    """The port is held here, so a server that got through could not serve (and the test
    would end anyway)."""
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = str(held.getsockname()[1])
        p = cli("server", "--host", "0.0.0.0", "--port", port,
                env=serve.clean_env(VLMPRUNE_RESULTS=str(tmp_path / "results")))
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "--host 0.0.0.0" in p.stderr and "--auth" in p.stderr and "--insecure" in p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_auth_without_an_admin_password_is_refused_in_one_line(tmp_path):
    for password in (None, "short"):
        extra = {"MLFLOW_AUTH_ADMIN_PASSWORD": password} if password else {}
        p = cli("server", "--auth", "--port", str(serve.free_port()),
                env=serve.clean_env(VLMPRUNE_RESULTS=str(tmp_path / "results"), **extra))
        assert p.returncode == 2, p.stderr[-2000:]
        assert p.stderr.count("\n") == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_what_each_choice_runs(results, monkeypatch):
    for k in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME",
              "MLFLOW_FLASK_SERVER_SECRET_KEY", server.JOBS):
        monkeypatch.delenv(k, raising=False)
    argv, env = server.command("127.0.0.1", 5000)
    assert "--app-name" not in argv and env == {server.JOBS: "false"}  # no job runner
    monkeypatch.setenv(server.JOBS, "true")  # unless the user asks for it
    assert server.command("127.0.0.1", 5000)[1] == {}
    monkeypatch.delenv(server.JOBS)
    argv, env = server.command("0.0.0.0", 5000, insecure=True)
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and "--app-name" not in argv
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x" * 12)
    argv, env = server.command("0.0.0.0", 5000, auth=True)
    assert argv[-2:] == ["--app-name", "basic-auth"] and "x" * 12 not in " ".join(argv)
    config = (results / "basic_auth.ini").read_text()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(results.resolve() / "basic_auth.ini")
    assert f"sqlite:///{results.resolve() / 'basic_auth.db'}" in config and "x" * 12 not in config
    with pytest.raises(UserError, match="--port 0"):
        server.command("127.0.0.1", 0)


def status(url: str, method: str = "GET", body: bytes | None = None,
           user: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, method=method)
    if user:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(":".join(user).encode()).decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_auth_server_refuses_strangers_and_serves_its_users(tmp_path, monkeypatch):
    password = secrets.token_urlsafe(18)
    folder = tmp_path / "results"
    with serve.running(folder, "--auth", env={"MLFLOW_AUTH_ADMIN_PASSWORD": password}) as uri:
        api = f"{uri}/api/2.0/mlflow"
        create = json.dumps({"name": "intruder"}).encode()
        for user in (None, ("admin", "not-" + password), ("nobody", password)):
            assert status(f"{api}/experiments/search?max_results=5", user=user) == 401
            assert status(f"{api}/experiments/create", "POST", create, user=user) == 401
            assert status(f"{uri}/api/2.0/mlflow-artifacts/artifacts/0/x.txt", "PUT", b"x",
                          user=user) == 401
        # the sweep's own tracker logs through it, as a sweep on another machine would
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        g = tmp_path / "g.yaml"
        g.write_text(json.dumps({"name": "g", "base": {"prune": {"method": "wanda"}},
                                 "axes": [{"prune.sparsity": [0.5, 0.6]}]}))
        assert demo.fill(str(g)) == 2
        _, runs = cell_runs("g", status="FINISHED")
        assert len(runs) == 2
        client = MlflowClient(tracking_uri())
        client.log_text(runs[0].info.run_id, "hello", "note.txt")
        assert client.download_artifacts(runs[0].info.run_id, "note.txt", str(tmp_path)) \
            and (tmp_path / "note.txt").read_text() == "hello"
        names = [e["name"] for e in json.loads(_get(f"{api}/experiments/search?max_results=9",
                                                     ("admin", password)))["experiments"]]
        assert "g" in names and "intruder" not in names
    assert (folder / "basic_auth.db").is_file() and (folder / "mlflow.db").is_file()


def _get(url: str, user: tuple[str, str]) -> str:
    req = urllib.request.Request(url)
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(":".join(user).encode()).decode())
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()
