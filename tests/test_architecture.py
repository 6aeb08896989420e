"""The layout ARCHITECTURE.md draws is the layout the code has: each room of lorakit imports
only the rooms its row of the table allows, the rooms import in no circle, and no name with
a leading underscore is imported from another module (outside lorakit/checks/, whose
internals are the checks' own)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lorakit"

# room -> the rooms it may import (ARCHITECTURE.md, "Who may import whom"); "lorakit" is the
# package root (its public names and __version__), which imports conditioning and layers only
MAY_IMPORT = {
    "validate": set(),
    "provenance": set(),
    "conditioning": {"validate"},
    "layers": {"conditioning", "validate"},
    "lorakit": {"conditioning", "layers"},
    "tuning": {"layers", "validate", "lorakit"},
    "interop": {"layers", "tuning"},
    "lm": {"layers", "tuning", "provenance"},
    "datasets": {"lm", "validate"},
    "checks": {"layers", "lm", "lorakit"},
    "notebook": {"checks", "layers", "validate"},
    "experiments": {"conditioning", "datasets", "layers", "lm", "lorakit", "notebook", "provenance",
                    "tuning"},
    "tools": {"layers", "provenance"},
}


def _module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(ROOT).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, imported names) for every lorakit import in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lorakit":
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "lorakit":
                yield target, [a.name for a in node.names]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lorakit"


def _room_of_import(target: str, names: list[str]) -> list[str]:
    if target != "lorakit":
        return [_room(target)]
    subpackages = {p.stem for p in PACKAGE.iterdir() if p.is_dir() or p.suffix == ".py"}
    rooms = [n for n in names if n in subpackages]       # from lorakit import corpus-like names
    return rooms + (["lorakit"] if len(rooms) < len(names) or not names else [])


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_each_room_imports_only_what_its_row_allows(path):
    room = _room(_module_name(path))
    assert room in MAY_IMPORT, f"{room} is a room ARCHITECTURE.md does not have"
    for target, names in _imports(path):
        for other in _room_of_import(target, names):
            if other != room:
                assert other in MAY_IMPORT[room], (
                    f"{path.relative_to(ROOT)} imports {target} ({other}); {room} may import "
                    f"{sorted(MAY_IMPORT[room])} (ARCHITECTURE.md)")


def test_the_rooms_import_in_no_circle():
    seen, done = set(), set()

    def visit(room, trail):
        assert room not in seen - done, f"import circle: {' -> '.join(trail + [room])}"
        if room in done:
            return
        seen.add(room)
        for other in MAY_IMPORT[room]:
            visit(other, trail + [room])
        done.add(room)

    for room in MAY_IMPORT:
        visit(room, [])


@pytest.mark.parametrize("path", [p for p in FILES if "checks" not in p.parts],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_private_name_crosses_a_module(path):
    module = _module_name(path)
    for target, names in _imports(path):
        if target == module:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(ROOT)} imports {private} from {target}"
