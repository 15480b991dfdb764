"""The wheel set a kernel installs with ``pip install --no-index --no-deps``: kit plus what the Kaggle image lacks.

A kernel without internet cannot resolve anything, so the set must be exact: kit's own requirements are walked
recursively through the installed distributions' metadata (``importlib.metadata``), and a requirement stops the
walk where the Kaggle image already provides a version inside its specifier (the image's packages and versions,
as published, are pinned in ``kaggle_image.txt``). Everything else travels as a wheel: the one pip downloads for
the image's Python and platform, or, when the installed distribution fits the target (a pure-Python wheel, or
the same interpreter), the installed files themselves repacked with ``wheel pack`` (offline, and the exact
version kit was tested with).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from kit.errors import KitError

IMAGE_PINS = Path(__file__).with_name("kaggle_image.txt")
KIT = "kit"
# What the kernel runs: nothing from an index, nothing resolved, every wheel of the dataset as it is.
INSTALL_ARGS = ("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check")


@dataclass(frozen=True)
class ImagePins:
    """The Kaggle image: its Python (``major.minor``) and ``{canonical name: version}``."""

    python: str
    versions: dict[str, Version]

    def provides(self, requirement: Requirement) -> bool:
        pinned = self.versions.get(canonicalize_name(requirement.name))
        return pinned is not None and requirement.specifier.contains(pinned, prereleases=True)


@dataclass(frozen=True)
class Bundled:
    """One distribution that travels as a wheel, and why (``missing from the image`` / ``image has X``)."""

    name: str
    version: str
    reason: str


def read_pins(path: Path | None = None) -> ImagePins:
    """``kaggle_image.txt``: ``name==version`` lines, ``#`` comments, a ``# python: 3.12`` line."""
    path = path or IMAGE_PINS
    if not path.is_file():
        raise KitError(f"{path} (the Kaggle image's packages) is missing", "reinstall kit: the file ships with the package")
    versions: dict[str, Version] = {}
    python = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if raw.startswith("# python:"):
            python = raw.split(":", 1)[1].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise KitError(f"{path}:{number}: '{raw}' is not name==version", "pin every package of the image with ==")
        versions[canonicalize_name(name)] = Version(version.strip())
    if not python:
        raise KitError(f"{path} has no '# python: X.Y' line", "name the image's Python version in the pins file")
    return ImagePins(python, versions)


def target_environment(python: str) -> dict[str, str]:
    """Marker values of the Kaggle image (Linux, CPython ``python``), to evaluate ``; python_version < ...``."""
    env = default_environment()
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux", platform_system="Linux")
    env.update(platform_machine="x86_64", os_name="posix", implementation_name="cpython")
    env["platform_python_implementation"] = "CPython"
    return env


def kit_requirements() -> list[Requirement]:
    """kit's runtime requirements as the installed kit declares them (no extras)."""
    try:
        return [Requirement(text) for text in metadata.requires(KIT) or []]
    except metadata.PackageNotFoundError:
        raise KitError("kit is not installed, so its requirements are unknown", "pip install -e . in kit's folder") from None


def resolve(pins: ImagePins | None = None, requirements: list[Requirement] | None = None) -> list[Bundled]:
    """The distributions (besides kit) to bundle: kit's requirements, recursively, minus what the image provides."""
    pins = pins or read_pins()
    env = target_environment(pins.python)
    todo = list(kit_requirements() if requirements is None else requirements)
    bundled: dict[str, Bundled] = {}
    while todo:
        requirement = todo.pop(0)
        if requirement.marker is not None and not requirement.marker.evaluate({**env, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in bundled or pins.provides(requirement):
            continue
        try:
            installed = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise KitError(
                f"{requirement.name} (kit needs {requirement}) is neither in the Kaggle image nor installed here",
                f"pip install '{requirement}', then rerun",
            ) from None
        if not requirement.specifier.contains(installed.version, prereleases=True):
            raise KitError(
                f"{requirement.name} {installed.version} is installed but kit needs {requirement}",
                f"pip install '{requirement}', then rerun",
            )
        pinned = pins.versions.get(name)
        reason = "missing from the image" if pinned is None else f"the image has {pinned}, kit needs {requirement.specifier}"
        bundled[name] = Bundled(installed.metadata["Name"], installed.version, reason)
        todo.extend(Requirement(text) for text in installed.requires or [])
    return sorted(bundled.values(), key=lambda b: canonicalize_name(b.name))


def image_conflicts(pins: ImagePins | None = None) -> list[str]:
    """kit's requirements whose image version is outside kit's specifier and that the bundle does not carry."""
    pins = pins or read_pins()
    carried = {canonicalize_name(b.name) for b in resolve(pins)}
    conflicts = []
    for requirement in kit_requirements():
        name = canonicalize_name(requirement.name)
        pinned = pins.versions.get(name)
        if requirement.marker is None and pinned is not None and not pins.provides(requirement) and name not in carried:
            conflicts.append(f"{requirement.name}=={pinned} is outside {requirement}")
    return conflicts


# ----------------------------------------------------------------------------- making the wheels


def build_kit_wheel(out_dir: Path) -> Path:
    """Build kit's wheel from a temporary copy of the source, so the tree gets no build/ or egg-info litter."""
    from kit.config import PROJECT_ROOT

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kit-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.md", "setup.py", "MANIFEST.in", "LICENSE"):
            if (PROJECT_ROOT / name).is_file():
                shutil.copy2(PROJECT_ROOT / name, src / name)
        shutil.copytree(PROJECT_ROOT / "kit", src / "kit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # --no-build-isolation: setuptools is already here and the build must work offline.
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check"]
        result = subprocess.run([*command, "-q", "-w", str(Path(tmp) / "out"), str(src)], capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise KitError(f"building the kit wheel failed: {last}", "check that setuptools and wheel are installed")
        (wheel,) = (Path(tmp) / "out").glob("kit-*.whl")
        return Path(shutil.copy2(wheel, out_dir / wheel.name))


def _wheel_tags(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def _fits(dist: metadata.Distribution, python: str) -> bool:
    """Whether the installed files of ``dist`` are also right on the target: pure Python, this interpreter, or a
    stable-ABI (abi3) build for an older CPython on x86-64 Linux."""
    tags = _wheel_tags(dist)
    if not tags:
        return False
    if all(tag.endswith("-none-any") for tag in tags) or python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return True
    target = int(python.replace(".", ""))
    for tag in tags:
        interpreter, abi, platform = tag.split("-", 2)
        if abi == "abi3" and interpreter.startswith("cp") and int(interpreter[2:]) <= target and platform.endswith("x86_64"):
            return "linux" in platform
    return False


def repack(dist: metadata.Distribution, out_dir: Path) -> Path:
    """A wheel of the installed ``dist`` from its RECORD (``wheel pack``); scripts are regenerated at install."""
    site = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory(prefix="kit-repack-") as tmp:
        root = Path(tmp) / "unpacked"
        for file in dist.files or []:
            parts = Path(file).parts
            if not parts or parts[0] == ".." or "__pycache__" in parts or file.name in ("RECORD", "INSTALLER", "REQUESTED"):
                continue
            if file.name == "direct_url.json":
                continue
            source = Path(dist.locate_file(file))
            if source.is_file():
                target = root / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        if not any(root.glob("*.dist-info/WHEEL")):
            raise KitError(f"{dist.metadata['Name']} in {site} has no WHEEL file to repack", "pip install it from a wheel")
        out_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "wheel", "pack", "-d", str(out_dir), str(root)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise KitError(f"repacking {dist.metadata['Name']} failed: {last}", "pip install wheel, then rerun")
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    return max(out_dir.glob(f"{name}-{dist.version}-*.whl"), key=lambda p: p.stat().st_mtime)


def download(bundled: Bundled, out_dir: Path, python: str) -> Path:
    """The PyPI wheel of ``bundled`` for the image's CPython ``python`` on x86-64 Linux."""
    abi = f"cp{python.replace('.', '')}"
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out_dir)]
    command += ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    command += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64", "--platform", "any"]
    result = subprocess.run([*command, f"{bundled.name}=={bundled.version}"], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise KitError(
            f"no wheel of {bundled.name}=={bundled.version} for Python {python} on Linux ({reason})",
            "run kit kernel dataset where PyPI is reachable, or install a version that has one",
        )
    name = canonicalize_name(bundled.name).replace("-", "_")
    return next(p for p in out_dir.iterdir() if p.name.lower().startswith(f"{name}-{bundled.version}-".lower()))


def build_wheel_set(out_dir: Path, pins: ImagePins | None = None) -> list[Path]:
    """Write kit's wheel and one wheel per bundled distribution into a fresh ``out_dir``; return them, kit first."""
    pins = pins or read_pins()
    bundle = resolve(pins)  # before anything is written: a missing requirement fails here
    shutil.rmtree(out_dir, ignore_errors=True)
    wheels = [build_kit_wheel(out_dir)]
    for bundled in bundle:
        dist = metadata.distribution(bundled.name)
        wheels.append(repack(dist, out_dir) if _fits(dist, pins.python) else download(bundled, out_dir, pins.python))
    return wheels


def describe(bundle: list[Bundled]) -> str:
    return ", ".join(f"{b.name}=={b.version} ({b.reason})" for b in bundle) or "nothing beyond kit"
