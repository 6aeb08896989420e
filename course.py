#!/usr/bin/env python3
"""LoRA Lab's entry point: set up the environment, launch the course, run the tests.

    python3 course.py setup  [--requirements FILE] [--reinstall]
    python3 course.py launch [--no-browser] [--port N] [-- jupyter lab options...]
    python3 course.py test   [pytest args...]

Standard library only, so it runs on a fresh machine that has nothing but Python 3.10+.
Everything is installed into ./.venv (made with the venv module) by ONE pip call
from requirements-cpu.txt, or from the file given by --requirements or by the
LORALAB_REQUIREMENTS environment variable; a file chosen that way is remembered
for later runs. The install is skipped when .venv already holds exactly those
requirements (.venv/loralab-install.json records the sha256 of the requirements
file and of pyproject.toml); --reinstall forces it.

`launch` accepts only its own options; anything for jupyter lab goes after `--`
(course.py launch -- --ServerApp.ip=0.0.0.0), so a mistyped option is an error, not
something jupyter lab silently ignores. It runs JupyterLab with the settings in
jupyter-config/ (first on JUPYTER_CONFIG_PATH), and with --allow-root when run as root.
`test` passes every other argument to pytest and runs it in the directory you are in,
so paths mean what they mean to your shell.
"""

import argparse
import difflib
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
JUPYTER_CONFIG_NAME = "jupyter-config"  # the course's Jupyter settings, for `launch`
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


def run(cmd, env=None, cwd=None):
    """Print the command, run it (from the repo root unless cwd says otherwise), return its
    exit code."""
    cwd = Path(cwd) if cwd is not None else ROOT
    where = "" if cwd == ROOT else f"    (in {cwd})"
    print("$ " + format_command(cmd) + where, flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=str(cwd), env=env)
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


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def jupyter_lab_command(python, no_browser=False, port=None, extra=()):
    """The command `course.py launch` runs: JupyterLab on notebooks/."""
    cmd = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT / 'notebooks'}"]
    if no_browser:
        cmd.append("--no-browser")
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if is_root():
        # Jupyter refuses to start as root without this (containers often run as root).
        cmd.append("--allow-root")
    return cmd + list(extra)


def jupyter_lab_environment(environ=None):
    """The environment of `course.py launch`: jupyter-config/ first on JUPYTER_CONFIG_PATH.

    Jupyter reads its settings from every folder on its config path, the first one winning,
    so the course's settings (jupyter-config/: no news pop-up, the nbgrader parts that need
    an exchange or a course root switched off, nbgrader_config.py for Validate) apply to this
    launch only, on top of your own ~/.jupyter settings.
    """
    env = dict(os.environ if environ is None else environ)
    paths = [str(ROOT / JUPYTER_CONFIG_NAME)]
    if env.get("JUPYTER_CONFIG_PATH"):
        paths.append(env["JUPYTER_CONFIG_PATH"])
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
    return env


def launch(args, extra):
    python = setup(args.requirements, args.reinstall)
    notebooks = ROOT / "notebooks"
    if not notebooks.is_dir():
        raise CourseError(f"no notebooks folder at {notebooks}")
    if is_root():
        print("Running as root: starting JupyterLab with --allow-root "
              "(it refuses to run as root otherwise).", flush=True)
    cmd = jupyter_lab_command(python, args.no_browser, args.port, extra)
    return run(cmd, env=jupyter_lab_environment())


# pytest options whose next argument is their value, never a test path (`-k lorakit` selects
# tests by name even though lorakit/ is a folder).
PYTEST_VALUE_OPTIONS = {
    "-k", "-m", "-p", "-o", "-W", "-r", "-c", "--tb", "--maxfail", "--durations",
    "--deselect", "--ignore", "--ignore-glob", "--basetemp", "--junitxml", "--junit-xml",
    "--rootdir", "--confcutdir", "--override-ini", "--pythonwarnings", "--log-level",
    "--capture", "--import-mode", "--color", "--nbval-cell-timeout", "--nbval-kernel-name",
}


def pytest_targets(extra):
    """The arguments that are test targets: not options, not an option's value."""
    paths, after_option = [], False
    for arg in extra:
        if not after_option and not arg.startswith("-"):
            paths.append(arg)
        after_option = arg in PYTEST_VALUE_OPTIONS
    return paths


def _exists_in(folder, arg):
    return (Path(folder) / arg.split("::", 1)[0]).exists()


def _path_for(target, cwd):
    """ROOT/target as named in a command run in cwd: relative inside the repo, else absolute."""
    target = ROOT / target
    try:
        cwd.relative_to(ROOT)
    except ValueError:
        return str(target)
    return Path(os.path.relpath(target, cwd)).as_posix()


def test_commands(python, extra, cwd=None):
    """The pytest invocations for `course.py test`, as (command, directory to run it in).

    Every run happens in cwd, the directory the user typed the command in, so any path in
    the arguments means what it means there, as when running pytest by hand.
    No test paths: the tests folder, then every solution notebook under nbval; the other
    arguments (-x, -k EXPR, -m 'not slow', ...) are appended to both.
    Arguments that name a file or folder: exactly `pytest ARGS` (you chose what to run).
    """
    cwd = (Path.cwd() if cwd is None else Path(cwd)).resolve()
    pytest = [python, "-m", "pytest"]
    paths = [a for a in pytest_targets(extra) if _exists_in(cwd, a) or _exists_in(ROOT, a)]
    for arg in paths:
        if not _exists_in(cwd, arg):
            # pytest will say it is not found; say why.
            print(f"Note: {arg} is a path in the repository but not in {cwd}; "
                  "course.py test reads paths relative to the current directory.", flush=True)
    if paths:
        return [(pytest + list(extra), cwd)]
    # From the repo root, plain `pytest` runs tests/ (testpaths in pyproject.toml).
    tests = [] if cwd == ROOT else [_path_for("tests", cwd)]
    commands = [(pytest + tests + list(extra), cwd)]
    solutions = ROOT / "solutions"
    if solutions.is_dir() and any(solutions.rglob("*.ipynb")):
        where = "solutions/" if cwd == ROOT else _path_for("solutions", cwd)
        commands.append((pytest + ["--nbval-lax", where] + list(extra), cwd))
    else:
        print("No notebooks under solutions/ yet: skipping the nbval run.", flush=True)
    return commands


def test(args, extra):
    python = setup(args.requirements, args.reinstall)
    env = dict(os.environ, PYTHONHASHSEED="0")
    # MPLBACKEND is deliberately left alone: kernels inherit it, and a forced
    # non-inline backend makes the notebooks' plots vanish.
    failed = []
    for cmd, cwd in test_commands(python, extra):
        code = run(cmd, env=env, cwd=cwd)
        if code != 0:
            failed.append((format_command(cmd), code))
    if failed:
        for cmd, code in failed:
            print(f"FAILED (exit code {code}): {cmd}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- CLI

LAUNCH_EPILOG = """\
Options for jupyter lab itself go after `--`, for example:
  python3 course.py launch --no-browser -- --ServerApp.ip=0.0.0.0 --ServerApp.token=secret
Anything else before `--` is an error (a typo such as --no-brow would otherwise be passed on
and ignored). JupyterLab runs with the course's settings from jupyter-config/ and, when you
are root, with --allow-root."""

TEST_EPILOG = """\
Paths are relative to the directory you are in, as when you run pytest yourself:
  cd tests && python3 ../course.py test coursework/test_packaging.py -x"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="course.py",
        description="LoRA Lab: set up the environment, launch the course, run the tests.",
        epilog="launch takes only its own options; options for jupyter lab go after `--`\n"
               "  (python3 course.py launch -- --ServerApp.ip=0.0.0.0).\n"
               "test passes other arguments to pytest; paths are relative to the current\n"
               "  directory. `python3 course.py COMMAND -h` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.commands = {}

    def add(name, help_text, description, usage=None, epilog=None):
        p = sub.add_parser(name, help=help_text, description=description, usage=usage,
                           epilog=epilog, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument(
            "--requirements", metavar="FILE",
            help=f"requirements file to install (default: ${REQUIREMENTS_ENV} "
                 "if set, else requirements-cpu.txt)")
        p.add_argument("--reinstall", action="store_true",
                       help="run pip install even if .venv is up to date")
        parser.commands[name] = p
        return p

    add("setup", "create .venv and install everything into it",
        "Create .venv (if missing) and install the requirements into it with one pip call.")
    p = add("launch", "set up, then open the notebooks in JupyterLab",
            "Set up, then run JupyterLab on notebooks/.",
            usage="course.py launch [-h] [--requirements FILE] [--reinstall] "
                  "[--no-browser] [--port N] [-- jupyter lab options ...]",
            epilog=LAUNCH_EPILOG)
    p.add_argument("--no-browser", action="store_true", help="don't open a browser")
    p.add_argument("--port", type=int, metavar="N", help="port for the Jupyter server")
    add("test", "set up, then run the tests and the solution notebooks",
        "Set up, then run `python -m pytest` (tests/) and `python -m pytest --nbval-lax\n"
        "solutions/` in .venv. Further arguments go to pytest: options (-x, -k EXPR) are\n"
        "added to both runs; if any argument names a file or folder, only `pytest ARGS`\n"
        "runs. pytest runs in the current directory.",
        usage="course.py test [-h] [--requirements FILE] [--reinstall] [pytest args ...]",
        epilog=TEST_EPILOG)
    return parser


def known_options(subparser):
    """A subcommand's own options as shown to the user: ['--port N', '--reinstall', ...]."""
    shown = []
    for action in subparser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        name = max(action.option_strings, key=len)
        shown.append(f"{name} {action.metavar}" if action.metavar else name)
    return shown


def unknown_launch_arguments(subparser, extra):
    """The error message for arguments `launch` does not know (given before any `--`)."""
    names = [o.split()[0] for o in known_options(subparser)]
    first = extra[0]
    hint = ""
    if first.startswith("-"):
        close = difflib.get_close_matches(first.split("=", 1)[0], names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"unrecognized argument{'s' if len(extra) > 1 else ''}: {' '.join(extra)}{hint}\n"
            f"launch's options are: {', '.join(known_options(subparser))}, -h.\n"
            "Options for jupyter lab go after `--`, for example: "
            "python3 course.py launch -- --ServerApp.ip=0.0.0.0")


def main(argv=None):
    if sys.version_info < MIN_PYTHON:
        print(f"LoRA Lab needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; "
              f"this is {sys.version.split()[0]}.", file=sys.stderr)
        return 2
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passed_on = []
    if argv and argv[0] in ("launch", "setup") and "--" in argv:
        cut = argv.index("--")
        argv, passed_on = argv[:cut], argv[cut + 1:]
    args, extra = parser.parse_known_args(argv)
    command = parser.commands[args.command]
    if args.command == "setup" and (extra or passed_on):
        command.error("unrecognized arguments: " + " ".join(extra or ["--"] + passed_on))
    if args.command == "launch" and extra:
        command.error(unknown_launch_arguments(command, extra))
    try:
        if args.command == "setup":
            setup(args.requirements, args.reinstall)
            return 0
        if args.command == "launch":
            return launch(args, passed_on)
        return test(args, extra)
    except CourseError as exc:
        print(f"course.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
