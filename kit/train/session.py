"""One training session's setup, made once: the records, where training runs, and how much it reads.

``kit train``, ``kit tune`` and every fold of ``kit train folds=N`` need the same facts before a model is
built: the records' manifest (read once and handed down) and the classes it was built with, the
``tf.distribute`` strategy and its description, the global batch (per-replica batch x replicas; a
multiple of 8 per replica on TPUs), steps per epoch and validation steps (TPUs drop the last partial
batch, so both count whole batches there), and the precision policy for the device. :func:`start_session`
derives them all from ``(cfg, fold)``; the datasets come from the same session.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kit.errors import KitError

if TYPE_CHECKING:
    import tensorflow as tf

    from kit.config import Config
    from kit.data.manifest import Manifest


def open_records(cfg: Config, manifest: Manifest | None = None) -> tuple[Config, Manifest]:
    """The records' manifest (read here unless handed in) and ``cfg`` with the classes they were built with.

    The records decide the classes (``comp.classes`` may be empty), and so binary, num_classes and the monitor.
    """
    from kit.data.manifest import read_manifest, records_dir

    manifest = manifest if manifest is not None else read_manifest(records_dir(cfg))
    classes = list(manifest.classes)
    return dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, classes=classes)), manifest


@dataclass(frozen=True)
class Session:
    """What a training command needs before building its model; built by :func:`start_session`."""

    cfg: Config  # comp.classes from the records
    manifest: Manifest
    fold: int | None
    strategy: tf.distribute.Strategy
    description: str  # one line: which strategy, on what
    device: str  # cpu | gpu | tpu
    replicas: int
    global_batch: int
    precision: str  # the Keras dtype policy name
    steps_per_epoch: int
    val_examples: int
    validation_steps: int | None  # None when there are no whole validation batches

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def binary(self) -> bool:
        return self.manifest.binary

    @property
    def drop_remainder(self) -> bool:
        """TPUs need every batch the same size: the last partial batch of an epoch is dropped there."""
        return self.device == "tpu"

    def summary(self) -> str:
        return (
            f"strategy: {self.description}; global batch {self.global_batch} ({self.cfg.train.batch_size} x "
            f"{self.replicas} replicas); precision {self.precision}"
        )

    def describe(self) -> dict[str, Any]:
        """What ``strategy.json`` in the run directory records."""
        from kit.train.strategy import describe

        return {**describe(self.strategy, self.precision), "global_batch": self.global_batch, "description": self.description}

    def datasets(self) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        """The repeating training dataset and the finite validation one (None without validation examples)."""
        from kit.data.pipeline import make_dataset

        common = {
            "batch_size": self.global_batch,
            "manifest": self.manifest,
            "fold": self.fold,
            "drop_remainder": self.drop_remainder,
        }
        train_ds = make_dataset(self.cfg, "train", training=True, repeat=True, **common)
        val_ds = make_dataset(self.cfg, "val", training=False, **common) if self.val_examples else None
        return train_ds, val_ds

    @contextlib.contextmanager
    def precision_policy(self) -> Iterator[None]:
        """Keras' global dtype policy set to this session's precision, and put back afterwards."""
        from kit.train.strategy import set_precision

        previous = set_precision(self.precision)
        try:
            yield
        finally:
            set_precision(previous)


def check_no_validation_asked(cfg: Config, manifest: Manifest) -> None:
    """Training without validation happens only when the settings ask for it (data.val_fraction=0, no val table):
    records that simply lack the split are refused in one line, before a model trains for hours unchecked."""
    from kit.data.manifest import NO_VAL, split_plan

    plan = split_plan(cfg)
    if plan != NO_VAL:
        raise KitError(
            f"the records in {manifest.records_dir} hold no validation examples, but the split plan {plan} asks for some",
            f"rebuild them (`kit records comp={cfg.comp.name} model={cfg.model.name}`), or set data.val_fraction=0 "
            "to train without validation",
        )


def start_session(cfg: Config, fold: int | None = None, manifest: Manifest | None = None, *, validates: bool = True) -> Session:
    """The session of ``cfg`` (for ``fold``): reads the manifest unless handed in, picks the strategy. ``validates``:
    the command scores on the validation split (training does; the LR range test never looks at it)."""
    from kit.data.pipeline import count_examples, steps_per_epoch
    from kit.train.strategy import (
        check_tpu_batch,
        choose_precision,
        choose_strategy,
        device_type,
        global_batch_size,
        with_jitter_on,
    )

    cfg, manifest = open_records(cfg, manifest)
    strategy, description = choose_strategy(cfg)
    device = device_type(strategy)
    replicas = int(strategy.num_replicas_in_sync)
    global_batch = global_batch_size(cfg, replicas)
    is_tpu = device == "tpu"
    if is_tpu:
        check_tpu_batch(global_batch, replicas)
    precision = choose_precision(cfg, device)
    cfg = with_jitter_on(cfg, device)  # augment.jitter_on resolved once: the datasets and the model builders read it
    steps = cfg.train.steps_per_epoch or steps_per_epoch(manifest, "train", global_batch, fold=fold, drop_remainder=is_tpu)
    val_count = count_examples(manifest, "val", fold)
    if validates and not val_count:
        check_no_validation_asked(cfg, manifest)
    # An exact step count: multi-worker evaluation needs one (every worker runs the same steps), and with
    # it Keras does not probe the end of a TFRecord set of unknown length ("ran out of data").
    validation_steps = (val_count // global_batch if is_tpu else -(-val_count // global_batch)) or None
    return Session(
        cfg, manifest, fold, strategy, description, device, replicas, global_batch, precision, steps, val_count, validation_steps
    )
