"""The checks of a resolved :class:`Config` that its types cannot express: each numeric setting against the
:class:`~kit.config.schema.Range` declared next to its field, folder names, class names, and the few
combinations (threshold, TPU paths). Every failure is one KitError naming the setting, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from functools import cache
from typing import Any

from kit.config.files import check_locations
from kit.config.schema import IMAGE_SIZE, Config, Range
from kit.errors import KitError, listing, quoted

MAX_NAME_LENGTH = 128  # characters of a name used as a folder name (file systems allow 255 bytes)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@cache
def ranged_fields(node: type = Config, prefix: str = "") -> tuple[tuple[str, type, Range | None], ...]:
    """(dotted key, type, declared range) of every int and float setting, nested dataclasses included; a numeric
    field without a range is listed with ``None`` (a test asserts there is none)."""
    found: list[tuple[str, type, Range | None]] = []
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            found.extend(ranged_fields(kind, f"{prefix}{f.name}."))
        elif kind in (int, float):
            found.append((f"{prefix}{f.name}", kind, f.metadata.get("range")))
    return tuple(found)


def range_error(key: str, value: Any, allowed: Range) -> KitError:
    """The one line for a number outside its declared range; names the constant to raise for resource limits."""
    how = f"set {key} within {allowed}"
    if allowed.limit and isinstance(value, (int, float)) and value > allowed.high:
        how += f"; the upper limit is {allowed.limit} in kit/config/schema.py, raise it there if you need more"
    return KitError(f"{key}={value} is outside its allowed range {allowed}", how)


def check_ranges(section: Any, prefix: str = "") -> None:
    """Each numeric setting of ``section`` (the whole Config, or one section such as an AugmentConfig under
    ``prefix="augment."``) against the range declared beside its field."""
    for key, _, allowed in ranged_fields(type(section), prefix):
        value = section
        for part in key.removeprefix(prefix).split("."):
            value = getattr(value, part)
        if allowed is not None and not allowed.holds(value):
            raise range_error(key, value, allowed)


def check_image_sizes(cfg: Config) -> None:
    for model, size in cfg.comp.image_sizes.items():
        if not IMAGE_SIZE.holds(size):
            raise range_error(f"comp.image_sizes.{model}", size, IMAGE_SIZE)


def plain_name_problem(name: str) -> str:
    """Why ``name`` cannot be a folder name ('' when it can): letters, digits, '.', '_', '-', not starting with a
    dot or dash (no '..', no '/', no hidden folder), at most MAX_NAME_LENGTH characters."""
    if not PLAIN_NAME.fullmatch(name):
        return "may hold only letters, digits, '.', '_' and '-', starting with a letter or digit"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long, over the {MAX_NAME_LENGTH} allowed"
    return ""


def check_names(cfg: Config) -> None:
    """Names that become folder names (data/<comp>, runs/<comp>/<model>/<run.id>, the download's <slug name>)
    must be plain names, so no setting can write outside the folders it names."""
    names = [("comp.name", cfg.comp.name), ("model.name", cfg.model.name)]
    if cfg.run.id:
        names.append(("run.id", cfg.run.id))
    if cfg.comp.slug:
        parts = cfg.comp.slug.split("/")
        if len(parts) > 2:
            raise KitError(
                f"comp.slug='{quoted(cfg.comp.slug)}' has more than one '/'",
                "give a competition slug or owner/dataset, each part a plain name",
            )
        names.extend(("comp.slug", part) for part in parts)
    for key, name in names:
        problem = plain_name_problem(str(name))
        if problem:
            raise KitError(
                f"{key}='{quoted(name)}' is used as a folder name and {problem}",
                f"set {key} to a plain name of at most {MAX_NAME_LENGTH} characters, e.g. mine-1 "
                "(the length limit is MAX_NAME_LENGTH in kit/config/checks.py)",
            )


def check_folders(cfg: Config) -> None:
    """The settings a folder is made from, checked where one is made (records, index, runs, tuner): a config edited
    in Python after load_config (``cfg.comp.name = "../x"``, a NUL byte in run.root) never passed :func:`validate`."""
    check_names(cfg)
    check_locations(cfg)


def check_classes(classes: list[str]) -> None:
    if not classes:
        return
    if len(classes) < 2:
        raise KitError(
            f"comp.classes=[{listing(classes)}] names one class", "list at least 2 classes, or leave comp.classes empty"
        )
    seen: set[str] = set()
    for name in classes:
        if not str(name).strip():
            raise KitError(f"comp.classes has an empty name: [{listing(classes)}]", "give every class a name")
        if name in seen:
            raise KitError(
                f"comp.classes names '{quoted(name)}' twice: [{listing(classes)}]", "list each class once, in label-index order"
            )
        seen.add(name)


def check_threshold(threshold: str) -> None:
    try:
        ok = threshold == "auto" or 0.0 <= float(threshold) <= 1.0
    except ValueError:
        ok = False
    if not ok:
        raise KitError(
            f"predict.threshold={threshold} is neither auto nor a number in [0, 1]", "use threshold=auto or e.g. threshold=0.5"
        )


def check_tpu(cfg: Config) -> None:
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


def validate(cfg: Config) -> None:
    """Every check of a resolved config that the types cannot express (choices are Enum fields, checked on merge)."""
    check_ranges(cfg)
    check_image_sizes(cfg)
    check_names(cfg)
    check_locations(cfg)
    check_classes(cfg.comp.classes)
    check_threshold(cfg.predict.threshold)
    if cfg.train.strategy == "tpu":
        check_tpu(cfg)
