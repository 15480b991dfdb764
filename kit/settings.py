"""The settings a command runs with: the declared config (:mod:`kit.config`) plus the checks that need to know
the models, the metrics training logs and the tuner's search spaces.

kit.config declares types, choices and ranges and imports nothing of kit above kit.errors/kit.io; the model
registry and the search-space parser import config for its types, so their checks of a loaded config sit here,
one layer above both, and no import loop remains.
"""

from __future__ import annotations

from kit.config import Config, load_config
from kit.data.resizing import check_resize
from kit.errors import unknown_choice
from kit.models.backbones import row_presets
from kit.models.registry import MODELS
from kit.train.metrics import check_metric_name
from kit.train.search_space import parse_space


def load_settings(overrides: list[str] | None = None, comp: str = "demo", model: str = "resnet20") -> Config:
    """:func:`kit.config.load_config` with the backbone table's rows as model presets, then the model name checked
    against the registry and ``tuner.space`` parsed; every mistake is a one-line KitError."""
    cfg = load_config(overrides, comp=comp, model=model, model_defaults=row_presets())
    check_settings(cfg)
    return cfg


def check_settings(cfg: Config) -> None:
    """The checks of a loaded config that need the model registry, the search-space parser and the resize policies."""
    check_resize(cfg)
    if cfg.model.name not in MODELS:
        raise unknown_choice("model", cfg.model.name, MODELS)
    if cfg.tuner.space:
        parse_space(cfg.tuner.space, origin=f"tuner.space of model {cfg.model.name}")
    for setting, name in (("train.monitor", cfg.train.monitor), ("tuner.objective", cfg.tuner.objective)):
        if name != "auto":
            check_metric_name(name, setting)  # a name no model logs; the problem's own names are checked when it is known
