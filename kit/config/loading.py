"""Filling the declared :class:`~kit.config.schema.Config` from YAML files and ``key=value`` overrides.

Merge order (later wins)::

    defaults in kit/config/schema.py
      <- configs/competitions/<comp>.yaml      (or any YAML path given as comp=...)
      <- configs/models/<model>.yaml
      <- the competition's per-model image size (comp.image_sizes.<model>)
      <- hparams=<best_hparams.yaml>           (written by ``kit tune``; only the search space's keys)
      <- key=value overrides from the command line

A competition or model YAML is a partial top-level config, so a model file may also set
``train:`` or ``augment:`` values. OmegaConf checks every key, type and choice against the dataclasses;
we turn its errors into one-line :class:`~kit.errors.KitError` messages with the nearest valid keys or values.
Every source passes :func:`merge`, which refuses ``${...}`` resolvers; :func:`kit.config.checks.validate` then
checks ranges, names and classes of the resolved config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, EnumNode, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from kit.config.checks import validate
from kit.config.schema import Config
from kit.config.yaml_files import read_yaml, refuse_resolvers
from kit.errors import KitError, nearest, unknown_choice

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIRS = [PROJECT_ROOT / "configs", Path(__file__).resolve().parents[1] / "configs"]
SECTIONS = [f.name for f in dataclasses.fields(Config)]

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
        if not path.exists():
            raise KitError(f"config file {path} does not exist", "give a preset name or an existing YAML path")
        return path
    for base in CONFIG_DIRS:
        candidate = base / kind / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise unknown_choice("competition" if kind == "competitions" else "model", name_or_path, presets(kind))


def read_settings(path: Path, what: str = "config file") -> dict:
    """A settings YAML file (untrusted: see :mod:`kit.config.yaml_files`) as a nested mapping."""
    return read_yaml(Path(path), SECTIONS, what)


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


def merge(base: DictConfig, update: Any, origin: str) -> DictConfig:
    """``update`` (a nested mapping or DictConfig) merged over ``base``; every source of settings comes through here."""
    refuse_resolvers(OmegaConf.to_container(update, resolve=False) if isinstance(update, DictConfig) else update, origin)
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


def dotted_leaves(data: Any, prefix: str = "") -> list[str]:
    """``{"model": {"dropout": 0.2}}`` -> ``["model.dropout"]``: the keys a partial config sets."""
    if not isinstance(data, dict) or not data:
        return [prefix.rstrip(".")] if prefix else []
    return [leaf for key, value in data.items() for leaf in dotted_leaves(value, f"{prefix}{key}.")]


def check_hparams(settings: dict, space: Any, path: Path, model: str) -> None:
    """An hparams file may set only the keys of the model's search space (``tuner.space``): the keys that
    ``kit tune`` writes to best_hparams.yaml, never data.root, run.root or predict.output."""
    allowed = {str(key) for key in (space or {})}
    for leaf in dotted_leaves(settings):
        parts = leaf.split(".")
        if not any(".".join(parts[:n]) in allowed for n in range(1, len(parts) + 1)):
            raise KitError(
                f"hparams file {path} sets '{leaf}', which is not in tuner.space of model {model}",
                f"an hparams file may set only the tuned keys ({', '.join(sorted(allowed)) or 'none declared'}); "
                "give other settings as key=value",
            )


def load_config(overrides: list[str] | None = None, comp: str = "demo", model: str = "resnet20") -> Config:
    """Build the resolved :class:`Config` from presets and ``key=value`` overrides."""
    selectors, dotlist = _parse_overrides(list(overrides or []))
    comp = selectors.get("comp", comp)
    model = selectors.get("model", model)

    cfg = OmegaConf.structured(Config)
    comp_path = _preset_path("competitions", comp)
    cfg = merge(cfg, read_settings(comp_path), str(comp_path))
    model_path = _preset_path("models", model)
    cfg = merge(cfg, read_settings(model_path), str(model_path))
    if cfg.model.name in cfg.comp.image_sizes:
        cfg.model.image_size = int(cfg.comp.image_sizes[cfg.model.name])
    if "hparams" in selectors:
        hparams_path = Path(selectors["hparams"])
        if not hparams_path.exists():
            raise KitError(f"hparams file {hparams_path} does not exist", "pass the best_hparams.yaml that kit tune wrote")
        hparams = read_settings(hparams_path, "hparams file")
        check_hparams(hparams, OmegaConf.to_container(cfg.tuner.space, resolve=False), hparams_path, str(cfg.model.name))
        cfg = merge(cfg, hparams, str(hparams_path))
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
    cfg = merge(cfg, cli, "command line")
    try:
        config: Config = OmegaConf.to_object(cfg)  # resolves ${...} references between settings
    except OmegaConfBaseException as exc:
        raise KitError(f"config: {str(exc).splitlines()[0]}", "check interpolations such as ${comp.name}") from None
    validate(config)
    return config


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as saved in every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(path: Path) -> Config:
    """Load a config saved by :func:`to_yaml` (e.g. a run's ``config.yaml``), checked as at load time."""
    return with_settings(Config(), read_settings(Path(path)), str(path))


def with_settings(cfg: Config, settings: dict[str, Any], origin: str) -> Config:
    """A copy of ``cfg`` with a partial config (nested mapping) merged in, every key, type and choice checked;
    ranges, names and classes validated as at load time; a mistake is a one-line KitError."""
    try:
        config: Config = OmegaConf.to_object(merge(OmegaConf.structured(cfg), settings, origin))
    except OmegaConfBaseException as exc:
        raise KitError(f"{origin}: {str(exc).splitlines()[0]}", "check interpolations such as ${comp.name}") from None
    try:
        validate(config)
    except KitError as exc:
        raise KitError(f"{origin}: {exc.message}", exc.hint) from None
    return config
