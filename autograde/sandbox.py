"""One sandbox per submission: Linux namespaces through bubblewrap, limits through cgroups.

A student's kernel runs as

    host worker ──► python sandbox.py enter   (joins the cgroups, sets rlimits, opens files)
                      └─exec─► bwrap ...        (new mount, PID, network, IPC, UTS namespaces)
                                └─► setpriv     (as root only: a non-root uid on the host)
                                     └─► python -m ipykernel_launcher -f /tmp/.../kernel.json

and sees: a read-only view of the system (/usr, /etc), of Python and the course environment
(``sys.base_prefix``, ``sys.prefix``, the ``lorakit`` sources of the editable install), a private
home with a scratch copy of its own notebook, a private /tmp, and the one directory holding its
kernel's ipc sockets. Nothing else of the host exists in it: not the repository, the gradebook,
``submitted/``, other students or the instructor's home. It has no network, its own PID
namespace (every process it starts dies with it), and the limits of :class:`Limits`.

This file imports only the standard library: the ``enter`` step runs it as a script
(``python -I sandbox.py enter ...``) between the host and bwrap.

What is enforced depends on the machine; :func:`detect` says, and :meth:`Plan.protections`
lists every protection as on or off with the reason:

- bubblewrap missing or not usable (macOS, a container without namespaces): no isolation at
  all; the kernel runs as the grader in a scratch folder with rlimits only.
- root: cgroup v1 ``pids``, ``memory``, ``cpu``/``cpuacct`` bound the whole sandbox (and
  ``freezer`` stops it while it is killed); the kernel runs as ``SANDBOX_UID`` (nobody) on the
  host.
- an ordinary user: a user namespace; no cgroups unless delegated, so memory is bounded per
  process (RLIMIT_AS) and processes per user (RLIMIT_NPROC, counted over all of that user's
  processes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The host uid and gid a sandboxed kernel runs as when grading as root (nobody/nogroup).
SANDBOX_UID = 65534
SANDBOX_GID = 65534
#: Inside the sandbox: the student's home and the kernel's working directory.
HOME = "/home/student"
WORKDIR = HOME + "/work"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "loralab"
#: Environment variables handed from the host into the sandbox (everything else is cleared).
PASS_ENV = ("PYTHONHASHSEED", "NBGRADER_EXECUTION", "LANG", "LC_ALL", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE", "PYDEVD_DISABLE_FILE_VALIDATION")
#: Packages whose source folders the kernel must see (editable installs live in the repo).
PACKAGES = ("lorakit",)


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as required (e.g. --require-sandbox without bubblewrap)."""


@dataclass(frozen=True)
class Limits:
    """Limits per submission (defaults: autograde/config.py, documented in its README).

    processes: processes + threads in the sandbox; memory: bytes for the whole sandbox
    (cgroup) or per process (RLIMIT_AS); cpu_seconds: CPU time per process (RLIMIT_CPU);
    cpus: CPU bandwidth of the sandbox, in cores (cgroup only); file_size: bytes per file
    written (RLIMIT_FSIZE); scratch: bytes of the private home and of /tmp (tmpfs, each);
    open_files: RLIMIT_NOFILE; threads: torch/BLAS threads in the kernel.
    """

    processes: int = 128
    memory: int = 4 << 30
    cpu_seconds: int = 1200
    cpus: float = 1.0
    file_size: int = 256 << 20
    scratch: int = 512 << 20
    open_files: int = 1024
    threads: int = 1

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"sandbox limit {name} must be a positive number, "
                                 f"got {value!r}")


# -- what this machine allows -------------------------------------------------------------
@dataclass
class Plan:
    """How sandboxes are made on this machine (see :func:`detect`)."""

    bwrap: str | None
    setpriv: str | None
    root: bool
    cgroups: dict[str, Path] = field(default_factory=dict)  # controller -> hierarchy mount
    why_not: dict[str, str] = field(default_factory=dict)   # protection -> why it is off

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def protections(self) -> dict[str, str]:
        """{protection: 'on (how)' or 'OFF (why)'}, for the log, the CSV and the README."""
        iso = self.isolated
        off = lambda key: "OFF (" + self.why_not.get(key, "no bubblewrap") + ")"  # noqa: E731
        cg = self.cgroups
        out = {
            "filesystem": "on (bubblewrap: read-only system and course env, scratch copy)"
            if iso else off("filesystem"),
            "network": "on (own network namespace)" if iso else off("network"),
            "pid namespace": "on (every process dies with the kernel)" if iso else off("pid"),
            "non-root uid": ("on (uid %d)" % SANDBOX_UID if self.root else
                             "on (the grader's own uid)") if iso or not self.root
            else "OFF (grading as root without bubblewrap)",
            "processes": "on (cgroup pids)" if "pids" in cg else
            "on (RLIMIT_NPROC, counted over the user's processes)" if not self.root
            else "on (RLIMIT_NPROC of uid %d, shared by parallel sandboxes)" % SANDBOX_UID
            if iso else "OFF (root ignores RLIMIT_NPROC)",
            "memory": "on (cgroup memory, whole sandbox)" if "memory" in cg
            else "on (RLIMIT_AS, per process only)",
            "cpu": ("on (RLIMIT_CPU per process" + (", cgroup cpu bandwidth)" if "cpu" in cg
                                                    else ")")),
            "wall time": "on (per cell and per notebook, on the host)",
            "output": "on (per cell and per notebook, on the host as messages arrive)",
            "file size": "on (RLIMIT_FSIZE)",
            "scratch size": "on (tmpfs size)" if iso else off("scratch"),
        }
        return out

    def summary(self) -> str:
        """One line for the CSV's ``sandbox`` column."""
        off = [k for k, v in self.protections().items() if v.startswith("OFF")]
        kind = ("bwrap" + ("+cgroup" if self.cgroups else "+rlimits")) if self.isolated \
            else "none"
        return kind + (" (off: " + ", ".join(off) + ")" if off else "")


def _cgroup_mounts() -> dict[str, Path]:
    """cgroup v1 hierarchies: {controller: mount point} from /proc/self/mounts."""
    found = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup":
            for option in parts[3].split(","):
                if option in ("pids", "memory", "cpu", "cpuacct", "freezer"):
                    found[option] = Path(parts[1])
    return found


def _writable_cgroups() -> tuple[dict[str, Path], str]:
    if os.geteuid() != 0:
        return {}, "no cgroup delegation for an ordinary user"
    found = {}
    for controller, mount in _cgroup_mounts().items():
        probe = mount / CGROUP_PARENT / f"probe-{os.getpid()}"
        try:
            probe.mkdir(parents=True, exist_ok=True)
            probe.rmdir()
            found[controller] = mount
        except OSError:
            continue
    if not found:
        return {}, "no writable cgroup v1 hierarchy (cgroup v2 is not supported yet)"
    return found, ""


def _bwrap_works(bwrap: str, root: bool) -> str:
    """'' if bwrap can make the namespaces we need here, else the reason."""
    args = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent"]
    if not root:
        args.append("--unshare-user")
    try:
        done = subprocess.run(args + ["true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap failed to start: {error}"
    if done.returncode != 0:
        return "bwrap cannot create namespaces here: " + (done.stderr.strip() or "exit %d"
                                                           % done.returncode)
    return ""


_PLAN: Plan | None = None


def detect(refresh: bool = False) -> Plan:
    """What this machine allows, probed once per process."""
    global _PLAN
    if _PLAN is not None and not refresh:
        return _PLAN
    root = os.geteuid() == 0
    why: dict[str, str] = {}
    bwrap = shutil.which("bwrap")
    if os.environ.get("LORALAB_NO_SANDBOX"):  # the benchmark's baseline; never for grading
        bwrap, why["filesystem"] = None, "turned off by LORALAB_NO_SANDBOX"
    elif sys.platform != "linux":
        bwrap, why["filesystem"] = None, f"namespaces need Linux, this is {sys.platform}"
    elif bwrap is None:
        why["filesystem"] = "bubblewrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    else:
        reason = _bwrap_works(bwrap, root)
        if reason:
            bwrap, why["filesystem"] = None, reason
    setpriv = shutil.which("setpriv")
    if root and bwrap and not setpriv:
        bwrap, why["filesystem"] = None, "setpriv (util-linux) is missing: cannot drop root"
    for key in ("network", "pid", "scratch"):
        if "filesystem" in why:
            why[key] = why["filesystem"]
    cgroups, why_cg = ({}, "turned off by LORALAB_NO_SANDBOX") \
        if os.environ.get("LORALAB_NO_SANDBOX") else _writable_cgroups()
    if why_cg:
        why["cgroups"] = why_cg
    _PLAN = Plan(bwrap=bwrap, setpriv=setpriv, root=root, cgroups=cgroups, why_not=why)
    return _PLAN


# -- one sandbox ------------------------------------------------------------------------------
def _ro_paths() -> list[str]:
    """Host paths the kernel sees read-only: Python, the course environment, editable sources."""
    import importlib.util
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
             os.path.dirname(os.path.realpath(sys.executable))}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths.update(os.path.realpath(p) for p in spec.submodule_search_locations)
    # keep the outermost of nested paths, and none under the system folders bound anyway
    system = ("/usr/", "/etc/")
    ordered = sorted(p for p in paths if not p.startswith(system))
    return [p for i, p in enumerate(ordered)
            if not any(p.startswith(q.rstrip("/") + "/") for q in ordered[:i])]


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


class Sandbox:
    """The sandbox of one kernel: its host run folder (ipc sockets), cgroups and command.

    ``files``: {name: host path} copied into the kernel's working directory (the scratch copy
    of the notebook and the assignment's data). Use as a context manager; :meth:`stop` kills
    whatever is left and reads the cgroup counters into :attr:`report`.
    """

    def __init__(self, limits: Limits, files: dict[str, str] | None = None,
                 plan: Plan | None = None, name: str = "kernel"):
        self.limits, self.files, self.plan = limits, dict(files or {}), plan or detect()
        self.name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
        self.run_dir: Path | None = None
        self.cgroups: dict[str, Path] = {}
        self.report: dict = {}

    # host folder: <tmp>/lls-XXXX/ (0700, the host's), with ipc/ inside (the sandbox's)
    def __enter__(self) -> "Sandbox":
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"lls-{os.getpid()}-"))
        ipc = self.ipc_dir
        ipc.mkdir()
        if self.plan.root and self.plan.isolated:
            os.chown(ipc, SANDBOX_UID, SANDBOX_GID)
        self._make_cgroups()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for path in self.cgroups.values():
            _rmdir_cgroup(path)
        if self.run_dir is not None:
            _remove_tree(self.run_dir)

    def lock_ipc(self) -> bool:
        """Once the kernel has bound its sockets: the sandbox may no longer add, remove or
        replace anything in its ipc folder (the one host folder it can reach), so it cannot
        fill the host's disk there or swap a socket for a link to another host socket.
        Grading as root, the folder goes back to root (0755); as an ordinary user the kernel
        has the folder's uid, so this is not possible (see autograde/README.md)."""
        if not (self.plan.root and self.plan.isolated):
            return False
        os.chown(self.ipc_dir, 0, 0)
        os.chmod(self.ipc_dir, 0o755)
        return True

    @property
    def ipc_dir(self) -> Path:
        assert self.run_dir is not None, "use the Sandbox as a context manager"
        return self.run_dir / "ipc"

    @property
    def workdir(self) -> str:
        """The kernel's working directory as the kernel sees it."""
        return WORKDIR if self.plan.isolated else str(self.run_dir / "work")

    def _make_cgroups(self) -> None:
        lim = self.limits
        unique = f"{self.name}-{os.getpid()}-{time.monotonic_ns()}"
        for controller, mount in self.plan.cgroups.items():
            path = mount / CGROUP_PARENT / unique
            if path in self.cgroups.values():  # comounted controllers share a folder
                self.cgroups[controller] = path
                continue
            path.mkdir(parents=True)
            self.cgroups[controller] = path
        settings = {
            "pids": {"pids.max": lim.processes},
            "memory": {"memory.limit_in_bytes": lim.memory,
                       "memory.memsw.limit_in_bytes": lim.memory, "memory.swappiness": 0},
            "cpu": {"cpu.cfs_period_us": 100_000,
                    "cpu.cfs_quota_us": int(100_000 * lim.cpus)},
        }
        for controller, values in settings.items():
            if controller in self.cgroups:
                for key, value in values.items():
                    target = self.cgroups[controller] / key
                    if target.exists():
                        target.write_text(str(value))

    # -- the command --------------------------------------------------------------------
    def env(self, host_env: dict[str, str]) -> dict[str, str]:
        lim = self.limits
        threads = str(lim.threads)
        bindir = os.path.dirname(sys.executable)
        env = {k: host_env[k] for k in PASS_ENV if k in host_env}
        env.update({"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME
                    if self.plan.isolated else str(self.run_dir / "home"),
                    "LANG": env.get("LANG", "C.UTF-8"), "OMP_NUM_THREADS": threads,
                    "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                    "PYTHONDONTWRITEBYTECODE": "1"})
        return env

    def wrap(self, argv: list[str], host_env: dict[str, str]) -> list[str]:
        """The command that runs ``argv`` inside this sandbox (the ``enter`` step first)."""
        lim = self.limits
        enter = [sys.executable, "-I", "-S", os.path.abspath(__file__), "enter"]
        for path in sorted(set(self.cgroups.values())):
            enter += ["--cgroup", str(path)]
        rlimits = {"CPU": lim.cpu_seconds, "FSIZE": lim.file_size, "CORE": 0,
                   "NOFILE": lim.open_files}
        if "memory" not in self.cgroups:
            rlimits["AS"] = lim.memory
        if "pids" not in self.cgroups:
            rlimits["NPROC"] = lim.processes + (0 if self.plan.root else _own_processes())
        for key, value in rlimits.items():
            enter += ["--rlimit", f"{key}={value}"]
        env = self.env(host_env)
        if not self.plan.isolated:
            work = self.run_dir / "work"
            (self.run_dir / "home").mkdir(exist_ok=True)
            work.mkdir(exist_ok=True)
            for name, src in self.files.items():
                shutil.copyfile(src, work / name)
            enter += ["--chdir", str(work)]
            for key, value in env.items():
                enter += ["--env", f"{key}={value}"]
            return enter + ["--", *argv]
        for name, src in self.files.items():
            enter += ["--copy", src, f"{WORKDIR}/{name}"]
        return enter + ["--", *self._bwrap(env), *argv]

    def _bwrap(self, env: dict[str, str]) -> list[str]:
        plan, lim = self.plan, self.limits
        args = [plan.bwrap, "--die-with-parent", "--new-session", "--unshare-pid",
                "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "sandbox"]
        if not plan.root:
            args += ["--unshare-user", "--disable-userns"]
        args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # the private /tmp first: the course environment may itself live under /tmp (a CI
        # clone, say), and a tmpfs mounted after its binds would hide them
        args += ["--perms", "1777", "--size", str(lim.scratch), "--tmpfs", "/tmp",
                 "--perms", "0755", "--dir", "/home",
                 "--perms", "0777", "--size", str(lim.scratch), "--tmpfs", HOME,
                 "--perms", "0777", "--dir", WORKDIR]
        made = {"/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/home", HOME, WORKDIR}
        for path in _ro_paths():
            for parent in _parents(path):
                if parent not in made:
                    args += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            args += ["--ro-bind", path, path]
        ipc = str(self.ipc_dir)
        for parent in _parents(ipc):
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--bind", ipc, ipc, "--chdir", WORKDIR, "--clearenv"]
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        args.append("--")
        if plan.root:
            args += [plan.setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}",
                     "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                     "--no-new-privs", "--"]
        return args

    # -- the end ------------------------------------------------------------------------
    #: processes of a sandbox that runs only its command: bwrap, bwrap's init (PID 1), COMMAND
    BASELINE = 3

    def extra_processes(self) -> int | None:
        """Processes beyond bwrap, its init and the command (None without a pids cgroup):
        what a submission left running, counted before the kernel is shut down."""
        if "pids" not in self.cgroups:
            return None
        return max(0, len(_procs(self.cgroups["pids"])) - self.BASELINE)

    def stop(self) -> dict:
        """Kill every process left in the sandbox's cgroups; read their counters."""
        if not self.cgroups:
            return self.report
        pids_cg = self.cgroups.get("pids") or next(iter(self.cgroups.values()))
        freezer = self.cgroups.get("freezer")
        if freezer is not None:  # frozen, a fork bomb cannot fork faster than we kill
            _write(freezer / "freezer.state", "FROZEN")
            for _ in range(100):
                if _read(freezer / "freezer.state") != "FREEZING":
                    break
                time.sleep(0.01)
            for pid in _procs(pids_cg):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _write(freezer / "freezer.state", "THAWED")
        for _ in range(200):
            left = _procs(pids_cg)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self.report["left_running"] = len(_procs(pids_cg))
        self.report.update(self.counters())
        return self.report

    def counters(self) -> dict:
        """Limit hits and usage so far: processes refused, memory kills, peak memory, CPU."""
        out = {}
        if "pids" in self.cgroups:
            events = _read(self.cgroups["pids"] / "pids.events")
            out["process_limit_hits"] = int(events.split()[-1]) if events else 0
        if "memory" in self.cgroups:
            mem = self.cgroups["memory"]
            out["memory_peak"] = int(_read(mem / "memory.max_usage_in_bytes") or 0)
            out["memory_failcnt"] = int(_read(mem / "memory.failcnt") or 0)
            for line in _read(mem / "memory.oom_control").splitlines():
                if line.startswith("oom_kill "):
                    out["oom_kills"] = int(line.split()[1])
        if "cpuacct" in self.cgroups:
            out["cpu_seconds"] = int(_read(self.cgroups["cpuacct"] / "cpuacct.usage") or 0) / 1e9
        return out


def _remove_tree(path: Path) -> None:
    """rm -rf, not following links, without Python's recursion (a sandbox can nest folders
    thousands deep in its ipc folder before it is locked)."""
    if shutil.which("rm"):
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def sweep(plan: Plan | None = None) -> int:
    """Remove what sandboxes whose worker died without cleaning up (killed, say) left behind:
    their cgroups (killing whatever is still in them) and run folders; returns how many."""
    plan, removed = plan or detect(), 0
    for path in Path(tempfile.gettempdir()).glob("lls-*-*"):
        pid = path.name.split("-")[1]
        try:
            mine = path.lstat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not Path("/proc", pid).exists():
            _remove_tree(path)
            removed += 1
    for mount in set(plan.cgroups.values()):
        parent = mount / CGROUP_PARENT
        for path in (parent.iterdir() if parent.is_dir() else []):
            parts = path.name.rsplit("-", 2)
            if not path.is_dir() or len(parts) != 3 or not parts[1].isdigit():
                continue
            if Path("/proc", parts[1]).exists():
                continue  # its worker is alive
            for pid in _procs(path):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _rmdir_cgroup(path)
            removed += not path.exists()
    return removed


_FORK_PROBE = """import os, sys, time
made = 0
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError:
        print("refused after", made); sys.exit(0)
    if pid == 0:
        time.sleep(60); os._exit(0)
    made += 1
print("not refused"); sys.exit(1)
"""
_MEMORY_PROBE = """print("started", flush=True)
blocks = []
for _ in range(16):
    blocks.append(b"x" * (64 << 20))
print("not refused")
"""


def prove_limits(plan: Plan | None = None) -> dict[str, str]:
    """Show, with harmless probes, that the process and memory limits are in force here:
    {"isolation": ..., "process limit": "" | why not, "memory limit": "" | why not}
    (isolation: bubblewrap works, so an attack on the file system meets only the sandbox's
    view). The process probe forks
    at most 20 sleepers (one more than its limit of 19 allows); the memory probe asks for
    1 GiB under a 256 MiB limit. Tests run fork and memory bombs only after this says ''."""
    plan = plan or detect()
    out = {"isolation": "" if plan.isolated else plan.why_not.get("filesystem", "off")}
    with tempfile.TemporaryDirectory() as tmp:
        probes = {"fork.py": _FORK_PROBE, "memory.py": _MEMORY_PROBE}
        for name, text in probes.items():
            Path(tmp, name).write_text(text)
            os.chmod(Path(tmp, name), 0o644)
        cases = {"process limit": (Limits(processes=19), ["fork.py", "20"]),
                 "memory limit": (Limits(memory=256 << 20), ["memory.py"])}
        for what, (limits, argv) in cases.items():
            files = {argv[0]: str(Path(tmp, argv[0]))}
            with Sandbox(limits, files, plan=plan, name="probe") as box:
                proc = subprocess.run(box.wrap([sys.executable, "-I", *argv], dict(os.environ)),
                                      capture_output=True, text=True, timeout=120)
            # it must have run, and then been stopped (not merely failed to start)
            refused = "not refused" not in proc.stdout and (
                "refused after" in proc.stdout if what == "process limit"
                else "started" in proc.stdout and proc.returncode != 0)
            out[what] = "" if refused else (f"the probe was not stopped (exit {proc.returncode}"
                                            f", {proc.stdout.strip()[-200:]!r})")
    return out


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _procs(cgroup: Path) -> list[int]:
    return [int(p) for p in _read(cgroup / "cgroup.procs").split()]


def _rmdir_cgroup(path: Path) -> None:
    """rmdir, retried for up to 10 s: killed processes leave a cgroup only once reaped, which
    takes a while after a fork bomb on a busy machine."""
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def _own_processes() -> int:
    """Processes (and threads) of this user now: RLIMIT_NPROC counts them all."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
            except OSError:
                continue
    return count


# -- the `enter` step: runs between the host and bwrap ------------------------------------------
def _enter(argv: list[str]) -> None:
    """enter [--cgroup DIR]... [--rlimit NAME=N]... [--copy SRC DEST]... [--chdir DIR]
    [--env K=V]... -- COMMAND...: join the cgroups, set the rlimits, exec COMMAND (bwrap, with
    the copies as ``--file FD DEST``)."""
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    copies, env, i = [], None, 0
    while i < len(opts):
        key = opts[i]
        if key == "--cgroup":
            Path(opts[i + 1], "cgroup.procs").write_text(str(os.getpid()))
            i += 2
        elif key == "--rlimit":
            name, value = opts[i + 1].split("=")
            limit = getattr(resource, "RLIMIT_" + name)
            resource.setrlimit(limit, (int(value), int(value)))
            i += 2
        elif key == "--copy":
            copies.append((opts[i + 1], opts[i + 2]))
            i += 3
        elif key == "--chdir":
            os.chdir(opts[i + 1])
            i += 2
        elif key == "--env":
            env = {} if env is None else env
            k, _, v = opts[i + 1].partition("=")
            env[k] = v
            i += 2
        else:
            raise SystemExit(f"sandbox enter: unknown option {key}")
    if copies:
        at = command.index("--")  # bwrap's own end of options
        extra = []
        for src, dest in copies:
            fd = os.open(src, os.O_RDONLY)
            os.set_inheritable(fd, True)
            extra += ["--perms", "0666", "--file", str(fd), dest]
        command[at:at] = extra
    if env is None:
        os.execvp(command[0], command)
    os.execvpe(command[0], command, env)


def _run(argv: list[str]) -> int:
    """run [--processes N] [--memory BYTES] [--timeout S] -- COMMAND: run a command in a
    sandbox of its own (for tests and for an instructor who wants to see one); prints the
    protections and the counters as JSON on stderr."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m autograde.sandbox run")
    parser.add_argument("--processes", type=int, default=Limits.processes)
    parser.add_argument("--memory", type=int, default=Limits.memory)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="copy PATH into the working directory")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    limits = Limits(processes=args.processes, memory=args.memory)
    files = {os.path.basename(p): os.path.abspath(p) for p in args.file}
    with Sandbox(limits, files, name="run") as box:
        proc = subprocess.Popen(box.wrap(command, dict(os.environ)))
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        report = box.stop()
    print(json.dumps({"returncode": code, "protections": box.plan.protections(), **report}),
          file=sys.stderr)
    return code


if __name__ == "__main__":
    if sys.argv[1:2] == ["enter"]:
        _enter(sys.argv[2:])
    elif sys.argv[1:2] == ["run"]:
        sys.exit(_run(sys.argv[2:]))
    else:
        sys.exit("usage: python -m autograde.sandbox run [options] -- COMMAND")
