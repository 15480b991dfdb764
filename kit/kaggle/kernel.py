"""Train or predict inside a Kaggle kernel: a bundle (metadata + script), the datasets it attaches, push.

A kernel of a code competition usually has no internet, so nothing can be pip-installed from PyPI there.
kit therefore travels as wheels in a private dataset (``<user>/kit-wheel``, published by
:func:`publish_dataset`): kit's own wheel and exactly the distributions the Kaggle image lacks
(:mod:`kit.kaggle.wheels`), installed with ``pip install --no-index --no-deps``. Pretrained weights travel
the same way (``<user>/kit-weights``) when ``model.weights`` is a local file, a keras-hub row's preset as the Kaggle
Model it is published as (``model_sources``); a build whose settings need the internet in a kernel without it is
refused with the fix (:func:`internet_needs`).

Two kernels: the training kernel (the default) embeds the resolved config and runs records -> train ->
predict; the inference kernel (``--from-run``) attaches ``<user>/kit-model-<comp>``, the trained runs packed by
:mod:`kit.kaggle.model_dataset`, and only builds the test records and predicts (code competitions rerun it on
the hidden test set). The script itself is :mod:`kit.kaggle.kernel_script`.

A credential must never travel, however it got into a setting: every file of a bundle and of each dataset is
scanned for the value of each credential this machine holds (:func:`kit.secrets.secret_in`) before it is
written or uploaded, and refused with one line naming the file and where the secret lives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kit.config import git_commit
from kit.errors import KitError
from kit.io import atomic_write, read_json, write_json
from kit.kaggle import kernel_script, model_dataset, wheels
from kit.kaggle.client import WEB, api, call, dataset_url, refuse_secrets, say, slug_name, upload_files, username
from kit.models.hub_backbones import hub_row
from kit.models.hub_presets import PRESET_WORDS

if TYPE_CHECKING:
    from kit.config import Config

BUILD_ROOT = Path("build")  # relative to the working directory, like data/ and runs/
WHEEL_DATASET = "kit-wheel"
WEIGHTS_DATASET = "kit-weights"
CODE_FILE = kernel_script.CODE_FILE
INPUT_ROOT = "/kaggle/input"  # where Kaggle mounts a kernel's competition and datasets (read-only)
WORKING = "/kaggle/working"  # the kernel's output (size-limited): submission.csv, the best model, metrics
TEMP = "/kaggle/temp"  # the kernel's scratch space: records, run folders
NAMED_WEIGHTS = ("", "none", "imagenet", "preset")  # model.weights values that are not a file to publish
OWNER_HINT = "pass --owner <your Kaggle user name>, or export KAGGLE_USERNAME"


def _slugify(text: str) -> str:
    """Kaggle's slug of a title (lower case, runs of other characters become one '-')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def kernel_slug(cfg: Config, inference: bool = False) -> str:
    return f"kit-{_slugify(cfg.comp.name)}" + ("-predict" if inference else "")


def kernel_ref(cfg: Config, user: str, inference: bool = False) -> str:
    return f"{user}/{kernel_slug(cfg, inference)}"


def bundle_folder(cfg: Config, inference: bool = False) -> Path:
    """Where the bundle of the training kernel (or with ``inference`` the --from-run one) is written."""
    return BUILD_ROOT / "kernel" / (cfg.comp.name + ("-predict" if inference else ""))


def model_dataset_ref(cfg: Config, user: str) -> str:
    """The dataset holding the trained runs an inference kernel predicts with."""
    return f"{user}/kit-model-{_slugify(cfg.comp.name)}"


def input_name(cfg: Config) -> str:
    """The folder name under /kaggle/input where the competition or dataset is attached."""
    return slug_name(cfg.comp.slug)


def owner(name: str | None = None) -> str:
    """Whose kernel: ``--owner``, else $KAGGLE_USERNAME, else the credentials' user; no credentials needed to build."""
    name = name or os.environ.get("KAGGLE_USERNAME")
    if name:
        return name
    try:
        return username()
    except KitError as exc:
        raise KitError(f"cannot tell whose kernel this is ({exc.message})", OWNER_HINT) from None


def _weights(cfg: Config, user: str) -> tuple[str | None, str]:
    """(dataset to attach or None, the weights setting inside the kernel)."""
    weights = cfg.model.weights
    if weights in NAMED_WEIGHTS:
        return None, weights
    if weights.startswith(f"{INPUT_ROOT}/"):
        return f"{user}/{Path(weights).parts[3]}", weights  # /kaggle/input/<dataset>/...
    return f"{user}/{WEIGHTS_DATASET}", f"{INPUT_ROOT}/{WEIGHTS_DATASET}/{Path(weights).name}"


def internet_needs(cfg: Config, inference: bool = False) -> list[tuple[str, str]]:
    """(what in ``cfg`` needs the internet inside a kernel, its fix); [] when the kernel runs offline."""
    needs = []
    # An inference kernel's best.keras holds every weight; a keras-hub preset comes attached (model_sources).
    if not inference and cfg.model.weights == "imagenet" and not model_sources(cfg):
        needs.append(
            (
                "model.weights=imagenet downloads the weights",
                "attach a weights dataset (weights=/kaggle/input/<dataset>/<file>.weights.h5, or weights=<local file> "
                "then kit kernel dataset)",
            )
        )
    for key, value in (("data.records_root", cfg.data.records_root), ("run.root", cfg.run.root)):
        if "://" in str(value):
            needs.append((f"{key}={value} is a remote store", f"leave {key} unset for kernels"))
    return needs


def model_sources(cfg: Config, inference: bool = False) -> list[str]:
    """The Kaggle Models a training kernel attaches: a keras-hub row's own preset, by its handle; Kaggle mounts it
    where :func:`kit.models.hub_presets.find_preset` looks (``/kaggle/input/<model>/keras/<variation>/<version>``)."""
    row = hub_row(cfg.model.name)
    wants_preset = str(cfg.model.weights).strip().lower() in PRESET_WORDS
    return [row.handle] if row is not None and wants_preset and not inference else []


def check_offline(cfg: Config, inference: bool = False) -> None:
    """A KitError when the kernel has no internet (kaggle.kernel_internet=false) but its settings need it."""
    needs = internet_needs(cfg, inference)
    if needs and not cfg.kaggle.kernel_internet:
        raise KitError(
            f"the kernel runs without internet but {'; '.join(what for what, _ in needs)}",
            f"{'; '.join(fix for _, fix in needs)}; or build with --internet (kaggle.kernel_internet=true) if the "
            "competition allows it",
        )


def metadata(cfg: Config, user: str, inference: bool = False) -> dict[str, Any]:
    """kernel-metadata.json as ``kaggle kernels push`` reads it."""
    if cfg.comp.source not in ("competition", "dataset") or not cfg.comp.slug:
        raise KitError(
            f"{cfg.comp.name} has no Kaggle source (comp.source={cfg.comp.source}, slug='{cfg.comp.slug}')",
            "kernels need a Kaggle competition or dataset: set comp.slug and comp.source",
        )
    datasets = [f"{user}/{WHEEL_DATASET}"]
    weights_dataset = model_dataset_ref(cfg, user) if inference else _weights(cfg, user)[0]
    if weights_dataset:
        datasets.append(weights_dataset)
    competitions: list[str] = []
    if cfg.comp.source == "competition":
        competitions.append(cfg.comp.slug)
    else:
        datasets.append(cfg.comp.slug)
    accelerator = str(cfg.kaggle.kernel_accelerator)
    meta = {
        "id": kernel_ref(cfg, user, inference),
        "title": f"kit {cfg.comp.name}" + (" predict" if inference else ""),  # slugifies to the id's slug
        "code_file": CODE_FILE,
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": accelerator == "gpu",
        "enable_tpu": accelerator == "tpu",
        "enable_internet": bool(cfg.kaggle.kernel_internet),
        "dataset_sources": datasets,
        "competition_sources": competitions,
        "kernel_sources": [],
        "model_sources": model_sources(cfg, inference),
    }
    if cfg.kaggle.kernel_machine_shape:
        meta["machine_shape"] = cfg.kaggle.kernel_machine_shape  # read by kaggle's kernels_push (2.x)
    return meta


def kernel_config(cfg: Config, user: str) -> dict[str, Any]:
    """The resolved config with data, records and runs moved to the kernel's folders."""
    from omegaconf import OmegaConf

    values: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[assignment]
    values["data"]["root"] = f"{INPUT_ROOT}/{input_name(cfg)}"  # the script passes the real mount on the command line
    values["data"]["records_root"] = f"{TEMP}/records"
    values["run"]["root"] = f"{TEMP}/runs"
    values["model"]["weights"] = _weights(cfg, user)[1]
    values["kaggle"]["message"] = ""
    if cfg.model.name in values["comp"]["image_sizes"]:  # the per-model size step must not undo a model.image_size=...
        values["comp"]["image_sizes"][cfg.model.name] = cfg.model.image_size
    return values


def config_yaml(values: dict[str, Any]) -> str:
    """The config as block YAML, one setting a line (long strings unwrapped)."""
    return yaml.safe_dump(values, sort_keys=False, width=1 << 16, allow_unicode=True)


def script(cfg: Config, user: str) -> str:
    """The training kernel's script."""
    return kernel_script.script(
        comp=cfg.comp.name,
        input_name=input_name(cfg),
        wheel_dataset=WHEEL_DATASET,
        time_limit_s=round(cfg.comp.kernel_hours * 3600),
        config_yaml=config_yaml(kernel_config(cfg, user)),
        weights=_weights(cfg, user)[1],
    )


def _inference_parts(cfg: Config, user: str, runs: Sequence[Path], folder: Path) -> tuple[str, str]:
    """Pack the runs into ``folder`` (the model dataset); return the inference script and a line about it."""
    from kit.run_model import load_model, run_config
    from kit.runs import expand_runs

    for member in expand_runs(runs):  # each checked as kit predict will check it in the kernel: nothing unusable packed
        run_config(cfg, member)
        load_model(member)
    run_cfg = run_config(cfg, runs[0])  # the first run's model and classes: what the kernel's config says
    threshold = model_dataset.chosen_threshold(run_cfg.binary, run_cfg.predict.threshold, runs)
    names = model_dataset.pack(runs, folder, threshold, cfg.comp.name)
    values = kernel_config(run_cfg, user)
    if threshold is not None:
        values["predict"]["threshold"] = repr(threshold)  # fixed here: the kernel needs no threshold.json
    code = kernel_script.script(
        comp=cfg.comp.name,
        input_name=input_name(cfg),
        wheel_dataset=WHEEL_DATASET,
        time_limit_s=round(cfg.comp.kernel_hours * 3600),
        config_yaml=config_yaml(values),
        runs=names,
        model_dataset=slug_name(model_dataset_ref(cfg, user)),
    )
    auto = str(run_cfg.predict.threshold).strip().lower() == "auto"
    source = "the runs' threshold.json, chosen on their val/OOF rows" if auto else "predict.threshold"
    cut = f", threshold {threshold:.4f} from {source}" if threshold is not None else ""
    return code, f"{len(names)} run(s) packed in {folder} for {model_dataset_ref(cfg, user)}{cut}"


def build(cfg: Config, user: str | None = None, runs: Sequence[Path] | None = None) -> Path:
    """Write ``build/kernel/<comp>[-predict]/`` with kernel-metadata.json and kit_kernel.py; return the folder.

    With ``runs`` (trained run dirs) the kernel only predicts, and the runs are packed in ``build/model/<comp>/``
    (the dataset :func:`push` publishes). Everything is scanned for credentials before the bundle is written.
    """
    user = owner(user)
    inference = bool(runs)
    check_offline(cfg, inference)
    meta = metadata(cfg, user, inference)
    folder = bundle_folder(cfg, inference)
    files: dict[str, str | bytes] = {}
    if runs:
        models = BUILD_ROOT / "model" / cfg.comp.name
        code, packed = _inference_parts(cfg, user, list(runs), models)
        files.update(upload_files([models]))
    else:
        code, packed = script(cfg, user), ""
    files |= {str(folder / "kernel-metadata.json"): json.dumps(meta), str(folder / CODE_FILE): code}
    try:
        refuse_secrets(files, "kernel bundle")
    except KitError:
        shutil.rmtree(BUILD_ROOT / "model" / cfg.comp.name, ignore_errors=True)  # a packed run holding one: never kept
        raise
    write_json(folder / "kernel-metadata.json", meta)
    atomic_write(folder / CODE_FILE, code)
    if packed:
        say(packed)
    say(f"kernel bundle {meta['id']} written to {folder}")
    return folder


# ----------------------------------------------------------------------------- datasets


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


def publish_dataset(cfg: Config) -> list[str]:
    """Build the wheel set and create or version ``<user>/kit-wheel`` (and ``kit-weights`` for a weights file)."""
    from kit.version import __version__

    client = api()
    user = username(client)
    folder = BUILD_ROOT / "wheel"
    pins = wheels.read_pins()
    say(f"wheels for the Kaggle image (Python {pins.python}): kit + {wheels.describe(wheels.resolve(pins))}")
    built = wheels.build_wheel_set(folder, pins)
    refuse_secrets(upload_files([built[0]]), "wheel dataset")  # kit's code and kit/configs travel
    commit = git_commit()
    notes = f"kit {__version__}" + (f" git {commit}" if commit else "")
    published = [f"{user}/{WHEEL_DATASET}"]
    _publish_folder(client, folder, published[0], "kit wheel", notes)
    say(f"{', '.join(w.name for w in built)} are in {published[0]}")

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


@dataclass(frozen=True)
class Pushed:
    """A kernel version kit pushed; what ``kit kernel status --wait`` and ``kit submit --kernel`` follow by default."""

    ref: str  # owner/slug
    version: int | None  # None when Kaggle's answer did not say
    url: str
    time_limit_s: int  # the session limit it was pushed with (comp.kernel_hours)


def pushed_record(cfg: Config, inference: bool = False) -> Path:
    """The record of the last version pushed from here, beside the bundle (never inside it: the bundle is uploaded)."""
    folder = bundle_folder(cfg, inference)
    return folder.with_name(folder.name + ".pushed.json")


def last_pushed(cfg: Config, inference: bool = False) -> Pushed | None:
    """The version of this kernel that kit pushed last from this folder; None when there is none (or no readable record)."""
    try:
        return Pushed(**read_json(pushed_record(cfg, inference)))
    except (OSError, ValueError, TypeError):
        return None


def push(cfg: Config, user: str | None = None, runs: Sequence[Path] | None = None) -> Pushed:
    """Build the bundle and push it (a new kernel version that runs on Kaggle); returns what was pushed.

    With ``runs`` the packed runs are published first as ``<user>/kit-model-<comp>`` (created or versioned).
    """
    client = api()
    user = user or username(client)
    folder = build(cfg, user, runs)
    refuse_secrets(upload_files([folder]), "kernel bundle")  # what else the folder holds travels too: nothing pushed
    if runs:
        models = BUILD_ROOT / "model" / cfg.comp.name
        refuse_secrets(upload_files([models]), "model dataset")
        ref = model_dataset_ref(cfg, user)
        _publish_folder(client, models, ref, f"kit model {cfg.comp.name}", f"runs {', '.join(str(r) for r in runs)}")
    ref = kernel_ref(cfg, user, bool(runs))
    timeout = round(cfg.comp.kernel_hours * 3600)  # the session's limit (comp.kernel_hours)
    response = call("kernel push", client.kernels_push, str(folder), str(timeout), slug=ref, kind="kernel")
    if getattr(response, "error", None):
        raise KitError(f"Kaggle refused kernel {ref}: {response.error}", "fix what the message names, then rerun kit kernel push")
    invalid = [
        *getattr(response, "invalid_dataset_sources", []),
        *getattr(response, "invalid_competition_sources", []),
        *getattr(response, "invalid_model_sources", []),
    ]
    if invalid:
        raise KitError(
            f"kernel {ref} refers to sources Kaggle does not know: {', '.join(invalid)}",
            "run kit kernel dataset to publish the kit wheel, and accept the competition rules",
        )
    version = getattr(response, "version_number", None)
    pushed = Pushed(ref, version, getattr(response, "url", "") or f"{WEB}/code/{ref}", timeout)
    write_json(pushed_record(cfg, bool(runs)), asdict(pushed))
    print(f"pushed {ref}" + (f" version {version}" if version else "") + f": {pushed.url}")
    return pushed
