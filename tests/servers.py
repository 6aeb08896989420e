"""The JupyterLab servers the tests start: `course.py launch`'s (test_launch, test_browser) and
the formgrader's (test_browser), headless on a free loopback port, with the user's own Jupyter
folders replaced by empty ones, stopped by PID afterwards."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 25

#: Log lines a first launch used to show, and what they came from.
UNWANTED = {
    "No nbgrader_config.py file found": "nbgrader's formgrader without a course config",
    "Running as root is not recommended": "jupyter refusing root without --allow-root",
    "exchange directory": "nbgrader's assignment list without an exchange",
    "Error fetching courses": "nbgrader's course list without an exchange",
    "Traceback (most recent call last)": "an error in the server",
    "is not trusted": "a notebook without outputs checked for a signature it cannot have",
    "running over TCP without encryption": "a kernel on TCP sockets rather than ipc",
    "config is not serializable": "the formgrader dumping a configuration that holds classes",
}


def load_course():
    spec = importlib.util.spec_from_file_location("loralab_course_launch", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def request(self, path, data=None):
        """(status, body) of GET path, or POST when data (a dict, form-encoded) is given."""
        body = None
        if data is not None:
            body = "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in data.items())
            body = body.encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=20) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def json(self, path, data=None):
        status, body = self.request(path, data)
        assert status == 200, f"{path}: HTTP {status}: {body[:300]}"
        return json.loads(body)


@contextlib.contextmanager
def jupyter_server(cmd, env, tmp: Path, cwd: Path = ROOT):
    """Run ``cmd`` (a JupyterLab command) on a free loopback port with a fresh token and empty
    Jupyter folders of its own (no settings of the user who runs the tests). Yields once it
    answers /api/status: a dict with server, token, cmd and log (the log file's path);
    stopped by its PID afterwards, also on failure, and then ``lab["exit"]`` holds its exit
    status ("killed" if SIGTERM was not enough)."""
    env = dict(env)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp / name.lower())
    port, token = free_port(), secrets.token_hex(16)
    cmd = list(cmd) + [f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
                       "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    log_path = tmp / "jupyter.log"
    server = Server(f"http://127.0.0.1:{port}", token)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=str(cwd), env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    lab = {"server": server, "token": token, "cmd": cmd, "log": log_path}
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:  # polling a subprocess: nothing to wait on but its answer
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                if server.request("/api/status")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer in {STARTUP_SECONDS} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield lab
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # what Ctrl-C twice does, without a terminal
        try:
            lab["exit"] = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            lab["exit"] = "killed"


@contextlib.contextmanager
def course_lab(course, tmp: Path, served: Path):
    """JupyterLab with `course.py launch`'s command and environment, serving ``served``
    (see jupyter_server)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env = course.jupyter_lab_environment(environ)
    cmd = course.jupyter_lab_command(sys.executable, no_browser=True)
    root_arg = f"--ServerApp.root_dir={ROOT / 'notebooks'}"
    assert root_arg in cmd
    cmd[cmd.index(root_arg)] = f"--ServerApp.root_dir={served}"
    with jupyter_server(cmd, env, tmp) as lab:
        yield lab
