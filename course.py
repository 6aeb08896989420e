#!/usr/bin/env python3
"""LoRA Lab's entry point: set up the environment, launch the course, run the tests.

    python3 course.py setup  [--requirements FILE] [--reinstall]
    python3 course.py launch [--no-browser] [--port N] [jupyter lab options...]
    python3 course.py test   [pytest args...]

Standard library only, so it runs on a fresh machine that has nothing but Python 3.10+.
Everything is installed into ./.venv (made with the venv module) by ONE pip call
from requirements-cpu.txt, or from the file given by --requirements or by the
LORALAB_REQUIREMENTS environment variable; a file chosen that way is remembered
for later runs. The install is skipped when .venv already holds exactly those
requirements (.venv/loralab-install.json records the sha256 of the requirements
file and of pyproject.toml); --reinstall forces it.
"""

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 10)
ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DEFAULT_REQUIREMENTS_NAME = "requirements-cpu.txt"
MARKER_NAME = "loralab-install.json"
REQUIREMENTS_ENV = "LORALAB_REQUIREMENTS"


class CourseError(Exception):
    """A failure with a message for the user (printed without a traceback)."""


# --------------------------------------------------------------------------- helpers

def venv_python(venv=None, windows=None):
    """Path of the venv's interpreter: bin/python, or Scripts\\python.exe on Windows."""
    venv = Path(venv) if venv is not None else VENV
    if windows is None:
        windows = os.name == "nt"
    if windows:
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def format_command(cmd):
    if os.name == "nt":
        return subprocess.list2cmdline([str(c) for c in cmd])
    return " ".join(shlex.quote(str(c)) for c in cmd)


def run(cmd, env=None):
    """Print the command, run it from the repo root, return its exit code."""
    print("$ " + format_command(cmd), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=str(ROOT), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The child got the Ctrl-C too (same process group); let it shut down.
        return proc.wait()


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve_requirements(cli_value=None, environ=None, recorded=None):
    """Which requirements file to install.

    --requirements, else $LORALAB_REQUIREMENTS, else the file .venv was last set up
    from (so `setup --requirements my-gpu.txt` sticks for later launch/test runs),
    else requirements-cpu.txt.
    """
    if environ is None:
        environ = os.environ
    if cli_value:
        value, source = cli_value, "--requirements"
    elif environ.get(REQUIREMENTS_ENV):
        value, source = environ[REQUIREMENTS_ENV], "$" + REQUIREMENTS_ENV
    elif recorded and (ROOT / recorded).is_file():  # recorded relative to ROOT, or absolute
        return (ROOT / recorded).resolve()
    else:
        value, source = str(ROOT / DEFAULT_REQUIREMENTS_NAME), "default"
    path = Path(value).expanduser()
    if not path.is_absolute():
        # Relative to where the user typed the command, not to the repo root.
        path = Path.cwd() / path
    path = path.resolve()
    if not path.is_file():
        raise CourseError(f"requirements file not found: {path} (from {source})")
    return path


def install_fingerprint(requirements):
    """What an install depends on; a completed install with an equal one needs no pip."""
    requirements = Path(requirements)
    try:
        shown = requirements.relative_to(ROOT).as_posix()
    except ValueError:
        shown = str(requirements)
    return {
        "requirements": shown,
        "requirements_sha256": sha256_of(requirements),
        "pyproject_sha256": sha256_of(ROOT / "pyproject.toml"),
    }


def marker_path(venv=None):
    return (Path(venv) if venv is not None else VENV) / MARKER_NAME


def read_marker(venv=None):
    try:
        return json.loads(marker_path(venv).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(fingerprint, venv=None):
    marker_path(venv).write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")


def pip_install_command(python, requirements):
    """ONE pip call for everything; never --upgrade (it would swap the pinned torch)."""
    return [python, "-m", "pip", "install", "-r", requirements]


# --------------------------------------------------------------------------- commands

def create_venv(venv=None):
    import venv as venv_module

    venv = Path(venv) if venv is not None else VENV
    print(f"Creating a virtual environment in {venv} ...", flush=True)
    try:
        venv_module.EnvBuilder(with_pip=True).create(str(venv))
    except (subprocess.CalledProcessError, OSError) as exc:
        raise CourseError(
            f"could not create the virtual environment {venv}: {exc}\n"
            "On Debian/Ubuntu, install the venv module first "
            "(for example: sudo apt install python3-venv), "
            f"then delete {venv} and try again."
        ) from exc
    if not venv_python(venv).exists():
        raise CourseError(f"the virtual environment {venv} has no Python at {venv_python(venv)}")


def setup(requirements=None, reinstall=False):
    """Make .venv and install the requirements into it; return the venv's python."""
    python = venv_python()
    if not python.exists():
        create_venv()
    marker = read_marker() or {}
    requirements = resolve_requirements(requirements, recorded=marker.get("requirements"))

    fingerprint = install_fingerprint(requirements)
    if not reinstall and marker == dict(fingerprint, complete=True):
        print(f"Environment up to date ({VENV.name}, from {requirements.name}); "
              "use --reinstall to install again.", flush=True)
        return python

    write_marker(dict(fingerprint, complete=False))  # a failed install must not look done
    code = run(pip_install_command(python, requirements))
    if code != 0:
        raise CourseError(
            f"pip install failed (exit code {code}) for {requirements}.\n"
            "Read pip's message above; fix the cause and run the command again"
            + ("." if requirements == ROOT / DEFAULT_REQUIREMENTS_NAME else
               f", or go back to the default with --requirements {DEFAULT_REQUIREMENTS_NAME}.")
        )
    write_marker(dict(fingerprint, complete=True))
    print(f"Environment ready in {VENV}.", flush=True)
    return python


def launch(args, extra):
    python = setup(args.requirements, args.reinstall)
    notebooks = ROOT / "notebooks"
    if not notebooks.is_dir():
        raise CourseError(f"no notebooks folder at {notebooks}")
    cmd = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={notebooks}"]
    if args.no_browser:
        cmd.append("--no-browser")
    if args.port is not None:
        cmd.append(f"--ServerApp.port={args.port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Jupyter refuses to start as root without this (containers often run as root).
        cmd.append("--allow-root")
    cmd += extra
    return run(cmd)


def _names_existing_path(arg):
    if arg.startswith("-"):
        return False
    return (ROOT / arg.split("::", 1)[0]).exists()


def test_commands(python, extra):
    """The pytest invocations for `course.py test`.

    No arguments: the tests folder, then every solution notebook under nbval.
    Arguments that name a file or folder: exactly `pytest ARGS` (you chose what to run).
    Other arguments (-x, -k EXPR, -m 'not slow', ...): appended to both invocations.
    """
    pytest = [python, "-m", "pytest"]
    if any(_names_existing_path(a) for a in extra):
        return [pytest + list(extra)]
    commands = [pytest + list(extra)]
    solutions = ROOT / "solutions"
    if solutions.is_dir() and any(solutions.rglob("*.ipynb")):
        commands.append(pytest + ["--nbval-lax", "solutions/"] + list(extra))
    else:
        print("No notebooks under solutions/ yet: skipping the nbval run.", flush=True)
    return commands


def test(args, extra):
    python = setup(args.requirements, args.reinstall)
    env = dict(os.environ, PYTHONHASHSEED="0")
    # MPLBACKEND is deliberately left alone: kernels inherit it, and a forced
    # non-inline backend makes the notebooks' plots vanish.
    failed = []
    for cmd in test_commands(python, extra):
        code = run(cmd, env=env)
        if code != 0:
            failed.append((format_command(cmd), code))
    if failed:
        for cmd, code in failed:
            print(f"FAILED (exit code {code}): {cmd}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- CLI

def build_parser():
    parser = argparse.ArgumentParser(
        prog="course.py",
        description="LoRA Lab: set up the environment, launch the course, run the tests.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name, help_text, description, usage=None):
        p = sub.add_parser(name, help=help_text, description=description, usage=usage,
                           allow_abbrev=False)
        p.add_argument(
            "--requirements", metavar="FILE",
            help=f"requirements file to install (default: ${REQUIREMENTS_ENV} "
                 "if set, else requirements-cpu.txt)")
        p.add_argument("--reinstall", action="store_true",
                       help="run pip install even if .venv is up to date")
        return p

    add("setup", "create .venv and install everything into it",
        "Create .venv (if missing) and install the requirements into it with one pip call.")
    p = add("launch", "set up, then open the notebooks in JupyterLab",
            "Set up, then run JupyterLab on notebooks/. "
            "Further options are passed to jupyter lab.",
            usage="course.py launch [-h] [--requirements FILE] [--reinstall] "
                  "[--no-browser] [--port N] [jupyter lab options ...]")
    p.add_argument("--no-browser", action="store_true", help="don't open a browser")
    p.add_argument("--port", type=int, metavar="N", help="port for the Jupyter server")
    add("test", "set up, then run the tests and the solution notebooks",
        "Set up, then run `python -m pytest` (tests/) and "
        "`python -m pytest --nbval-lax solutions/` in .venv. Further arguments go to "
        "pytest: options (-x, -k EXPR) are added to both runs; if any argument names "
        "a file or folder, only `pytest ARGS` runs.",
        usage="course.py test [-h] [--requirements FILE] [--reinstall] [pytest args ...]")
    return parser


def main(argv=None):
    if sys.version_info < MIN_PYTHON:
        print(f"LoRA Lab needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; "
              f"this is {sys.version.split()[0]}.", file=sys.stderr)
        return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "setup":
        parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        if args.command == "setup":
            setup(args.requirements, args.reinstall)
            return 0
        if args.command == "launch":
            return launch(args, extra)
        return test(args, extra)
    except CourseError as exc:
        print(f"course.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
