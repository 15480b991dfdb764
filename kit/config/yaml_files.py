"""Reading a settings YAML file as untrusted input: a regular file of bounded size, a bounded expanded size (no
alias bomb, no recursive alias), only known top-level sections, and no OmegaConf resolver such as
``${oc.env:KAGGLE_KEY}`` (a file must not pull the environment, and so a credential, into the settings that
``kit config`` prints and a kernel bundle carries). ``${comp.name}``-style references between settings stay.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from kit.errors import KitError, nearest

MAX_YAML_BYTES = 1_000_000  # a settings file; the presets are under 3 KB
MAX_YAML_NODES = 5_000  # scalars, lists and mappings that aliases may add by repeating others; the presets have none
MAX_YAML_DEPTH = 32  # nesting of lists and mappings; the presets go 4 deep, merging recurses per level
# ${a.b}, ${.sibling}, ${..parent.x}: a reference to another setting. Anything else in ${...} is a resolver call.
SETTING_REFERENCE = re.compile(r"\$\{\.*[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\}")


def read_text_capped(path: Path, what: str) -> str:
    """The text of a regular file of at most MAX_YAML_BYTES. Opened without blocking and checked on the open
    descriptor, so a FIFO (whose open would wait for a writer), a device or a folder is refused, never read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KitError(f"{what} {path} does not exist", "give an existing YAML file") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise KitError(f"{what} {path} is not a regular file", "give a YAML file, not a pipe, device or folder")
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    check_yaml_bytes(len(data), path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KitError(f"{what} {path} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None


def check_yaml_bytes(size: int, path: Path | str, what: str) -> None:
    if size > MAX_YAML_BYTES:
        raise KitError(
            f"{what} {path} is over {MAX_YAML_BYTES} bytes",
            "a settings file is a few KB; if yours must be larger, raise MAX_YAML_BYTES in kit/config/yaml_files.py",
        )


def too_deep(path: Path) -> KitError:
    return KitError(
        f"{path}: lists and mappings nested over {MAX_YAML_DEPTH} deep",
        "flatten the file; if it must be deeper, raise MAX_YAML_DEPTH in kit/config/yaml_files.py",
    )


def written_nodes(node: yaml.Node) -> int:
    """Nodes the text itself holds: every node once, however many aliases point at it."""
    seen: set[int] = set()
    waiting = [node]
    while waiting:
        current = waiting.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            waiting.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            waiting.extend(part for pair in current.value for part in pair)
    return len(seen)


def expanded_size(
    node: yaml.Node, path: Path, sizes: dict[int, int], open_nodes: set[int], depth: int = 0, limit: int = MAX_YAML_NODES
) -> int:
    """Nodes in ``node`` with every alias expanded, memoised per node so a bomb is measured without expanding it;
    over ``limit`` is one KitError."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise KitError(f"{path}: a YAML alias refers to a mapping or list that contains it", "remove the recursive alias")
    if depth > MAX_YAML_DEPTH:
        raise too_deep(path)
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(expanded_size(child, path, sizes, open_nodes, depth + 1, limit) for child in children)
    open_nodes.discard(key)
    sizes[key] = size
    if size > limit:
        raise KitError(
            f"{path}: aliases expand it to over {limit} YAML nodes, {MAX_YAML_NODES} more than it holds",
            "remove the repeated aliases; if the file is genuinely that large, raise MAX_YAML_NODES in kit/config/yaml_files.py",
        )
    return size


def resolver_calls(data: Any, prefix: str = "") -> tuple[str, str] | None:
    """The first (dotted key, value) whose text holds an interpolation that is not a reference to a setting."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = resolver_calls(str(key), f"{prefix}{key}.") or resolver_calls(value, f"{prefix}{key}.")
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = resolver_calls(value, f"{prefix}{i}.")
            if found:
                return found
    elif isinstance(data, str) and "${" in SETTING_REFERENCE.sub("", data):
        return prefix.rstrip("."), data
    return None


def refuse_resolvers(data: Any, origin: str) -> None:
    """One line naming the origin and key of a value calling an OmegaConf resolver (oc.env, oc.decode, ...)."""
    found = resolver_calls(data)
    if found:
        key, _ = found  # the value is not shown: it names what it would read, and that is all we need to say
        raise KitError(
            f"{origin}: setting '{key}' uses a ${{...}} resolver; settings may only refer to other settings, e.g. ${{comp.name}}",
            "write the value itself (credentials belong in ~/.kaggle/kaggle.json, never in settings)",
        )


def read_yaml(path: Path, sections: list[str], what: str = "config file") -> dict:
    """A settings file as a nested mapping: regular, bounded, no alias bomb, only the ``sections`` at the top
    (checked before any merge). Resolvers are refused where every source of settings meets: ``loading.merge``."""
    return parse_yaml(read_text_capped(Path(path), what), Path(path), sections)


def parse_yaml(text: str, path: Path, sections: list[str]) -> dict:
    """Settings YAML text as a nested mapping, within the node and depth budgets: a large list written out (6,000
    class names) is fine, aliases may add at most MAX_YAML_NODES to what the text holds."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            expanded_size(node, path, {}, set(), limit=written_nodes(node) + MAX_YAML_NODES)
        data = loader.construct_document(node) if node is not None else {}
    except RecursionError:  # PyYAML composes nested nodes recursively: a file of 100000 '[' ends here
        raise too_deep(path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise KitError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})", "fix the YAML syntax") from None
    finally:
        loader.dispose()
    data = data or {}
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a mapping of settings at the top", "see configs/ for examples")
    unknown = [str(key) for key in data if key not in sections]
    if unknown:
        raise KitError(f"{path}: unknown setting '{unknown[0]}'", f"did you mean {' or '.join(nearest(unknown[0], sections))}?")
    return data
