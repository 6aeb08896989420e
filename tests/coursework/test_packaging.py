"""The dependency lists agree: pyproject.toml (pip users), environment.yml (conda users),
and requirements-cpu.txt (what `python3 course.py setup` installs). A built wheel holds the
package data (the corpus archive and its licence)."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PINNED_TORCH = "2.13.0"


def _key(requirement_text):
    """(normalised name, normalised version spec) of one requirement string."""
    req = Requirement(requirement_text)
    spec = ",".join(sorted(str(s) for s in SpecifierSet(str(req.specifier))))
    return canonicalize_name(req.name), spec


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pyproject_requirements():
    project = _pyproject()["project"]
    texts = list(project["dependencies"])
    texts += project["optional-dependencies"]["dev"]
    return {_key(t) for t in texts}


def environment_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    found = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"unexpected mapping in environment.yml: {dep}"
            for line in dep["pip"]:
                line = str(line).strip()
                if line.startswith("-"):  # -e . (lorakit itself) and pip options
                    continue
                found.add(_key(line))
            continue
        name = re.split(r"[\s=<>!~]", str(dep).strip(), maxsplit=1)[0]
        if canonicalize_name(name) in {"python", "pip"}:
            continue
        # Any other conda package must be written in a form pip would also accept.
        found.add(_key(str(dep)))
    return found


def _describe(pairs):
    return "\n".join(f"    {name} {spec or '(any version)'}" for name, spec in sorted(pairs))


def test_environment_yml_matches_pyproject():
    in_pyproject = pyproject_requirements()
    in_environment = environment_requirements()
    only_pyproject = in_pyproject - in_environment
    only_environment = in_environment - in_pyproject
    message = ["environment.yml and pyproject.toml (dependencies + dev extra) differ."]
    if only_pyproject:
        message.append("  In pyproject.toml only:\n" + _describe(only_pyproject))
    if only_environment:
        message.append("  In environment.yml only:\n" + _describe(only_environment))
    message.append("  Update both files so they list the same packages and version bounds.")
    assert in_pyproject == in_environment, "\n".join(message)


def test_environment_yml_uses_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert "python=3.11" in env["dependencies"]


def _requirements_cpu_lines():
    lines = []
    for line in (ROOT / "requirements-cpu.txt").read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_requirements_cpu_pins_torch_and_installs_project_in_one_file():
    lines = _requirements_cpu_lines()
    torch_lines = [line for line in lines if not line.startswith("-")
                   and canonicalize_name(Requirement(line).name) == "torch"]
    assert torch_lines == [f"torch=={PINNED_TORCH}"], (
        f"requirements-cpu.txt must pin torch=={PINNED_TORCH} exactly once, found {torch_lines}")
    assert "-e .[dev]" in lines, "requirements-cpu.txt must install the project: -e .[dev]"
    for line in lines:
        assert not re.match(r"^(-U|--upgrade)\b", line), f"no --upgrade in requirements: {line}"


def test_pyproject_torch_is_a_range_that_admits_the_pinned_build():
    deps = [Requirement(t) for t in _pyproject()["project"]["dependencies"]]
    torch = [r for r in deps if canonicalize_name(r.name) == "torch"]
    assert len(torch) == 1, "pyproject.toml must list torch once in [project] dependencies"
    spec = torch[0].specifier
    assert all(s.operator not in ("==", "===") for s in spec), (
        f"keep torch a range in pyproject.toml (pin it in requirements-cpu.txt), got {spec}")
    assert spec.contains(PINNED_TORCH), (
        f"pyproject's torch range {spec} must admit the pinned torch {PINNED_TORCH}")
    assert spec.contains(f"{PINNED_TORCH}+cpu"), "the range must admit local builds (+cpu)"


def test_pytest_markers_registered():
    markers = _pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    names = {m.split(":", 1)[0].strip() for m in markers}
    assert {"slow", "gpu"} <= names


@pytest.mark.slow
def test_wheel_ships_the_corpus_and_its_licence(tmp_path):
    """A built wheel holds the notebooks' corpus archive, its PSF licence and its README
    (pyproject.toml's package-data and license-files)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"                 # build a copy: setuptools writes build/ and egg-info
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "ATTRIBUTION.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "course")
    for package in ("lorakit", "autograde"):
        shutil.copytree(ROOT / package, src / package, ignore=skip)
    out = tmp_path / "dist"
    out.mkdir()
    built = subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])",
         str(out)], cwd=src, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel, = out.glob("lorakit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("corpus.tar.xz", "corpus-LICENSE.txt", "corpus-README.md",
                  "tinylm.json", "tinylm.safetensors"):
        assert f"lorakit/lm/assets/{asset}" in names, asset
    assert any(n.endswith("licenses/lorakit/lm/assets/corpus-LICENSE.txt") for n in names), (
        "the corpus licence is one of the wheel's licence files")
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("lorakit/lm/assets/corpus.tar.xz")
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT AND PSF-2.0" in metadata
    assert shipped == (ROOT / "lorakit" / "lm" / "assets" / "corpus.tar.xz").read_bytes()
