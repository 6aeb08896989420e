"""course.py, the user's entry point: one pip call, never --upgrade, skip when up to date,
fail loudly, and run both test suites. Nothing here creates a venv or calls pip."""

import importlib.util
import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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

    def fake_run(cmd, env=None):
        module.calls.append(([str(c) for c in cmd], env))
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
    assert [c[3:] for c in both] == [["-x", "-k", "merge"],
                                     ["--nbval-lax", "solutions/", "-x", "-k", "merge"]]
    one = course.test_commands(py, ["tests/test_a.py::test_b", "-x"])
    assert [c[3:] for c in one] == [["tests/test_a.py::test_b", "-x"]]


def test_launch_runs_jupyterlab_on_notebooks(course):
    (course.ROOT / "notebooks").mkdir()
    assert course.main(["launch", "--no-browser", "--port", "8899"]) == 0
    cmd = course.calls[-1][0]
    assert cmd[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={course.ROOT / 'notebooks'}" in cmd
    assert "--no-browser" in cmd and "--ServerApp.port=8899" in cmd


def test_ci_run_script():
    script = ROOT / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert os.stat(script).st_mode & stat.S_IXUSR, ".ci/run must be executable"
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert "python3 course.py test" in text
