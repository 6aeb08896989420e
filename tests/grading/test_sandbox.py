"""The grading sandbox (autograde/sandbox.py) on its own: what a sandboxed process sees, that
its limits are in force, that nothing is left behind — as root and as an ordinary user.

The end-to-end batch (normal and hostile submissions graded together with 2 workers) is in
tests/grading/test_pipeline.py. Bombs run only there, after sandbox.prove_limits().
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autograde import sandbox as sb  # noqa: E402

PLAN = sb.detect()
needs_bwrap = pytest.mark.skipif(not PLAN.isolated, reason="bubblewrap is not usable here: "
                                 + PLAN.why_not.get("filesystem", ""))

PROBE = r"""
import json, os, socket
seen = {"uid": os.getuid(), "pid": os.getpid(), "root": sorted(os.listdir("/")),
        "cwd": os.getcwd(), "cwd_files": sorted(os.listdir("."))}
for path in ARGS:
    seen[path] = os.path.exists(path)
seen["home_files"] = sorted(os.listdir(HOME)) if os.path.isdir(HOME) else []
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    seen["net"] = "connected"
except OSError as error:
    seen["net"] = type(error).__name__
for target in WRITES:
    try:
        open(target, "w").write("x")
        seen["wrote " + target] = True
    except OSError:
        seen["wrote " + target] = False
print(json.dumps(seen))
"""


def run_in_sandbox(tmp_path, code: str, limits=None, timeout=60, files=None):
    script = tmp_path / "probe.py"
    script.write_text(code)
    files = {"probe.py": str(script), **(files or {})}
    with sb.Sandbox(limits or sb.Limits(), files, name="test") as box:
        proc = subprocess.run(box.wrap([sys.executable, "-I", "probe.py"], dict(os.environ)),
                              capture_output=True, text=True, timeout=timeout)
        box.stop()
        cgroups = list(box.cgroups.values())
    return proc, box, cgroups


@needs_bwrap
def test_a_sandboxed_process_sees_only_its_scratch_and_the_environment(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden tests")
    hidden = [str(ROOT / "solutions"), str(ROOT / "autograde"), str(secret), str(Path.home()),
              str(ROOT / "lorakit" / "__init__.py")]
    code = PROBE.replace("ARGS", repr(hidden)).replace("HOME", repr(str(Path.home()))).replace(
        "WRITES", repr([str(ROOT / "lorakit" / "x.txt"), "/tmp/ok.txt", "scratch.txt",
                        "/usr/x.txt"]))
    proc, _, _ = run_in_sandbox(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["uid"] != 0
    assert seen["pid"] <= 3, "not in a PID namespace of its own"
    assert seen["net"] in ("ConnectionRefusedError", "OSError"), seen["net"]
    assert not seen[str(ROOT / "solutions")] and not seen[str(ROOT / "autograde")]
    assert not seen[str(secret)]
    home = str(Path.home())
    if seen[home]:  # only as the folder above a bound path (pyenv's Python lives in ~/.pyenv)
        allowed = {Path(p).relative_to(home).parts[0] for p in sb._ro_paths()
                   if p.startswith(home.rstrip("/") + "/")}
        assert allowed and set(seen["home_files"]) <= allowed, (seen["home_files"], allowed)
    assert seen[str(ROOT / "lorakit" / "__init__.py")], "lorakit must be importable"
    assert seen["cwd"] == sb.WORKDIR and seen["cwd_files"] == ["probe.py"]
    assert seen["wrote /tmp/ok.txt"] and seen["wrote scratch.txt"]
    assert not seen["wrote " + str(ROOT / "lorakit" / "x.txt")]
    assert not seen["wrote /usr/x.txt"]
    assert not (ROOT / "lorakit" / "x.txt").exists()


@needs_bwrap
def test_the_limits_are_in_force_and_probed_safely():
    proven = sb.prove_limits()
    assert proven == {"isolation": "", "process limit": "", "memory limit": ""}, proven


@needs_bwrap
def test_every_process_dies_with_the_sandbox_and_its_cgroups_go(tmp_path):
    code = ("import subprocess, sys\n"
            "subprocess.Popen([sys.executable, '-c', 'import time\\n# sbx-test-daemon\\n"
            "time.sleep(600)'], start_new_session=True)\nprint('started')\n")
    proc, box, cgroups = run_in_sandbox(tmp_path, code)
    assert "started" in proc.stdout, proc.stderr
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
            and b"sbx-test-daemon" in _cmdline(p)]
    assert not left
    assert all(not path.exists() for path in cgroups)


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


@needs_bwrap
@pytest.mark.skipif("pids" not in PLAN.cgroups, reason="no pids cgroup here (not root)")
def test_process_limit_hits_are_counted(tmp_path):
    code = ("import os, time\nmade = 0\ntry:\n    for _ in range(40):\n"
            "        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n"
            "        made += 1\nexcept OSError:\n    pass\nprint('made', made)\n")
    proc, box, _ = run_in_sandbox(tmp_path, code, sb.Limits(processes=12))
    made = int(proc.stdout.split()[-1])
    assert made < 12 and box.report["process_limit_hits"] >= 1


@needs_bwrap
@pytest.mark.skipif("memory" not in PLAN.cgroups, reason="no memory cgroup here (not root)")
def test_a_memory_kill_is_counted(tmp_path):
    code = "print('go', flush=True)\nx = [b'x' * (32 << 20) for _ in range(64)]\n"
    proc, box, _ = run_in_sandbox(tmp_path, code, sb.Limits(memory=200 << 20))
    assert "go" in proc.stdout and proc.returncode != 0
    assert box.report["oom_kills"] >= 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv")
                    or not Path("/usr/bin/python3").exists(),
                    reason="needs root (to become an ordinary user), setpriv and /usr/bin/python3")
def test_as_an_ordinary_user():
    """Grading as an ordinary user: bwrap in a user namespace, rlimits instead of cgroups.
    (The course's own Python may live where that user cannot read, e.g. /root/.pyenv: the
    sandbox module is stdlib only, so the system Python runs it.)"""
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="sbx-user-"))  # pytest's tmp_path is root-only
    try:
        _as_an_ordinary_user(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_an_ordinary_user(folder: Path):
    shutil.copyfile(ROOT / "autograde" / "sandbox.py", folder / "sandbox.py")
    (folder / "fork.py").write_text(
        "import os, time\nmade = 0\ntry:\n    for _ in range(60):\n"
        "        if os.fork() == 0:\n            time.sleep(20); os._exit(0)\n"
        "        made += 1\nexcept OSError:\n    print('refused after', made)\n")
    for path in (folder, folder / "sandbox.py", folder / "fork.py"):
        path.chmod(0o755)
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    cmd = user + ["/usr/bin/python3", "-I", str(folder / "sandbox.py"), "run",
                  "--processes", "16", "--file", str(folder / "fork.py"), "--",
                  "/usr/bin/python3", "-c", "import os; print('uid', os.getuid()); "
                  "print(sorted(os.listdir('/'))); exec(open('fork.py').read())"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=folder)
    if "bwrap cannot create namespaces" in proc.stderr:
        pytest.skip("user namespaces are not allowed for ordinary users here")
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["protections"]["filesystem"].startswith("on"), report
    assert report["protections"]["processes"].startswith("on (RLIMIT_NPROC"), report
    assert report["protections"]["memory"] == "on (RLIMIT_AS, per process only)"
    assert "uid 65534" in proc.stdout
    assert "refused after" in proc.stdout, proc.stdout
    assert "work" not in proc.stdout.split("\n")[1]  # the host's /work is not in its view


def test_without_bubblewrap_grading_warns_and_require_sandbox_refuses(tmp_path, monkeypatch,
                                                                      capsys):
    from autograde import pipeline as P
    plan = sb.Plan(bwrap=None, setpriv=None, root=os.geteuid() == 0,
                   why_not={k: "bubblewrap is not installed" for k in
                            ("filesystem", "network", "pid", "scratch")})
    monkeypatch.setattr(sb, "_PLAN", plan)
    monkeypatch.setattr(P, "detect", lambda: plan)
    course = P.Course(tmp_path, tmp_path / "work", echo=lambda m: None)
    assert course.sandbox_plan() is plan
    err = capsys.readouterr().err
    assert "WARNING" in err and "network: OFF (bubblewrap is not installed)" in err
    assert "OFF" in (tmp_path / "work" / "logs" / "sandbox.log").read_text()
    assert plan.summary().startswith("none (off: filesystem, network")
    with pytest.raises(P.PipelineError, match="refusing to grade"):
        P.Course(tmp_path, tmp_path / "work", require_sandbox=True).sandbox_plan()


def test_limits_reject_nonsense():
    with pytest.raises(ValueError, match="memory"):
        sb.Limits(memory=0)
    with pytest.raises(ValueError, match="processes"):
        sb.Limits(processes=True)
