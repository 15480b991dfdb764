"""Train and predict inside a Kaggle kernel: a bundle (metadata + script), the kit wheel dataset, push, status.

A kernel of a code competition usually has no internet, so nothing can be pip-installed from PyPI
there. kit therefore travels as a wheel in a private dataset (``<user>/kit-wheel``, published by
:func:`publish_dataset`) that the kernel attaches and installs with ``--no-deps`` (the Kaggle image
already has TensorFlow, Keras, pandas, ...). Pretrained weights travel the same way
(``<user>/kit-weights``) when ``model.weights`` is a local file.

The bundle embeds the resolved config so the kernel trains exactly what ``kit train`` would here, with
paths moved to ``/kaggle/input`` (read-only data) and ``/kaggle/working`` (records, runs, submission.csv).
A credential must never travel, however it got into a setting: every file of a bundle and of kit's wheel
is scanned for the value of each credential this machine holds (:func:`kit.kaggle.client.secret_in`)
before it is written or uploaded, and refused with one line naming the file and where the secret lives.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kit.errors import KitError
from kit.io import atomic_write, write_json
from kit.kaggle.client import WEB, api, call, dataset_url, git_commit, refuse_secrets, say, slug_name, upload_files, username

if TYPE_CHECKING:
    from kit.config import Config

BUILD_ROOT = Path("build")  # relative to the working directory, like data/ and runs/
WHEEL_DATASET = "kit-wheel"
WEIGHTS_DATASET = "kit-weights"
CODE_FILE = "kit_kernel.py"
INPUT_ROOT = "/kaggle/input"  # where Kaggle mounts a kernel's competition and datasets (read-only)
WORKING = "/kaggle/working"
NAMED_WEIGHTS = ("", "none", "imagenet")  # model.weights values that are not a file to publish


def _slugify(text: str) -> str:
    """Kaggle's slug of a title (lower case, runs of other characters become one '-')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def kernel_slug(cfg: Config) -> str:
    return f"kit-{_slugify(cfg.comp.name)}"


def kernel_ref(cfg: Config, user: str) -> str:
    return f"{user}/{kernel_slug(cfg)}"


def input_name(cfg: Config) -> str:
    """The folder name under /kaggle/input where the competition or dataset is attached."""
    return slug_name(cfg.comp.slug)


def _weights(cfg: Config, user: str) -> tuple[str | None, str]:
    """(dataset to attach or None, the weights setting inside the kernel)."""
    weights = cfg.model.weights
    if weights in NAMED_WEIGHTS:
        return None, weights
    if weights.startswith(f"{INPUT_ROOT}/"):
        return f"{user}/{Path(weights).parts[3]}", weights  # /kaggle/input/<dataset>/...
    return f"{user}/{WEIGHTS_DATASET}", f"{INPUT_ROOT}/{WEIGHTS_DATASET}/{Path(weights).name}"


def metadata(cfg: Config, user: str) -> dict[str, Any]:
    """kernel-metadata.json as ``kaggle kernels push`` reads it."""
    if cfg.comp.source not in ("competition", "dataset") or not cfg.comp.slug:
        raise KitError(
            f"{cfg.comp.name} has no Kaggle source (comp.source={cfg.comp.source}, slug='{cfg.comp.slug}')",
            "kernels need a Kaggle competition or dataset: set comp.slug and comp.source",
        )
    datasets = [f"{user}/{WHEEL_DATASET}"]
    weights_dataset, _ = _weights(cfg, user)
    if weights_dataset:
        datasets.append(weights_dataset)
    competitions: list[str] = []
    if cfg.comp.source == "competition":
        competitions.append(cfg.comp.slug)
    else:
        datasets.append(cfg.comp.slug)
    return {
        "id": kernel_ref(cfg, user),
        "title": f"kit {cfg.comp.name}",  # slugifies to the id's slug, as the client checks
        "code_file": CODE_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": bool(cfg.kaggle.kernel_internet),
        "dataset_sources": datasets,
        "competition_sources": competitions,
        "kernel_sources": [],
        "model_sources": [],
    }


def kernel_config(cfg: Config, user: str) -> dict[str, Any]:
    """The resolved config with data, records and runs moved to the kernel's folders."""
    from omegaconf import OmegaConf

    values: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[assignment]
    values["data"]["root"] = f"{INPUT_ROOT}/{input_name(cfg)}"  # the script passes the real mount on the command line
    values["data"]["records_root"] = f"{WORKING}/records"
    values["run"]["root"] = f"{WORKING}/runs"
    values["model"]["weights"] = _weights(cfg, user)[1]
    values["kaggle"]["message"] = ""
    if cfg.model.name in values["comp"]["image_sizes"]:  # the per-model size step must not undo a model.image_size=...
        values["comp"]["image_sizes"][cfg.model.name] = cfg.model.image_size
    return values


SCRIPT = '''\
"""kit in a Kaggle kernel: install the kit wheel, then records -> train -> predict -> submission.csv.

Generated by `kit kernel build`; edit the competition or model with kit, not here.
"""

import glob
import os
import shutil
import subprocess
import sys

COMP = __COMP__
INPUT = __INPUT__
WEIGHTS = __WEIGHTS__
INTERNET = __INTERNET__
CONFIG_YAML = __CONFIG__
WORKING = __WORKING__


def find_input(name):
    """Where an attached competition or dataset is mounted (the layout under /kaggle/input varies)."""
    candidates = [f"/kaggle/input/{name}", f"/kaggle/input/competitions/{name}", *glob.glob(f"/kaggle/input/datasets/*/{name}")]
    candidates += sorted(glob.glob(f"/kaggle/input/**/{name}", recursive=True))
    for path in candidates:
        if os.path.isdir(path):
            return path
    attached = sorted(glob.glob("/kaggle/input/*"))
    sys.exit(f"kit: input '{name}' is not attached to this kernel (attached: {attached}); add it in the kernel's Data panel")


def run(*args):
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


wheels = sorted(glob.glob(os.path.join(find_input(__WHEEL_DATASET__), "**", "*.whl"), recursive=True))
if not wheels:
    sys.exit("kit: no wheel in the kit-wheel dataset; run `kit kernel dataset` on your machine")
if INTERNET:
    run(sys.executable, "-m", "pip", "install", "-q", *wheels)
else:
    # No internet: TensorFlow, Keras, pandas ... come with the Kaggle image; kit's own code from the wheel.
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels)
check = subprocess.run([sys.executable, "-c", "import kit.cli"], capture_output=True, text=True)
if check.returncode != 0:
    sys.exit(
        "kit: cannot import kit here: " + check.stderr.strip().splitlines()[-1]
        + " (fix: add the missing package's wheel to the kit-wheel dataset, or set kaggle.kernel_internet=true)"
    )

config = os.path.join(WORKING, "kit-config.yaml")
data_root = find_input(INPUT)
with open(config, "w") as handle:
    handle.write(CONFIG_YAML)  # the resolved config; the paths below override its data/run folders
settings = [
    f"comp={config}",
    f"model={config}",  # merged last: the resolved config wins over every preset (hparams: tuned keys only)
    f"data.root={data_root}",
    f"data.records_root={WORKING}/records",
    f"run.root={WORKING}/runs",
]
if WEIGHTS.startswith("/kaggle/input/"):
    name, rest = WEIGHTS[len("/kaggle/input/"):].split("/", 1)
    settings.append(f"model.weights={os.path.join(find_input(name), rest)}")

for command in ("records", "train", "predict"):
    run(sys.executable, "-m", "kit", command, *settings)

found = sorted(glob.glob(f"{WORKING}/runs/{COMP}/*/*/submission.csv"), key=os.path.getmtime)
if found:
    shutil.copyfile(found[-1], f"{WORKING}/.submission.csv.tmp")  # then rename: never a half-written file
    os.replace(f"{WORKING}/.submission.csv.tmp", f"{WORKING}/submission.csv")
    print(f"kit: {found[-1]} -> {WORKING}/submission.csv")
else:
    print("kit: no submission.csv was written (a dataset without a leaderboard?)")
'''


def script(cfg: Config, user: str) -> str:
    """The kernel's Python script (values inserted as JSON literals, so quoting is never an issue)."""
    values = {  # kit's own constants first: a user's value is never scanned for their placeholders
        "__WORKING__": WORKING,
        "__WHEEL_DATASET__": WHEEL_DATASET,
        "__COMP__": cfg.comp.name,
        "__INPUT__": input_name(cfg),
        "__WEIGHTS__": _weights(cfg, user)[1],
        "__CONFIG__": yaml.safe_dump(kernel_config(cfg, user), sort_keys=False),
    }
    text = SCRIPT
    for key, value in values.items():
        text = text.replace(key, json.dumps(value))
    return text.replace("__INTERNET__", "True" if cfg.kaggle.kernel_internet else "False")


def build(cfg: Config, user: str | None = None) -> Path:
    """Write ``build/kernel/<comp>/`` with kernel-metadata.json and kit_kernel.py; return the folder.

    Both are scanned for credentials before either is written: a bundle holding one is never written.
    """
    user = user or username()
    folder = BUILD_ROOT / "kernel" / cfg.comp.name
    meta = metadata(cfg, user)
    if cfg.model.weights == "imagenet" and not cfg.kaggle.kernel_internet:
        say(
            "warning: weights=imagenet needs internet in the kernel; publish the weights file "
            "(weights=<path> + kit kernel dataset) or set kaggle.kernel_internet=true"
        )
    code = script(cfg, user)
    refuse_secrets({str(folder / "kernel-metadata.json"): json.dumps(meta), str(folder / CODE_FILE): code}, "kernel bundle")
    write_json(folder / "kernel-metadata.json", meta)
    atomic_write(folder / CODE_FILE, code)
    say(f"kernel bundle {meta['id']} written to {folder}")
    return folder


# ----------------------------------------------------------------------------- datasets


def build_wheel(out_dir: Path) -> Path:
    """Build kit's wheel from a temporary copy of the source, so the tree gets no build/ or egg-info litter."""
    from kit.config import PROJECT_ROOT

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("kit-*.whl"):
        old.unlink()
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


def _dataset_exists(client: Any, ref: str) -> bool:
    try:
        call("dataset status", client.dataset_status, ref, slug=ref, kind="dataset")
    except KitError as exc:
        if "404" in exc.message:
            return False
        raise
    return True


def _publish_folder(client: Any, folder: Path, ref: str, title: str, notes: str) -> None:
    write_json(folder / "dataset-metadata.json", {"id": ref, "title": title, "licenses": [{"name": "apache-2.0"}]})
    if _dataset_exists(client, ref):
        response = call(
            "dataset version",
            client.dataset_create_version,
            str(folder),
            notes,
            quiet=False,
            dir_mode="skip",
            slug=ref,
            kind="dataset",
        )
    else:
        response = call(
            "dataset create", client.dataset_create_new, str(folder), public=False, quiet=False, slug=ref, kind="dataset"
        )
    error = getattr(response, "error", None)
    if error:
        raise KitError(f"Kaggle refused dataset {ref}: {error}", "fix what the message names, then rerun kit kernel dataset")
    say(f"published dataset {ref}: {dataset_url(ref)}")


# kit's dependencies that Kaggle's Python image may lack; they travel in the wheel dataset so a kernel
# without internet can install them (the kernel installs every wheel of that dataset with --no-deps).
KERNEL_EXTRA_PACKAGES = ("omegaconf", "typer", "annotated-doc")


def _add_dependency_wheels(folder: Path) -> None:
    """Download pure-Python wheels of KERNEL_EXTRA_PACKAGES (the installed versions) into ``folder``."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in KERNEL_EXTRA_PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(folder), *pins]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        say(f"warning: could not add {', '.join(pins)} to the wheel dataset ({reason}); kernels without internet need them")


def publish_dataset(cfg: Config) -> list[str]:
    """Build the kit wheel and create or version ``<user>/kit-wheel`` (and ``kit-weights`` for a weights file)."""
    import kit

    client = api()
    user = username(client)
    folder = BUILD_ROOT / "wheel"
    wheel = build_wheel(folder)
    refuse_secrets(upload_files([wheel]), "wheel dataset")  # kit's code and kit/configs travel
    _add_dependency_wheels(folder)
    commit = git_commit()
    notes = f"kit {kit.__version__}" + (f" git {commit}" if commit else "")
    published = [f"{user}/{WHEEL_DATASET}"]
    _publish_folder(client, folder, published[0], "kit wheel", notes)
    say(f"wheel {wheel.name} is in {published[0]}")

    weights = Path(cfg.model.weights)
    if cfg.model.weights not in NAMED_WEIGHTS and not cfg.model.weights.startswith("/kaggle/"):
        if not weights.is_file():
            raise KitError(f"weights file {weights} does not exist", "give model.weights as an existing .weights.h5 path")
        target = BUILD_ROOT / "weights"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy2(weights, target / weights.name)
        published.append(f"{user}/{WEIGHTS_DATASET}")
        _publish_folder(client, target, published[1], "kit weights", f"{weights.name} {notes}")
    return published


# ----------------------------------------------------------------------------- kernels


def push(cfg: Config) -> str:
    """Build the bundle and push it (a new kernel version that runs on Kaggle); returns its URL."""
    client = api()
    user = username(client)
    folder = build(cfg, user)
    refuse_secrets(upload_files([folder]), "kernel bundle")  # what else the folder holds travels too: nothing pushed
    ref = kernel_ref(cfg, user)
    response = call("kernel push", client.kernels_push, str(folder), slug=ref, kind="kernel")
    if getattr(response, "error", None):
        raise KitError(f"Kaggle refused kernel {ref}: {response.error}", "fix what the message names, then rerun kit kernel push")
    invalid = [
        *getattr(response, "invalid_dataset_sources", []),
        *getattr(response, "invalid_competition_sources", []),
    ]
    if invalid:
        raise KitError(
            f"kernel {ref} refers to sources Kaggle does not know: {', '.join(invalid)}",
            "run kit kernel dataset to publish the kit wheel, and accept the competition rules",
        )
    url = getattr(response, "url", "") or f"{WEB}/code/{ref}"
    version = getattr(response, "version_number", None)
    print(f"pushed {ref}" + (f" version {version}" if version else "") + f": {url}")
    return url


def status(cfg: Config) -> str:
    """Print and return the kernel's status (queued, running, complete, error, ...)."""
    client = api()
    ref = kernel_ref(cfg, username(client))
    response = call("kernel status", client.kernels_status, ref, slug=ref, kind="kernel")
    state = getattr(response.status, "name", str(response.status)).lower()
    failure = getattr(response, "failure_message", None)
    print(f"{ref}: {state}" + (f" ({failure})" if failure else ""))
    if state == "complete":
        say(f"outputs: kaggle kernels output {ref} -p <folder>")
    return state
