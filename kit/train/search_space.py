"""Hyperparameter search spaces declared in a model's YAML, checked on load.

``tuner.space`` maps a dotted config key to a declaration::

    model.dense_units:   {type: int, min: 64, max: 512, step: 64}
    model.dropout:       {type: float, min: 0.1, max: 0.5, step: 0.1}
    train.learning_rate: {type: float, min: 0.0001, max: 0.01, sampling: log}
    model.options.width: {type: choice, values: [16, 32]}
    augment.flip:        {type: choice, values: [none, horizontal]}

The hyperparameter's name is the config key itself, so a trial's values apply to a config with one merge
and ``best_hparams.yaml`` is a partial config that ``kit train hparams=...`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from kit.config import Config, all_keys, suggest_keys, with_settings
from kit.errors import KitError

TYPES = ("int", "float", "choice", "bool")
FIELDS = {
    "int": {"type", "min", "max", "step", "sampling"},
    "float": {"type", "min", "max", "step", "sampling"},
    "choice": {"type", "values"},
    "bool": {"type"},
}
SAMPLINGS = ("linear", "log", "reverse_log")
# What a trial can change: the model, its training and its augmentation. Paths, names and the data's records are
# not tunable, so best_hparams.yaml (which kit.config lets set only the space's keys) can never move a folder.
TUNABLE = ("model.", "train.", "augment.")
UNTUNABLE = {"model.name", "model.weights"}


@dataclass(frozen=True)
class Dimension:
    name: str  # dotted config key
    kind: str
    spec: dict[str, Any]

    def declare(self, hp) -> Any:
        """Declare this dimension on a ``keras_tuner.HyperParameters`` and return the sampled value."""
        s = self.spec
        if self.kind == "int":
            return hp.Int(self.name, int(s["min"]), int(s["max"]), step=s.get("step"), sampling=s.get("sampling", "linear"))
        if self.kind == "float":
            return hp.Float(self.name, float(s["min"]), float(s["max"]), step=s.get("step"), sampling=s.get("sampling", "linear"))
        if self.kind == "choice":
            return hp.Choice(self.name, list(s["values"]))
        return hp.Boolean(self.name)


def parse_space(space: dict[str, Any], origin: str = "tuner.space") -> list[Dimension]:
    """Validate a search-space mapping; every mistake is a one-line KitError naming the entry."""
    if not space:
        raise KitError(f"{origin} is empty: nothing to tune", "declare ranges in configs/models/<model>.yaml under tuner.space")
    valid_keys = [k for k in all_keys() if k.startswith(TUNABLE) and k not in UNTUNABLE]
    dims = []
    for name, spec in space.items():
        where = f"{origin}.{name}"
        prefix = name.split(".options.")[0] + ".options" if ".options." in name else None
        if name not in valid_keys and prefix not in valid_keys:
            raise KitError(f"{where}: '{name}' is not a setting", f"did you mean {' or '.join(suggest_keys(name, valid_keys))}?")
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise KitError(f"{where}: needs type: one of {', '.join(TYPES)}", "e.g. {type: float, min: 0.1, max: 0.5}")
        kind = spec["type"]
        unknown = set(spec) - FIELDS[kind]
        if unknown:
            bad = sorted(unknown)[0]
            raise KitError(f"{where}: unknown field '{bad}' for type {kind}", f"use {', '.join(sorted(FIELDS[kind]))}")
        if kind in ("int", "float"):
            if "min" not in spec or "max" not in spec:
                raise KitError(f"{where}: type {kind} needs min and max", f"e.g. {{type: {kind}, min: 1, max: 10}}")
            try:
                low, high = float(spec["min"]), float(spec["max"])
            except (TypeError, ValueError):
                raise KitError(f"{where}: min and max must be numbers", "e.g. min: 0.1, max: 0.5") from None
            if not low < high:
                raise KitError(f"{where}: min ({spec['min']}) must be below max ({spec['max']})", "swap or widen the range")
            sampling = spec.get("sampling", "linear")
            if sampling not in SAMPLINGS:
                raise KitError(f"{where}: unknown sampling '{sampling}'", f"use one of {', '.join(SAMPLINGS)}")
            if sampling != "linear" and low <= 0:
                raise KitError(f"{where}: log sampling needs min > 0", "raise min above zero or use sampling: linear")
            for bound in (spec["min"], spec["max"]):  # within the setting's declared range, checked before any trial
                with_settings(Config(), nested({name: bound}), where)
        if kind == "choice":
            if not isinstance(spec.get("values"), list) or not spec["values"]:
                raise KitError(f"{where}: type choice needs a non-empty list of values", "e.g. {type: choice, values: [64, 128]}")
            for value in spec["values"]:  # each value must be valid for its setting (type, Enum choice) before trials run
                with_settings(Config(), nested({name: value}), where)
        dims.append(Dimension(name, kind, dict(spec)))
    return dims


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"model.dropout": 0.2}`` -> ``{"model": {"dropout": 0.2}}``: a partial config."""
    return OmegaConf.to_container(
        OmegaConf.from_dotlist([f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in values.items()])
    )


def apply_values(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with the trial's values set at their dotted keys."""
    return with_settings(cfg, nested(values), "trial values")
