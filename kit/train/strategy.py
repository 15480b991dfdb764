"""Where training runs: TPU -> multi-worker -> several GPUs -> one GPU -> CPU, and the precision to use.

``train.strategy=auto`` picks the first that is present; a named strategy that cannot run here is a
KitError, never a silent fallback (a user who asked for a TPU must not train for hours on a CPU).

- TPU: only probed when one is plausible (``TPU_NAME``, ``COLAB_TPU_ADDR``, ``TPU_WORKER_ID`` or
  ``/dev/accel*``): ``TPUClusterResolver()`` otherwise searches the GCE metadata server and can hang.
- multi-worker: ``TF_CONFIG`` names more than one task (TF's multi-worker convention). Keras 3 ``fit``
  cannot run under ``MultiWorkerMirroredStrategy`` on TF 2.21, so the trainer uses
  :mod:`kit.train.multiworker` there; the start-up (waiting for the other workers) is :mod:`kit.train.cluster`'s.
- mirrored: every GPU; without GPUs, every (logical) CPU device, which is how the tests exercise it.

The global batch is ``train.batch_size`` (per replica) x replicas. Mixed precision follows the device:
float16 on GPUs, bfloat16 on TPUs, off on CPUs (``train.mixed_precision=auto``); the models keep their
output layer in float32. The online colour jitter follows it too (``augment.jitter_on=auto``): the model's first
layer on GPUs and TPUs, the tf.data pipeline on CPUs (:func:`choose_jitter_on`).
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.train.cluster import start_multiworker, tf_config_tasks

if TYPE_CHECKING:
    import tensorflow as tf

    from kit.config import Config

TPU_ENV = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_WORKER_ID")
TPU_BATCH_MULTIPLE = 8  # per replica: the TPU's matrix units tile batches in 8s (XLA pads otherwise)
POLICIES = {"cpu": "float32", "gpu": "mixed_float16", "tpu": "mixed_bfloat16"}


def tpu_plausible() -> bool:
    """True when this machine may have a TPU (environment variables of TPU VMs/Colab/Kaggle, or /dev/accel*)."""
    return any(os.environ.get(name) for name in TPU_ENV) or bool(glob.glob("/dev/accel*"))


def _connect_tpu() -> tf.distribute.Strategy:
    import tensorflow as tf

    try:  # a TPU node or Colab: found through TPU_NAME / the metadata server
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME") or None)
    except (ValueError, RuntimeError):
        if not glob.glob("/dev/accel*"):
            raise
        # A TPU VM (Kaggle, Cloud TPU VM): the chips are local devices.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _gpus() -> list:
    import tensorflow as tf

    return tf.config.list_logical_devices("GPU")


def choose_strategy(cfg: Config) -> tuple[tf.distribute.Strategy, str]:
    """The ``tf.distribute`` strategy for ``cfg.train.strategy`` and a one-line description of it."""
    import tensorflow as tf

    wanted = cfg.train.strategy
    if wanted == "tpu" and not tpu_plausible():
        # Not even probed: without these markers the resolver searches a metadata server and may hang.
        raise KitError(
            f"strategy=tpu but this machine has no TPU (none of {', '.join(TPU_ENV)} is set and there is no /dev/accel*)",
            "run on a TPU VM or a Kaggle/Colab TPU runtime (or set TPU_NAME), or use strategy=auto",
        )
    if tpu_plausible() and wanted in ("tpu", "auto"):
        try:
            strategy = _connect_tpu()
        except Exception as exc:  # noqa: BLE001 - resolver/connection errors come in many types
            if wanted == "tpu":
                reason = " ".join(str(exc).split())[:160] or type(exc).__name__
                raise KitError(
                    f"strategy=tpu but no TPU could be reached ({reason})",
                    "run on a TPU VM / Kaggle or Colab TPU runtime (TPU_NAME set), or use strategy=auto",
                ) from None
        else:
            return strategy, f"TPU with {strategy.num_replicas_in_sync} cores"
    if wanted == "multiworker" or (wanted == "auto" and tf_config_tasks() > 1):
        strategy = start_multiworker()  # a limit on the wait for the other workers; SIGTERM stays kit's
        resolver = strategy.cluster_resolver
        workers = max(1, tf_config_tasks())
        note = "" if tf_config_tasks() else " (TF_CONFIG is not set: a single worker)"
        return strategy, (
            f"multi-worker mirrored: {workers} workers, {strategy.num_replicas_in_sync} replicas, "
            f"this is {resolver.task_type or 'worker'} {resolver.task_id or 0}{note}"
        )
    gpus = _gpus()
    if wanted == "gpu" and not gpus:
        raise KitError(
            "strategy=gpu but TensorFlow sees no GPU", "check nvidia-smi and the CUDA install, or use strategy=auto (CPU)"
        )
    if wanted == "mirrored" or (wanted == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return strategy, f"mirrored over {len(devices)} {'GPUs' if gpus else 'CPU devices'}"
    if wanted in ("gpu", "auto") and gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name), f"one GPU ({gpus[0].name})"
    return tf.distribute.get_strategy(), "CPU (default strategy)"


def device_type(strategy: tf.distribute.Strategy) -> str:
    """``tpu``, ``gpu`` or ``cpu``: what the strategy's replicas run on (decides the precision)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    devices = worker_devices(strategy)
    if devices:
        return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"
    return "gpu" if _gpus() else "cpu"  # the default strategy places ops on the first GPU when there is one


def worker_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """This worker's replica devices ([] for the default strategy, which has no fixed list)."""
    try:
        return [str(d) for d in strategy.extended.worker_devices]
    except (RuntimeError, AttributeError, NotImplementedError):
        return []


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """A short stable name: tpu | multiworker | mirrored | one_device | default."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    return "default"


def describe(strategy: tf.distribute.Strategy, precision: str) -> dict[str, Any]:
    """What ``strategy.json`` in the run directory records."""
    return {
        "strategy": strategy_name(strategy),
        "device_type": device_type(strategy),
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": worker_devices(strategy),
        "precision": precision,
    }


def choose_precision(cfg: Config, device: str) -> str:
    """The Keras dtype policy name for ``train.mixed_precision`` on ``device`` (cpu | gpu | tpu).

    auto: mixed_float16 on GPUs, mixed_bfloat16 on TPUs, float32 on CPUs (CPUs gain nothing from it).
    """
    mode = cfg.train.mixed_precision
    if mode == "auto":
        return POLICIES.get(device, "float32")
    if mode == "off":
        return "float32"
    if mode == "float16" and device == "tpu":
        raise KitError("train.mixed_precision=float16 is not supported on TPUs", "use train.mixed_precision=bfloat16 (or auto)")
    return {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[mode]


def choose_jitter_on(cfg: Config, device: str) -> str:
    """Where the online colour jitter runs for ``augment.jitter_on`` on ``device`` (cpu | gpu | tpu): pipeline | model.

    auto: ``model`` on GPUs and TPUs, where the jitter's pixel work leaves the CPU pipeline (at 380 px it bounds it:
    BENCHMARKS.md, the pipeline at 380 px) for the accelerator, as Keras' on-device preprocessing layers do;
    ``pipeline`` on CPUs, where both share the same cores and the pipeline's jitter runs in parallel with the train step.
    """
    mode = str(cfg.augment.jitter_on)
    if mode == "auto":
        return "pipeline" if device == "cpu" else "model"
    return mode


def with_jitter_on(cfg: Config, device: str) -> Config:
    """``cfg`` with ``augment.jitter_on`` resolved for ``device`` (pipeline | model): what the datasets (the augmenter
    skips the jitter for ``model``), the model builder (the jitter layer first) and the run's config.yaml all read."""
    import dataclasses

    from kit.config.schema import JitterOn

    augment = dataclasses.replace(cfg.augment, jitter_on=JitterOn(choose_jitter_on(cfg, device)))
    return dataclasses.replace(cfg, augment=augment)


def set_precision(policy: str) -> str:
    """Set Keras' global dtype policy; returns the previous one so callers can put it back."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    return previous


def global_batch_size(cfg: Config, replicas: int) -> int:
    """``train.batch_size`` is per replica; one step consumes this many examples."""
    return int(cfg.train.batch_size) * int(replicas)


def check_tpu_batch(global_batch: int, replicas: int) -> None:
    """TPUs need every replica's batch a multiple of 8: global batch a multiple of 8 x replicas."""
    multiple = TPU_BATCH_MULTIPLE * replicas
    if global_batch % multiple:
        per_replica = max(TPU_BATCH_MULTIPLE, (global_batch // replicas) // TPU_BATCH_MULTIPLE * TPU_BATCH_MULTIPLE)
        raise KitError(
            f"global batch {global_batch} is not a multiple of {multiple} (8 x {replicas} TPU replicas)",
            f"set train.batch_size to a multiple of 8 per replica, e.g. train.batch_size={per_replica}",
        )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes the run directory (always true outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict() if hasattr(resolver, "cluster_spec") else {}
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0
