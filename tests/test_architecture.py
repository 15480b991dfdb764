"""The structure the code promises (docs/ARCHITECTURE.md), checked on the code itself.

- The import-linter contracts in setup.cfg hold: every module imports only from the layers below it, and no
  package has an import loop.
- No module in kit/ is over 400 lines.
- kit reaches into no other object's private attributes (``x._name`` where x is not self or cls): a private name of
  Keras or TensorFlow changes without notice in a patch release, and one of ours is private for a reason.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOOL_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "kit"
MAX_LINES = 400
# the public API of namedtuples, underscored only so it cannot clash with field names
NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make", "_field_defaults"}


def _modules() -> list[Path]:
    return sorted(KIT.rglob("*.py"))


def _lint_imports() -> str | None:
    beside_python = Path(sys.executable).with_name("lint-imports")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("lint-imports")


def test_import_contracts_hold() -> None:
    command = _lint_imports()
    if command is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_module_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _private_accesses(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")) or attr in NAMEDTUPLE_API:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        found.append(f"{name}:{node.lineno} .{attr}")
    return found


def test_no_private_attribute_of_another_object_is_used() -> None:
    found = [hit for path in _modules() for hit in _private_accesses(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "private attributes used: " + "; ".join(found)


def test_the_private_access_check_sees_one_and_allows_self() -> None:
    source = "def f(layer):\n    return layer._get_seed_generator(layer.backend)\n\n\n"
    source += "class A:\n    def g(self):\n        return self._x\n"
    assert _private_accesses(source, "sample.py") == ["sample.py:2 ._get_seed_generator"]
