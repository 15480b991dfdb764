"""Typed configuration: dataclasses below, filled from YAML files and ``key=value`` overrides.

Merge order (later wins)::

    defaults in this file
      <- configs/competitions/<comp>.yaml      (or any YAML path given as comp=...)
      <- configs/models/<model>.yaml
      <- the competition's per-model image size (comp.image_sizes.<model>)
      <- hparams=<best_hparams.yaml>           (written by ``kit tune``)
      <- key=value overrides from the command line

A competition or model YAML is a partial top-level config, so a model file may also set
``train:`` or ``augment:`` values. OmegaConf checks every key, type and choice against the dataclasses;
we turn its errors into one-line :class:`~kit.errors.KitError` messages with the nearest valid keys or values.
Declaration only: the checks that need the model registry or the search space are in :mod:`kit.settings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, EnumNode, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from kit.errors import KitError, nearest, unknown_choice

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIRS = [PROJECT_ROOT / "configs", Path(__file__).resolve().parent / "configs"]

# The settings with a fixed set of values. OmegaConf checks Enum fields on every merge (presets, hparams, command
# line, a run's config.yaml). Each member is named as its value, so it equals, hashes, prints and saves as that
# text: ``cfg.augment.mode == "online"`` and lookups by name keep working, and config.yaml reads ``mode: online``.
Source = StrEnum("Source", "competition dataset local")
Metric = StrEnum("Metric", "accuracy f1 macro_f1")
LabelFormat = StrEnum("LabelFormat", "index name probability")
ImageFormat = StrEnum("ImageFormat", "auto raw png jpeg")  # auto: raw pixels up to 128 px, else png
AugmentMode = StrEnum("AugmentMode", "online offline none")
AugmentLibrary = StrEnum("AugmentLibrary", "keras keras_cv")
Flip = StrEnum("Flip", "none horizontal vertical both")
Optimizer = StrEnum("Optimizer", "adam adamw sgd")
LrSchedule = StrEnum("LrSchedule", "constant plateau cosine cosine_restarts")
MixedPrecision = StrEnum("MixedPrecision", "auto off float16 bfloat16")
DistributionStrategy = StrEnum("DistributionStrategy", "auto cpu gpu mirrored multiworker tpu")
TunerKind = StrEnum("TunerKind", "hyperband random bayesian")


@dataclass
class TableConfig:
    """Where one split's examples are listed: a CSV, or a folder (of class folders or of images)."""

    csv: str = ""  # CSV file relative to data.root; empty: use ``dir``
    dir: str = ""  # folder of class sub-folders (labelled) or of images (unlabelled)
    id_column: str = ""  # column with the example id; empty: the path column is the id
    path_column: str = ""  # column with a file path relative to data.root/image_dir
    label_column: str = ""  # column with the label (name or index); empty: unlabelled
    image_dir: str = ""  # folder the ids or paths are relative to, under data.root
    image_ext: str = ""  # appended to ids that lack it, e.g. ".png"


@dataclass
class SubmissionConfig:
    id_column: str = "id"
    label_column: str = "label"
    label_format: LabelFormat = LabelFormat.index


@dataclass
class CompetitionConfig:
    name: str = "demo"
    slug: str = ""  # Kaggle competition slug or dataset "owner/name"
    source: Source = Source.competition
    train: TableConfig = field(default_factory=TableConfig)
    val: TableConfig = field(default_factory=TableConfig)  # optional separate validation set
    test: TableConfig = field(default_factory=TableConfig)
    sample_submission: str = ""  # relative to data.root; the reference for validating a submission
    solution: str = ""  # hidden test labels (demo only), CSV with submission columns
    classes: list[str] = field(default_factory=list)  # names in label-index order; empty: inferred
    metric: Metric = Metric.accuracy
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    image_sizes: dict[str, int] = field(default_factory=dict)  # per model name, overrides model.image_size


@dataclass
class ModelConfig:
    name: str = "resnet20"
    image_size: int = 32
    weights: str = "none"  # imagenet | none | <path to .weights.h5> (pretrained models only)
    dropout: float = 0.0
    dense_units: int = 0  # hidden units in the head; 0: none
    l2: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # architecture-specific, checked by the builder


@dataclass
class DataConfig:
    root: str = "data/raw/${comp.name}"  # where the competition's files are (/kaggle/input/... in a kernel)
    records_root: str = "data/records"  # records go to <records_root>/<comp>/<image_size>/
    val_fraction: float = 0.2
    seed: int = 42
    folds: int = 0  # >1: stratified k-fold column in the index
    shard_mb: float = 100  # target TFRecord shard size in MB (fractions allowed, e.g. for tests)
    workers: int = 0  # 0: all cores
    image_format: ImageFormat = ImageFormat.auto  # how records store images
    jpeg_quality: int = 95


@dataclass
class AugmentConfig:
    mode: AugmentMode = AugmentMode.online
    library: AugmentLibrary = AugmentLibrary.keras
    flip: Flip = Flip.horizontal
    rotation: float = 0.0  # fraction of a full turn, as keras.layers.RandomRotation(factor)
    translate: float = 0.0  # whole-pixel shifts up to this fraction of the side, reflected at the border (pad-and-crop)
    color_jitter: float = 0.0  # 0..1 strength of brightness/contrast/saturation/hue jitter
    cutmix: float = 0.0  # probability that a batch (online) or a copy (offline) is CutMixed
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) for the mixed area
    offline_copies: int = 1  # offline: augmented copies of the training set baked into the records
    jit_compile: bool = True  # online, library=keras: flips, jitter and CutMix as one XLA kernel (false: plain TF ops)
    seed: int = 1337


@dataclass
class FineTuneConfig:
    epochs: int = 0  # phase 2 epochs; 0: no phase 2
    learning_rate: float = 1e-5
    unfreeze: int = -1  # top N backbone layers to unfreeze; -1: all (BatchNorm stays frozen)


@dataclass
class TrainConfig:
    batch_size: int = 64  # per replica; global = batch_size x replicas
    epochs: int = 20  # phase 1 (the only phase for scratch models)
    learning_rate: float = 1e-3
    optimizer: Optimizer = Optimizer.adam
    weight_decay: float = 0.0
    schedule: LrSchedule = LrSchedule.plateau
    first_decay_steps: int = 1000  # cosine_restarts
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    early_stopping_patience: int = 5
    monitor: str = "auto"  # auto: kit.train.metrics.monitored_metric (val_f1_score for binary or F1 competitions)
    steps_per_epoch: int = 0  # 0: one pass over the training records
    mixed_precision: MixedPrecision = MixedPrecision.auto
    strategy: DistributionStrategy = DistributionStrategy.auto
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    seed: int = 42
    verbose: int = 1


@dataclass
class PredictConfig:
    tta: list[str] = field(default_factory=list)  # e.g. [flip] or [hflip, vflip]
    threshold: str = "0.5"  # a number, or auto: the F1-best threshold saved by evaluate
    batch_size: int = 128
    output: str = "submission.csv"


@dataclass
class RunConfig:
    root: str = "runs"  # runs go to <root>/<comp>/<model>/<id>/
    id: str = ""  # empty: a timestamp


@dataclass
class KaggleConfig:
    message: str = ""  # submission message; empty: model, CV score and git commit
    poll_timeout: int = 600  # seconds to wait for a score
    dry_run: bool = False
    kernel_internet: bool = False  # kernel pushed with internet on (pip deps, imagenet weights); many comps forbid it


@dataclass
class TunerConfig:
    kind: TunerKind = TunerKind.hyperband
    max_trials: int = 10
    max_epochs: int = 10
    executions_per_trial: int = 1
    objective: str = "auto"
    phase1_only: bool = True
    space: dict[str, Any] = field(default_factory=dict)  # hyperparameter -> {type, min, max, ...}


@dataclass
class AuditConfig:
    hash_sample: int = 20000  # most images hashed for near duplicates (random sample beyond)
    near_distance: int = 6  # pHash Hamming distance (of 64 bits) counted as a near duplicate
    shortcut_sample: int = 20000  # most labelled images the metadata-only shortcut model sees
    shortcut_auc: float = 0.75  # binary: warn when metadata alone reaches this cross-validated AUC
    shortcut_gain: float = 0.5  # multi-class: warn when (accuracy - majority) / (1 - majority) exceeds this
    workers: int = 0  # threads reading files; 0: all cores


@dataclass
class Config:
    comp: CompetitionConfig = field(default_factory=CompetitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    run: RunConfig = field(default_factory=RunConfig)
    kaggle: KaggleConfig = field(default_factory=KaggleConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def binary(self) -> bool:
        return len(self.comp.classes) == 2


# Short forms on the command line: ``strategy=tpu`` means ``train.strategy=tpu``.
ALIASES = {
    "strategy": "train.strategy",
    "weights": "model.weights",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "tuner": "tuner.kind",
    "tta": "predict.tta",
    "threshold": "predict.threshold",
    "folds": "data.folds",
}
SELECTORS = ("comp", "model", "hparams")


def presets(kind: str) -> list[str]:
    """Names of the YAML presets of one kind (``competitions`` or ``models``)."""
    names = set()
    for base in CONFIG_DIRS:
        names.update(p.stem for p in (base / kind).glob("*.yaml"))
    return sorted(names)


def _preset_path(kind: str, name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise KitError(f"config file {path} does not exist", "give a preset name or an existing YAML path")
        return path
    for base in CONFIG_DIRS:
        candidate = base / kind / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise unknown_choice("competition" if kind == "competitions" else "model", name_or_path, presets(kind))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise KitError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a mapping of settings at the top", "see configs/ for examples")
    return data


def all_keys(node: Any = None, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema, for suggestions."""
    node = Config if node is None else node
    keys = []
    for f in dataclasses.fields(node):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys.extend(all_keys(type(default), dotted + "."))
    return keys


def _merge(base: DictConfig, update: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = str(exc.full_key or exc.key or "")
        raise KitError(f"{origin}: unknown setting '{key}'", f"did you mean {' or '.join(nearest(key, all_keys()))}?") from None
    except ValidationError as exc:
        if isinstance(exc.child_node, EnumNode) and isinstance(exc.value, (str, int, float)):  # a scalar, not a list or null
            raise unknown_choice(f"value for {exc.full_key}", str(exc.value), exc.child_node.enum_type) from None
        reason = exc.msg.splitlines()[0]
        raise KitError(f"{origin}: setting '{exc.full_key}': {reason}", "give a value of the right type") from None
    except OmegaConfBaseException as exc:
        raise KitError(f"{origin}: {str(exc).splitlines()[0]}", "check the setting's spelling and type") from None


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    selectors: dict[str, str] = {}
    dotlist: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise KitError(f"argument '{item}' is not key=value", "write settings as key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        if key in SELECTORS:
            selectors[key] = value
        else:
            if key == "predict.tta" and not value.startswith("["):
                value = "[" + value + "]" if value not in ("", "none") else "[]"
            dotlist.append(f"{key}={value}")
    return selectors, dotlist


def _bad_yaml_value(item: str) -> bool:
    try:
        yaml.safe_load(item.split("=", 1)[1])
    except yaml.YAMLError:
        return True
    return False


def load_config(overrides: list[str] | None = None, comp: str = "demo", model: str = "resnet20") -> Config:
    """Build the resolved :class:`Config` from presets and ``key=value`` overrides."""
    selectors, dotlist = _parse_overrides(list(overrides or []))
    comp = selectors.get("comp", comp)
    model = selectors.get("model", model)

    cfg = OmegaConf.structured(Config)
    comp_path = _preset_path("competitions", comp)
    cfg = _merge(cfg, _read_yaml(comp_path), str(comp_path))
    model_path = _preset_path("models", model)
    cfg = _merge(cfg, _read_yaml(model_path), str(model_path))
    if cfg.model.name in cfg.comp.image_sizes:
        cfg.model.image_size = int(cfg.comp.image_sizes[cfg.model.name])
    if "hparams" in selectors:
        hparams_path = Path(selectors["hparams"])
        if not hparams_path.is_file():
            raise KitError(f"hparams file {hparams_path} does not exist", "pass the best_hparams.yaml that kit tune wrote")
        cfg = _merge(cfg, _read_yaml(hparams_path), str(hparams_path))
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as exc:
        raise KitError(f"command line: {str(exc).splitlines()[0]}", "write settings as key=value") from None
    except yaml.YAMLError as exc:  # OmegaConf parses each value as YAML: "model.dropout=[1" is not
        bad = next((item for item in dotlist if _bad_yaml_value(item)), " ".join(dotlist))
        raise KitError(
            f"command line: cannot read the value of '{bad}' ({getattr(exc, 'problem', None) or 'not valid YAML'})",
            "quote it or close its brackets, e.g. predict.tta=[flip,vflip] or key='text'",
        ) from None
    cfg = _merge(cfg, cli, "command line")
    try:
        config: Config = OmegaConf.to_object(cfg)  # resolves ${...} interpolations
    except OmegaConfBaseException as exc:
        raise KitError(f"config: {str(exc).splitlines()[0]}", "check interpolations such as ${comp.name}") from None
    validate(config)
    return config


def validate(cfg: Config) -> None:
    """Check the ranges and combinations that the types cannot express (choices are Enum fields, checked on merge)."""
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise KitError(f"data.val_fraction={cfg.data.val_fraction} is outside [0, 1)", "use e.g. data.val_fraction=0.2")
    if cfg.train.batch_size < 1:
        raise KitError(f"train.batch_size={cfg.train.batch_size} must be positive", "use e.g. train.batch_size=64")
    if cfg.model.image_size < 8:
        raise KitError(f"model.image_size={cfg.model.image_size} is too small", "use at least 8 pixels")
    threshold = cfg.predict.threshold
    try:
        ok = threshold == "auto" or 0.0 <= float(threshold) <= 1.0
    except ValueError:
        ok = False
    if not ok:
        raise KitError(
            f"predict.threshold={threshold} is neither auto nor a number in [0, 1]", "use threshold=auto or e.g. threshold=0.5"
        )
    if cfg.train.strategy == "tpu":
        # Checked here too, not only once the TPU is connected (kit.train.strategy.check_tpu_batch): the global
        # batch is batch_size x replicas, so it divides by 8 x replicas exactly when batch_size divides by 8.
        if cfg.train.batch_size % 8:
            raise KitError(
                f"strategy=tpu needs train.batch_size (per replica) to be a multiple of 8, got {cfg.train.batch_size}",
                f"use e.g. train.batch_size={max(8, cfg.train.batch_size // 8 * 8)}",
            )
        for key, value in (("data.records_root", cfg.data.records_root), ("run.root", cfg.run.root)):
            if not str(value).startswith("gs://"):
                raise KitError(
                    f"strategy=tpu needs {key} on Google Cloud Storage, got '{value}' (TPUs cannot read local files)",
                    f"set {key}=gs://<bucket>/...",
                )


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as saved in every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(path: Path) -> Config:
    """Load a config saved by :func:`to_yaml` (e.g. a run's ``config.yaml``)."""
    return with_settings(Config(), _read_yaml(Path(path)), str(path))


def with_settings(cfg: Config, settings: dict[str, Any], origin: str) -> Config:
    """A copy of ``cfg`` with a partial config (nested mapping) merged in, every key, type and choice checked;
    a mistake is a one-line KitError starting with ``origin``."""
    return OmegaConf.to_object(_merge(OmegaConf.structured(cfg), settings, origin))
