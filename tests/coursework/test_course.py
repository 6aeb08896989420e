"""course.py, the user's entry point: one pip call, never --upgrade, skip when up to date,
fail loudly, and run both test suites. Nothing here creates a venv or calls pip."""

import importlib.util
import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def course(tmp_path, monkeypatch):
    """course.py loaded as a module, pointed at a scratch repo under tmp_path."""
    spec = importlib.util.spec_from_file_location("loralab_course", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (repo / "requirements-cpu.txt").write_text("torch==2.13.0\n-e .[dev]\n")
    venv = repo / ".venv"
    python = module.venv_python(venv)
    python.parent.mkdir(parents=True)
    python.write_text("")  # an existing venv: create_venv must not be called
    monkeypatch.setattr(module, "ROOT", repo)
    monkeypatch.setattr(module, "VENV", venv)
    monkeypatch.chdir(repo)
    monkeypatch.delenv(module.REQUIREMENTS_ENV, raising=False)
    module.calls = []
    module.cwds = []

    def fake_run(cmd, env=None, cwd=None):
        module.calls.append(([str(c) for c in cmd], env))
        module.cwds.append(Path(cwd) if cwd is not None else module.ROOT)
        return module.next_exit_codes.pop(0) if module.next_exit_codes else 0

    module.next_exit_codes = []
    monkeypatch.setattr(module, "run", fake_run)
    monkeypatch.setattr(module, "create_venv",
                        lambda venv=None: pytest.fail("create_venv called for an existing venv"))
    return module


def test_venv_python_on_posix_and_windows(course):
    venv = Path("v")
    assert course.venv_python(venv, windows=False) == venv / "bin" / "python"
    assert course.venv_python(venv, windows=True) == venv / "Scripts" / "python.exe"


def test_pip_is_one_install_call_without_upgrade(course):
    cmd = [str(c) for c in course.pip_install_command(Path("py"), Path("req.txt"))]
    assert cmd == ["py", "-m", "pip", "install", "-r", "req.txt"]
    assert not {"-U", "--upgrade", "--upgrade-strategy"} & set(cmd)
    source = (ROOT / "course.py").read_text(encoding="utf-8")
    assert '"-U"' not in source and '"--upgrade"' not in source


def test_requirements_precedence(course, tmp_path, monkeypatch):
    mine = tmp_path / "mine.txt"
    mine.write_text("torch\n")
    env_file = tmp_path / "env.txt"
    env_file.write_text("torch\n")
    assert course.resolve_requirements().name == "requirements-cpu.txt"
    monkeypatch.setenv(course.REQUIREMENTS_ENV, str(env_file))
    assert course.resolve_requirements() == env_file.resolve()
    assert course.resolve_requirements(str(mine)) == mine.resolve()


def test_chosen_requirements_file_sticks_for_later_runs(course, tmp_path):
    gpu = tmp_path / "gpu.txt"
    gpu.write_text("torch\n-e .[dev]\n")
    course.main(["setup", "--requirements", str(gpu)])
    assert course.calls[-1][0][-1] == str(gpu.resolve())
    (course.ROOT / "notebooks").mkdir()
    course.main(["launch"])  # no --requirements: keeps gpu.txt, no pip
    assert len(course.calls) == 2 and "jupyterlab" in course.calls[-1][0]
    course.main(["setup", "--requirements", "requirements-cpu.txt"])  # switch back
    assert course.calls[-1][0][-1] == str(course.ROOT / "requirements-cpu.txt")


def test_missing_requirements_file_is_a_clear_error(course):
    with pytest.raises(course.CourseError, match="requirements file not found"):
        course.resolve_requirements("nope.txt")


def test_setup_installs_once_then_skips_until_inputs_change(course):
    course.setup()
    assert len(course.calls) == 1
    assert course.calls[0][0][1:] == ["-m", "pip", "install", "-r",
                                      str(course.ROOT / "requirements-cpu.txt")]
    marker = course.read_marker()
    assert marker == dict(course.install_fingerprint(course.ROOT / "requirements-cpu.txt"),
                          complete=True)
    assert marker["requirements"] == "requirements-cpu.txt"  # relative to the repo

    course.setup()  # up to date: no pip
    assert len(course.calls) == 1

    course.setup(reinstall=True)  # forced
    assert len(course.calls) == 2

    (course.ROOT / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    course.setup()  # pyproject changed
    assert len(course.calls) == 3
    course.setup()
    assert len(course.calls) == 3


def test_failed_pip_fails_loudly_and_leaves_no_marker(course):
    course.setup()
    (course.ROOT / "requirements-cpu.txt").write_text("torch==2.13.0\n-e .[dev]\nnumpy\n")
    course.next_exit_codes = [1]
    with pytest.raises(course.CourseError, match="pip install failed"):
        course.setup()
    assert course.read_marker()["complete"] is False
    course.setup()  # tries again next time
    assert len(course.calls) == 3


def test_main_exits_non_zero_when_pip_fails(course, capsys):
    course.next_exit_codes = [1]
    assert course.main(["setup"]) == 1
    assert "pip install failed" in capsys.readouterr().err


def test_test_command_runs_tests_and_solution_notebooks(course):
    (course.ROOT / "solutions" / "01_x").mkdir(parents=True)
    (course.ROOT / "solutions" / "01_x" / "x.ipynb").write_text("{}")
    course.next_exit_codes = [0, 0, 0]  # pip, pytest, nbval
    assert course.main(["test"]) == 0
    (pip, _), (tests, env1), (nbval, env2) = course.calls
    assert tests[1:] == ["-m", "pytest"]
    assert nbval[1:] == ["-m", "pytest", "--nbval-lax", "solutions/"]
    for env in (env1, env2):
        assert env["PYTHONHASHSEED"] == "0"
        assert env.get("MPLBACKEND") == os.environ.get("MPLBACKEND")


@pytest.mark.parametrize("codes", [[0, 1, 0], [0, 0, 1]])
def test_test_command_fails_if_either_run_fails(course, codes):
    (course.ROOT / "solutions").mkdir()
    (course.ROOT / "solutions" / "a.ipynb").write_text("{}")
    course.next_exit_codes = list(codes)
    assert course.main(["test"]) != 0
    assert len(course.calls) == 3  # both runs happen even when the first fails


def test_test_arguments(course):
    (course.ROOT / "solutions").mkdir()
    (course.ROOT / "solutions" / "a.ipynb").write_text("{}")
    (course.ROOT / "tests").mkdir()
    (course.ROOT / "tests" / "test_a.py").write_text("")
    py = Path("py")
    both = course.test_commands(py, ["-x", "-k", "merge"])
    assert [c[3:] for c, _ in both] == [["-x", "-k", "merge"],
                                        ["--nbval-lax", "solutions/", "-x", "-k", "merge"]]
    assert [cwd for _, cwd in both] == [course.ROOT, course.ROOT]
    one = course.test_commands(py, ["tests/test_a.py::test_b", "-x"])
    assert [c[3:] for c, _ in one] == [["tests/test_a.py::test_b", "-x"]]
    # an option's value is not a test path, even when a folder has that name
    (course.ROOT / "lorakit").mkdir()
    named = course.test_commands(py, ["-k", "lorakit"])
    assert [c[3:] for c, _ in named] == [["-k", "lorakit"],
                                         ["--nbval-lax", "solutions/", "-k", "lorakit"]]


def test_test_paths_are_relative_to_the_current_directory(course, monkeypatch, capsys):
    """`cd tests && python3 ../course.py test test_a.py`: pytest runs in tests/, as if typed
    there, so every path in the arguments means what it means in the user's shell."""
    (course.ROOT / "solutions").mkdir()
    (course.ROOT / "solutions" / "a.ipynb").write_text("{}")
    tests = course.ROOT / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text("")
    monkeypatch.chdir(tests)
    assert course.main(["test", "test_a.py::test_b", "-x"]) == 0
    (pip, _), (pytest_run, _) = course.calls
    assert pytest_run[1:] == ["-m", "pytest", "test_a.py::test_b", "-x"]
    assert course.cwds[-1] == tests

    py = Path("py")
    # no paths, from a subfolder: both runs name their folder relative to it
    both = course.test_commands(py, ["-x"])
    assert [(c[3:], cwd) for c, cwd in both] == [([".", "-x"], tests),
                                                 (["--nbval-lax", "../solutions", "-x"], tests)]
    # a path that exists only relative to the repo root: pytest in cwd reports it missing,
    # and course.py says why
    capsys.readouterr()
    (command, cwd), = course.test_commands(py, ["tests/test_a.py"])
    assert command[3:] == ["tests/test_a.py"] and cwd == tests
    assert "relative to the current directory" in capsys.readouterr().out
    # from outside the repo: absolute paths
    outside = course.ROOT.parent / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    both = course.test_commands(py, [])
    assert [(c[3:], cwd) for c, cwd in both] == [
        ([str(tests)], outside), (["--nbval-lax", str(course.ROOT / "solutions")], outside)]


def test_launch_runs_jupyterlab_on_notebooks(course, monkeypatch):
    (course.ROOT / "notebooks").mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "/theirs")
    assert course.main(["launch", "--no-browser", "--port", "8899"]) == 0
    cmd, env = course.calls[-1]
    assert cmd[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={course.ROOT / 'notebooks'}" in cmd
    assert "--no-browser" in cmd and "--ServerApp.port=8899" in cmd
    assert course.cwds[-1] == course.ROOT
    # the course's Jupyter settings come first; the user's own config path stays
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [
        str(course.ROOT / "jupyter-config"), "/theirs"]


def test_launch_passes_only_what_follows_double_dash_to_jupyter(course):
    (course.ROOT / "notebooks").mkdir()
    assert course.main(["launch", "--no-browser", "--", "--ServerApp.ip=0.0.0.0",
                        "--no-browser", "--"]) == 0
    cmd = course.calls[-1][0]
    assert cmd[-3:] == ["--ServerApp.ip=0.0.0.0", "--no-browser", "--"]
    assert cmd.count("--no-browser") == 2


@pytest.mark.parametrize("argv, named", [
    (["launch", "--no-brow"], "--no-brow (did you mean --no-browser?)"),
    (["launch", "--prot", "8888"], "--prot 8888 (did you mean --port?)"),
    (["launch", "--ServerApp.ip=0.0.0.0"], "--ServerApp.ip=0.0.0.0"),
    (["launch", "notebook.ipynb"], "notebook.ipynb"),
])
def test_launch_rejects_unknown_arguments(course, capsys, argv, named):
    (course.ROOT / "notebooks").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        course.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized argument" in err and named in err
    for option in ("--no-browser", "--port N", "--requirements FILE", "--reinstall"):
        assert option in err
    assert "after `--`" in err
    assert course.calls == []  # neither pip nor jupyter ran


def test_setup_rejects_arguments(course, capsys):
    for argv in (["setup", "--no-browser"], ["setup", "--", "x"]):
        with pytest.raises(SystemExit):
            course.main(argv)
    assert course.calls == []


def test_help_documents_double_dash_and_paths(capsys):
    spec = importlib.util.spec_from_file_location("loralab_course_help", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module.build_parser()

    def text(p):
        return " ".join(p.format_help().split())

    assert "after `--`" in text(parser) and "after `--`" in text(parser.commands["launch"])
    assert "relative to the current directory" in text(parser)
    assert "relative to the directory you are in" in text(parser.commands["test"])


@pytest.mark.parametrize("euid", [0, 1000])
def test_launch_as_root_allows_root_and_says_so(course, monkeypatch, capsys, euid):
    (course.ROOT / "notebooks").mkdir()
    monkeypatch.setattr(course.os, "geteuid", lambda: euid, raising=False)
    assert course.main(["launch"]) == 0
    cmd = course.calls[-1][0]
    out = capsys.readouterr().out
    assert ("--allow-root" in cmd) == (euid == 0)
    assert ("--allow-root" in out) == (euid == 0)


def test_ci_run_script():
    script = ROOT / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert os.stat(script).st_mode & stat.S_IXUSR, ".ci/run must be executable"
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert "python3 course.py test" in text
