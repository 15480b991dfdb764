"""The structure the code promises (docs/ARCHITECTURE.md), checked on the code itself.

- The import-linter contracts in setup.cfg hold: every module imports only from the layers below it, and no
  package has an import loop.
- No module in kit/ is over 400 lines.
- kit reaches into no other object's private attributes (``x._name`` where x is not self or cls), nor through a
  string (``getattr(x, "_name")``, or a class's table of attribute names holding one): a private name of Keras or
  TensorFlow changes without notice in a patch release, and one of ours is private for a reason.
- kit imports no private module of Keras or TensorFlow (``keras.src``, ``tensorflow.python``), directly or by name.
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
ATTRIBUTE_BY_NAME = {"getattr", "setattr", "hasattr", "delattr", "attrgetter"}
PRIVATE_MODULES = ("keras.src", "tensorflow.python")


def _modules() -> list[Path]:
    return sorted(KIT.rglob("*.py"))


def _lint_imports() -> str | None:
    beside_python = Path(sys.executable).with_name("lint-imports")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("lint-imports")


@pytest.mark.slow
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


@pytest.mark.slow
def test_no_private_attribute_of_another_object_is_used() -> None:
    found = [hit for path in _modules() for hit in _private_accesses(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "private attributes used: " + "; ".join(found)


def test_the_private_access_check_sees_one_and_allows_self() -> None:
    source = "def f(layer):\n    return layer._get_seed_generator(layer.backend)\n\n\n"
    source += "class A:\n    def g(self):\n        return self._x\n"
    assert _private_accesses(source, "sample.py") == ["sample.py:2 ._get_seed_generator"]


def _is_private_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("_")
        and value[1:2].isalpha()
        and value.isidentifier()
        and not (value.startswith("__") and value.endswith("__"))
        and value not in NAMEDTUPLE_API
    )


def _private_names_in_strings(source: str, name: str) -> list[str]:
    """Private attribute names reached through strings: ``getattr(x, "_y")`` and its kin, and private names listed
    in a class attribute (a table of fields that code later reads or sets with getattr/setattr); ``__slots__``
    declares the class's own."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in ATTRIBUTE_BY_NAME:
                found += [
                    f"{name}:{a.lineno} {called}({a.value!r})"
                    for a in node.args
                    if isinstance(a, ast.Constant) and _is_private_name(a.value)
                ]
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
                    continue
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets) or statement.value is None:
                    continue
                found += [
                    f"{name}:{c.lineno} {node.name} lists {c.value!r}"
                    for c in ast.walk(statement.value)
                    if isinstance(c, ast.Constant) and _is_private_name(c.value)
                ]
    return found


def _private_modules(source: str, name: str) -> list[str]:
    """Imports of Keras' or TensorFlow's private modules, by statement or by a module name in a string."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            modules = [node.value]
        else:
            continue
        found += [f"{name}:{node.lineno} {m}" for m in modules if m == PRIVATE_MODULES[0] or m.startswith(PRIVATE_MODULES)]
    return found


@pytest.mark.slow
def test_no_private_attribute_is_reached_through_a_string() -> None:
    found = [hit for path in _modules() for hit in _private_names_in_strings(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "private attributes reached by name: " + "; ".join(found)


@pytest.mark.slow
def test_no_private_module_of_keras_or_tensorflow_is_imported() -> None:
    found = [hit for path in _modules() for hit in _private_modules(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "private modules used: " + "; ".join(found)


def test_the_string_checks_see_what_the_attribute_check_cannot() -> None:
    """The shapes these checks exist for: a private Keras field read through a table of names, through getattr,
    and private modules imported by statement or by name; suffixes in f-strings and ``__slots__`` are not hits."""
    source = (
        "import importlib\n"
        "from keras.src.backend.config import keras_home\n"
        "import tensorflow.python.ops\n"
        "m = importlib.import_module('keras.src.applications.resnet')\n"
        "class Swap:\n"
        "    FIELDS = ('wait', '_ema_weights_in_model')\n"
        "    __slots__ = ('_url',)\n"
        "    def snapshot(self):\n"
        "        return getattr(self.cb, '_best'), f'{self.name}_conv'\n"
    )
    assert sorted(_private_names_in_strings(source, "s.py")) == [
        "s.py:6 Swap lists '_ema_weights_in_model'",
        "s.py:9 getattr('_best')",
    ]
    assert _private_modules(source, "s.py") == [
        "s.py:2 keras.src.backend.config",
        "s.py:3 tensorflow.python.ops",
        "s.py:4 keras.src.applications.resnet",
    ]
