"""The settings' declaration: typed dataclasses, StrEnum choices and each numeric setting's range.

Every ``int`` or ``float`` field is declared with :func:`ranged`, which stores its :class:`Range` in the field's
metadata; :mod:`kit.config.checks` walks the dataclasses and checks each value against it at load time, so a
range lives next to its field and nowhere else (a test asserts no numeric field lacks one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kit.config.symmetry import FLIP_AXES

# The settings with a fixed set of values. OmegaConf checks Enum fields on every merge (presets, hparams, command
# line, a run's config.yaml). Each member is named as its value, so it equals, hashes, prints and saves as that
# text: ``cfg.augment.mode == "online"`` and lookups by name keep working, and config.yaml reads ``mode: online``.
Source = StrEnum("Source", "competition dataset local")
Metric = StrEnum("Metric", "accuracy f1 macro_f1")
LabelFormat = StrEnum("LabelFormat", "index name probability")
ImageFormat = StrEnum("ImageFormat", "auto raw png jpeg")  # auto: raw pixels up to 128 px, else jpeg
AugmentMode = StrEnum("AugmentMode", "online offline none")
AugmentLibrary = StrEnum("AugmentLibrary", "keras keras_cv")
JitterOn = StrEnum("JitterOn", "pipeline model auto")  # auto: in the model on GPUs and TPUs, in the tf.data pipeline on CPUs
Flip = StrEnum("Flip", list(FLIP_AXES))  # the words and the axes each allows: kit.config.symmetry
Optimizer = StrEnum("Optimizer", "adam adamw sgd")
LrSchedule = StrEnum("LrSchedule", "constant plateau cosine cosine_restarts one_cycle")
JitCompile = StrEnum("JitCompile", "auto on off")  # auto: XLA on GPUs and TPUs, off on CPUs
MixedPrecision = StrEnum("MixedPrecision", "auto off float16 bfloat16")
DistributionStrategy = StrEnum("DistributionStrategy", "auto cpu gpu mirrored multiworker tpu")
TunerKind = StrEnum("TunerKind", "hyperband random bayesian")
EnsembleWeights = StrEnum("EnsembleWeights", "equal score fit")  # how kit predict runs=a,b blends (kit.blend)
KernelAccelerator = StrEnum("KernelAccelerator", "none gpu tpu")  # what a pushed Kaggle kernel runs on
DuplicateGroups = StrEnum("DuplicateGroups", "exact near none")  # which copies the validation split and folds keep whole
# How records store an image and how training and inference cut it to the model's size (kit.data.resizing.POLICIES).
ResizePolicy = StrEnum("ResizePolicy", "stretch pad crop")
TrainMode = StrEnum("TrainMode", "finetune probe")  # probe: frozen backbone features + logistic regression (kit.train.probe)
ClassWeight = StrEnum("ClassWeight", "none balanced")  # balanced: each class weighted by 1 / its share

# Resource limits among the ranges: named here, once; the range error names the constant to raise.
MAX_IMAGE_SIZE = 2048  # pixels a side fed to a model (a 64-image batch at 2048 px is 3.2 GB of float32 input)
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 100_000
MAX_STEPS = 10**9
MAX_WORKERS = 1024
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_STORED_SIDE = 8192  # pixels of a record's longer side under data.resize=crop (a 8192x8192 RGB image is 200 MB)
MAX_CROPS = 64  # predict.crops: an 8x8 grid of crops per image at inference


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``low <= value <= high`` (``< high`` when ``high_open``; ``> low``
    when ``low_open``). ``limit`` names the module constant that sets ``high`` when it is a resource limit."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    limit: str = ""

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        def text(bound: float) -> str:
            return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

        return f"{'(' if self.low_open else '['}{text(self.low)}, {text(self.high)}{')' if self.high_open else ']'}"


def ranged(default: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False, limit: str = "") -> Any:
    """A numeric dataclass field whose values must lie in the range; see :class:`Range`."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open, limit)})


def in_root(kind: str) -> Any:
    """A setting naming a ``file`` or a ``folder`` inside data.root (empty: none); :mod:`kit.config.files` confines
    every such setting, found by this mark, with one check."""
    return field(default="", metadata={"in_root": kind})


IMAGE_SIZE = Range(8, MAX_IMAGE_SIZE, limit="MAX_IMAGE_SIZE")  # model.image_size and each comp.image_sizes value
SEED = {"low": 0, "high": MAX_SEED}


@dataclass
class TableConfig:
    """Where one split's examples are listed: a CSV, or a folder (of class folders or of images)."""

    csv: str = in_root("file")  # CSV file relative to data.root; empty: use ``dir``
    dir: str = in_root("folder")  # folder of class sub-folders (labelled) or of images (unlabelled)
    id_column: str = ""  # column with the example id; empty: the path column is the id
    path_column: str = ""  # column with a file path relative to data.root/image_dir
    label_column: str = ""  # column with the label (name or index); empty: unlabelled
    image_dir: str = in_root("folder")  # folder the ids or paths are relative to, under data.root
    image_ext: str = ""  # appended to ids that lack it, e.g. ".png"


@dataclass
class SubmissionConfig:
    id_column: str = "id"
    label_column: str = "label"
    label_format: LabelFormat = LabelFormat.index


@dataclass
class CompetitionConfig:
    name: str = "demo"  # a plain name: it is a folder name under data/ and runs/
    slug: str = ""  # Kaggle competition slug or dataset "owner/name"
    source: Source = Source.competition
    train: TableConfig = field(default_factory=TableConfig)
    val: TableConfig = field(default_factory=TableConfig)  # optional separate validation set
    test: TableConfig = field(default_factory=TableConfig)
    sample_submission: str = in_root("file")  # relative to data.root; the reference for validating a submission
    solution: str = in_root("file")  # hidden test labels (demo only), CSV with submission columns
    classes: list[str] = field(default_factory=list)  # distinct names in label-index order; empty: inferred
    metric: Metric = Metric.accuracy
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    image_sizes: dict[str, int] = field(default_factory=dict)  # per model name, overrides model.image_size (IMAGE_SIZE)
    # A column of the train (and val) CSV naming each row's source, generator, photographer or subject: the validation
    # split and folds keep its groups whole (with the duplicate groups), kit evaluate scores each group; empty cells: none.
    group_column: str = ""
    # A kernel's run-time limit in hours (Kaggle: 12 for CPU/GPU sessions, 9 for TPU; code competitions often
    # less): the kernel's session timeout, and its training stops early enough to predict within it.
    kernel_hours: float = ranged(9.0, 0, 12, low_open=True)
    # Kaggle scores a kernel version rerun on the hidden test set, not an uploaded file: kit submit (make submit)
    # submits the kernel's version (kit submit --kernel).
    code_competition: bool = False


@dataclass
class ModelConfig:
    name: str = "resnet20"
    image_size: int = ranged(32, IMAGE_SIZE.low, IMAGE_SIZE.high, limit=IMAGE_SIZE.limit)
    weights: str = "none"  # imagenet | none | <path to .weights.h5>; keras-hub rows: preset | none | <preset folder>
    dropout: float = ranged(0.0, 0, 1, high_open=True)
    dense_units: int = ranged(0, 0, 65536)  # hidden units in the head; 0: none
    l2: float = ranged(0.0, 0, 1)
    options: dict[str, Any] = field(default_factory=dict)  # architecture-specific, checked by the builder


@dataclass
class DataConfig:
    root: str = "data/raw/${comp.name}"  # where the competition's files are (/kaggle/input/... in a kernel)
    records_root: str = "data/records"  # records go to <records_root>/<comp>/<image_size>/
    val_fraction: float = ranged(0.2, 0, 1, high_open=True)
    seed: int = ranged(42, **SEED)
    folds: int = ranged(0, 0, 100)  # >1: stratified k-fold column in the index
    shard_mb: float = ranged(100, 0, 100_000, low_open=True)  # target TFRecord shard size in MB (fractions allowed)
    workers: int = ranged(0, 0, MAX_WORKERS, limit="MAX_WORKERS")  # 0: all cores
    # How records store images: auto = raw pixels up to 128 px, JPEG above (quality data.jpeg_quality, full-resolution
    # colour: ~42 dB PSNR against lossless, 3.4x PNG's read speed in the input pipeline at 380 px); png = lossless, for
    # forensic / AI-image detection work, where re-encoding as JPEG would overwrite the traces the model should learn.
    image_format: ImageFormat = ImageFormat.auto
    jpeg_quality: int = ranged(90, 1, 100)  # JPEG records (4:4:4); the default 90 decodes as fast as 4:2:0 at 95
    # Duplicate groups the validation split and folds keep on one side, computed when the index is built (kit audit
    # only reports them): exact: byte-identical files (reads only files whose size another shares); near: also mutual
    # near duplicates, pHash within audit.near_distance of every member of the group (decodes every labelled image).
    duplicate_groups: DuplicateGroups = DuplicateGroups.exact
    group_max_share: float = ranged(0.01, 0, 1, low_open=True)  # a larger group (and over 5 images) is reported, not used
    holdout_group: str = ""  # a value of comp.group_column: all its rows validate, none train (a generator never seen)
    # stretch: records at the model's size, aspect ratio ignored; pad: letterboxed to it (black bars, no distortion);
    # crop: records at native resolution (longer side shrunk to data.max_side when above it, never enlarged), training
    # takes random crops of the model's size, inference a centre crop or predict.crops crops (kit.data.resizing).
    resize: ResizePolicy = ResizePolicy.stretch
    max_side: int = ranged(768, 8, MAX_STORED_SIDE, limit="MAX_STORED_SIDE")  # data.resize=crop: longest side kept


@dataclass
class AugmentConfig:
    mode: AugmentMode = AugmentMode.online
    library: AugmentLibrary = AugmentLibrary.keras
    flip: Flip = Flip.horizontal
    rotation: float = ranged(0.0, 0, 1)  # fraction of a full turn, as keras.layers.RandomRotation(factor)
    translate: float = ranged(0.0, 0, 0.5)  # whole-pixel shifts up to this fraction of the side, reflected at the border
    color_jitter: float = ranged(0.0, 0, 1, high_open=True)  # strength of brightness/contrast/saturation/hue jitter
    cutmix: float = ranged(0.0, 0, 1)  # probability that a batch (online) or a copy (offline) is CutMixed
    cutmix_alpha: float = ranged(1.0, 0, 100, low_open=True)  # Beta(alpha, alpha) for the mixed area
    mixup: float = ranged(0.0, 0, 1)  # probability that a batch (online) or a copy (offline) is MixUped (then no CutMix)
    mixup_alpha: float = ranged(0.2, 0, 100, low_open=True)  # Beta(alpha, alpha) for the partner's weight (Zhang et al.)
    # Degradations, on both classes alike (kit.data.augment.degrade, with each one's source): the probability per image
    # (0: off) and the far end of the parameter's range; the near end leaves the image as it was.
    resized_crop: float = ranged(0.0, 0, 1)  # random resized crop (Szegedy et al. 2015; torchvision), back to full size
    resized_crop_min_scale: float = ranged(0.08, 0, 1, low_open=True)  # crop area uniform in [this, 1] of the image
    resample: float = ranged(0.0, 0, 1)  # shrink and enlarge back, linear, no antialiasing (an upsampling trace on both)
    resample_min_scale: float = ranged(0.5, 0, 1, low_open=True)  # side scale uniform in [this, 1]
    blur: float = ranged(0.0, 0, 1)  # Gaussian blur (Wang et al. CVPR 2020: 0.5 or 0.1)
    blur_max_sigma: float = ranged(3.0, 0, 8, low_open=True)  # sigma uniform in [0, this] pixels (Wang et al.: 3)
    noise: float = ranged(0.0, 0, 1)  # additive Gaussian noise per pixel and channel (Rusak et al. ECCV 2020)
    noise_max_std: float = ranged(10.0, 0, 64, low_open=True)  # std uniform in [0, this] grey levels of 0..255
    jpeg: float = ranged(0.0, 0, 1)  # JPEG re-encoding (Wang et al. CVPR 2020: 0.5 or 0.1)
    jpeg_min_quality: int = ranged(30, 1, 100)  # quality uniform in {this .. 100} (Wang et al.: 30)
    erase: float = ranged(0.0, 0, 1)  # random erasing after the jitter, random pixel fill (Zhong et al. AAAI 2020: 0.5)
    erase_max_area: float = ranged(0.4, 0.02, 1)  # box area uniform in [0.02, this] of the image (Zhong et al.: 0.4)
    # data.resize=crop: the training crop is this to 1 of a larger window's area, shrunk to the model's size (a random
    # resized crop around native resolution); 1: crops at native resolution only.
    crop_min_scale: float = ranged(1.0, 0.05, 1)
    offline_copies: int = ranged(1, 1, 100)  # offline: augmented copies of the training set baked into the records
    jit_compile: bool = True  # online, library=keras: flips, jitter and CutMix as one XLA kernel (false: plain TF ops)
    jitter_on: JitterOn = JitterOn.auto  # online colour jitter: in the tf.data pipeline, or the model's first layer (its device)
    seed: int = ranged(1337, **SEED)


@dataclass
class FineTuneConfig:
    epochs: int = ranged(0, 0, MAX_EPOCHS, limit="MAX_EPOCHS")  # phase 2 epochs; 0: no phase 2
    learning_rate: float = ranged(1e-5, 0, 10, low_open=True)
    unfreeze: int = ranged(-1, -1, 100_000)  # top N backbone layers to unfreeze; -1: all (BatchNorm stays frozen)
    lr_mult: float = ranged(1.0, 1, 1e6)  # discriminative rates: the lowest unfrozen layer at learning_rate / lr_mult


@dataclass
class ProbeConfig:
    """train.mode=probe: a logistic regression on the frozen backbone's pooled features (scikit-learn)."""

    c: float = ranged(1.0, 0, 1e6, low_open=True)  # inverse L2 strength (LogisticRegression's C); smaller: stronger
    class_weight: ClassWeight = ClassWeight.none
    max_iter: int = ranged(1000, 1, 1_000_000)  # the solver's iterations (lbfgs)


@dataclass
class TrainConfig:
    mode: TrainMode = TrainMode.finetune  # finetune: the phases (head, then unfrozen top); probe: features + linear head
    batch_size: int = ranged(64, 1, MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE")  # per replica; global = x replicas
    epochs: int = ranged(20, 1, MAX_EPOCHS, limit="MAX_EPOCHS")  # phase 1 (the only phase for scratch models)
    learning_rate: float = ranged(1e-3, 0, 10, low_open=True)
    optimizer: Optimizer = Optimizer.adam
    weight_decay: float = ranged(0.0, 0, 1)
    schedule: LrSchedule = LrSchedule.plateau
    first_decay_steps: int = ranged(1000, 1, MAX_STEPS, limit="MAX_STEPS")  # cosine_restarts
    warmup_epochs: int = ranged(0, 0, MAX_EPOCHS, limit="MAX_EPOCHS")
    label_smoothing: float = ranged(0.0, 0, 1, high_open=True)
    lr_scale_batch: int = ranged(0, 0, MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE")  # >0: rate x global batch / this (linear rule)
    ema: bool = False  # weight EMA (optimizer use_ema): validation, best.keras and predictions use the averaged weights
    ema_momentum: float = ranged(0.99, 0, 1, high_open=True)  # the average's decay per step (Keras' default 0.99)
    jit_compile: JitCompile = JitCompile.auto  # the train step as one XLA program (model.compile(jit_compile=...))
    early_stopping_patience: int = ranged(5, 0, MAX_EPOCHS, limit="MAX_EPOCHS")  # 0: no early stopping
    monitor: str = "auto"  # auto: kit.train.metrics.monitored_metric (val_f1_score for binary or F1 competitions)
    steps_per_epoch: int = ranged(0, 0, MAX_STEPS, limit="MAX_STEPS")  # 0: one pass over the training records
    mixed_precision: MixedPrecision = MixedPrecision.auto
    strategy: DistributionStrategy = DistributionStrategy.auto
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = ranged(42, **SEED)
    verbose: int = ranged(1, 0, 2)  # Keras fit verbosity


@dataclass
class PredictConfig:
    tta: list[str] = field(default_factory=list)  # e.g. [flip] or [hflip, vflip]
    threshold: str = "0.5"  # a number in [0, 1], or auto: the F1-best threshold saved by evaluate
    batch_size: int = ranged(128, 1, MAX_BATCH_SIZE, limit="MAX_BATCH_SIZE")
    output: str = "submission.csv"
    weights: EnsembleWeights = EnsembleWeights.equal  # an ensemble's weights: equal | score | fit (kit.blend)
    # data.resize=crop: the mean over a k x k grid of crops spread over the image (1: its centre crop); a square number
    crops: int = ranged(1, 1, MAX_CROPS, limit="MAX_CROPS")


@dataclass
class RunConfig:
    root: str = "runs"  # runs go to <root>/<comp>/<model>/<id>/
    id: str = ""  # a plain name (a folder name); empty: a timestamp


@dataclass
class KaggleConfig:
    message: str = ""  # submission message; empty: model, CV score and git commit
    poll_timeout: int = ranged(600, 0, 7 * 24 * 3600)  # seconds to wait for a score
    dry_run: bool = False
    kernel_internet: bool = False  # kernel pushed with internet on (pip deps, imagenet weights); many comps forbid it
    kernel_accelerator: KernelAccelerator = KernelAccelerator.gpu  # none | gpu | tpu
    kernel_machine_shape: str = ""  # kaggle client's machine_shape (NvidiaTeslaT4, NvidiaL4, TpuV5E8); empty: the default


@dataclass
class TunerConfig:
    kind: TunerKind = TunerKind.hyperband
    max_trials: int = ranged(10, 1, 1_000_000)
    max_epochs: int = ranged(10, 1, MAX_EPOCHS, limit="MAX_EPOCHS")
    executions_per_trial: int = ranged(1, 1, 1000)
    objective: str = "auto"
    phase1_only: bool = True
    space: dict[str, Any] = field(default_factory=dict)  # hyperparameter -> {type, min, max, ...}


@dataclass
class AuditConfig:
    hash_sample: int = ranged(20000, 0, MAX_STEPS)  # most images hashed for near duplicates (random sample beyond)
    near_distance: int = ranged(6, 0, 64)  # pHash Hamming distance (of 64 bits) counted as a near duplicate
    shortcut_sample: int = ranged(20000, 0, MAX_STEPS)  # most labelled images the metadata-only shortcut model sees
    shortcut_auc: float = ranged(0.75, 0.5, 1)  # binary: warn when metadata alone reaches this cross-validated AUC
    shortcut_gain: float = ranged(0.5, 0, 1)  # multi-class: warn when (accuracy - majority) / (1 - majority) exceeds this
    workers: int = ranged(0, 0, MAX_WORKERS, limit="MAX_WORKERS")  # threads reading files; 0: all cores


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
