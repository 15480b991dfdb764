"""Filling the declared :class:`~kit.config.schema.Config` from YAML files and ``key=value`` overrides.

The rule: what the data dictates beats what a model prefers, and the user beats both. Merge order (later wins)::

    defaults in kit/config/schema.py
      <- configs/models/<model>.yaml            (the model's wishes: optimiser, epochs, augmentation, TTA)
      <- configs/competitions/<comp>.yaml       (the data: tables, classes, metric, symmetry, sizes; or a YAML path)
      <- the competition's per-model image size (comp.image_sizes.<model>)
      <- hparams=<best_hparams.yaml>            (written by ``kit tune``; only the search space's keys)
      <- key=value overrides from the command line

Two settings are constraints rather than values, so the order alone does not settle them:

- ``augment.flip`` is the symmetry the data allows. A model preset may narrow it (lstm: no flips) but never
  widen it: when both set it, the result is the flips both allow (horizontal + none = none).
- ``predict.tta`` views must be symmetries the resolved ``augment.flip`` allows (each view's needs are in
  :data:`kit.config.symmetry.TTA_VIEWS`: ``flip`` needs horizontal, ``vflip`` vertical, the rotations both).
  A view a preset or hparams file asks for that the data forbids is dropped (``kit config --origin`` says so);
  views given on the command line are kept as given, and ``kit predict`` prints a WARNING line naming them.

:func:`load_config_with_origins` also returns where each value came from (a file, ``command line`` or
``default``), which ``kit config --origin`` prints.

A competition or model YAML is a partial top-level config, so a model file may also set
``train:`` or ``augment:`` values. OmegaConf checks every key, type and choice against the dataclasses;
we turn its errors into one-line :class:`~kit.errors.KitError` messages with the nearest valid keys or values.
Every source passes :func:`merge`, which refuses ``${...}`` resolvers; :func:`kit.config.checks.validate` then
checks ranges, names and classes of the resolved config.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, EnumNode, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from kit.config.checks import validate
from kit.config.folders import preset_dirs
from kit.config.schema import Config, Flip
from kit.config.symmetry import FLIP_AXES, allowed_flips, flip_word, forbidden_views
from kit.config.yaml_files import check_yaml_bytes, parse_yaml, read_yaml, refuse_resolvers
from kit.errors import KitError, nearest, quoted, unknown_choice

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
    # the short forms competitors type (fastai's lr, bs, wd)
    "lr": "train.learning_rate",
    "bs": "train.batch_size",
    "wd": "train.weight_decay",
}
SELECTORS = ("comp", "model", "hparams")


def presets(kind: str) -> list[str]:
    """Names of the YAML presets of one kind (``competitions`` or ``models``)."""
    names = set()
    for base in preset_dirs():
        names.update(p.stem for p in (base / kind).glob("*.yaml"))
    return sorted(names)


def _preset_path(kind: str, name_or_path: str, also: Iterable[str] = ()) -> Path:
    """The YAML of a preset name (or a path given as one); an unknown name's error suggests presets and ``also``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise KitError(f"config file {path} does not exist", "give a preset name or an existing YAML path")
        return path
    for base in preset_dirs():
        candidate = base / kind / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise unknown_choice("competition" if kind == "competitions" else "model", name_or_path, sorted({*presets(kind), *also}))


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


def leaf_keys() -> list[str]:
    """The dotted keys that hold a value (not the groups ``train``, ``model``, ...): what a user can set."""
    keys = set(all_keys())
    return sorted(k for k in keys if not any(other.startswith(k + ".") for other in keys))


def suggest_keys(key: str, keys: Iterable[str] | None = None, n: int = 3) -> list[str]:
    """The settings an unknown ``key`` probably meant, ranked by meaning before spelling: keys named by what its last
    part means (a short form of :data:`ALIASES`, ``train.lr`` -> ``train.learning_rate``, ``predict.bs`` ->
    ``predict.batch_size``) or by that part itself (``batch_size`` -> ``train.batch_size``), key's own section first
    and shallower keys before deeper ones; then the nearest spellings."""
    choices = sorted(set(leaf_keys() if keys is None else keys))
    section, _, tail = key.strip().lower().rpartition(".")
    meant = ALIASES.get(tail, tail).rsplit(".", 1)[-1]
    by_meaning = sorted(
        (k for k in choices if k.rsplit(".", 1)[-1] == meant),
        key=lambda k: (k.rpartition(".")[0] != section, k != ALIASES.get(tail), k.count("."), k),
    )
    return list(dict.fromkeys([*by_meaning, *nearest(key, choices, n)]))[:n]


def merge(base: DictConfig, update: Any, origin: str) -> DictConfig:
    """``update`` (a nested mapping or DictConfig) merged over ``base``; every source of settings comes through here."""
    refuse_resolvers(OmegaConf.to_container(update, resolve=False) if isinstance(update, DictConfig) else update, origin)
    try:
        return OmegaConf.merge(base, update)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = str(exc.full_key or exc.key or "")
        raise KitError(f"{origin}: unknown setting '{quoted(key)}'", f"did you mean {' or '.join(suggest_keys(key))}?") from None
    except ValidationError as exc:
        if isinstance(exc.child_node, EnumNode) and isinstance(exc.value, (str, int, float)):  # a scalar, not a list or null
            raise unknown_choice(f"value for {exc.full_key}", str(exc.value), exc.child_node.enum_type) from None
        group = OmegaConf.select(base, str(exc.full_key), default=None)
        if isinstance(group, DictConfig):  # train=3: a value for a whole group of settings
            first = next(iter(group.keys()), "key")
            raise KitError(
                f"{origin}: '{exc.full_key}' is a group of settings, not one",
                f"set one of its keys, e.g. {exc.full_key}.{first}=...",
            ) from None
        reason = (exc.msg or str(exc) or type(exc).__name__).splitlines()[0]
        raise KitError(f"{origin}: setting '{exc.full_key}': {reason}", "give a value of the right type") from None
    except OmegaConfBaseException as exc:
        raise KitError(f"{origin}: {str(exc).splitlines()[0]}", "check the setting's spelling and type") from None


def _parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    selectors: dict[str, str] = {}
    dotlist: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise KitError(f"argument '{quoted(item)}' is not key=value", "write settings as key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        if key in SELECTORS:
            selectors[key] = value
        else:
            if key == "predict.tta" and not value.startswith("["):
                value = "[" + value + "]" if value not in ("", "none") else "[]"
            if value.strip().lower() in ("on", "off"):  # YAML 1.1 reads them as booleans: keep the word (a choice)
                value = f"'{value.strip()}'"
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


class _Origins:
    """Where each dotted key got its value: the last source whose settings named it."""

    def __init__(self) -> None:
        self.by_key: dict[str, str] = {}

    def record(self, settings: Any, origin: str) -> None:
        for leaf in dotted_leaves(settings):
            self.by_key[leaf] = origin

    def merged(self, cfg: DictConfig, settings: dict, origin: str) -> DictConfig:
        """``settings`` (a file's) merged over ``cfg``, each key it sets recorded as coming from ``origin``."""
        merged = merge(cfg, settings, origin)
        self.record(settings, origin)
        return merged

    def of(self, key: str) -> str:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):  # tuner.space.x.min came with tuner.space.x
            prefix = ".".join(parts[:n])
            if prefix in self.by_key:
                return self.by_key[prefix]
        return "default"


def _flip_of(settings: dict) -> str | None:
    augment = settings.get("augment")
    value = augment.get("flip") if isinstance(augment, dict) else None
    return None if value is None else str(value)


def _narrow_flip(cfg: DictConfig, model_settings: dict, comp_settings: dict, origins: _Origins, where: str) -> None:
    """A model preset may narrow the competition's allowed flips, never widen them."""
    model_flip, comp_flip = _flip_of(model_settings), _flip_of(comp_settings)
    if model_flip is None or comp_flip is None or model_flip not in FLIP_AXES or comp_flip not in FLIP_AXES:
        return  # one source only (the order settled it), or a bad choice that the merge has already refused
    cfg.augment.flip = Flip[flip_word(allowed_flips(model_flip) & allowed_flips(comp_flip))]
    origins.by_key["augment.flip"] = where


def _allowed_tta(cfg: DictConfig, origins: _Origins) -> None:
    """Drop the TTA views a preset or hparams file asks for that the data's symmetry forbids."""
    source = origins.of("predict.tta")
    if source in ("command line", "default"):
        return
    views = [str(v) for v in cfg.predict.tta]
    forbidden = forbidden_views(views, cfg.augment.flip)
    kept = [v for v in views if v not in forbidden]
    if kept != views:
        dropped = ", ".join(v for v in views if v not in kept)
        cfg.predict.tta = kept
        origins.by_key["predict.tta"] = (
            f"{source}, without {dropped}: augment.flip {cfg.augment.flip} ({origins.of('augment.flip')}) forbids it"
        )


def _model_presets(model: str, model_defaults: Mapping[str, dict]) -> list[tuple[dict, str]]:
    """The model's preset YAML, or, for a model that has none but brings its own settings (a backbone table row),
    ``defaults/backbone.yaml`` and then the row's settings: each with the origin ``kit config --origin`` names."""
    if not _is_path(model) and model not in model_defaults and model not in presets("models"):
        model = next((name for name in (*presets("models"), *model_defaults) if name.lower() == model.lower()), model)  # ResNet9
    own = model_defaults.get(model) if not _is_path(model) else None
    if own is None or any((base / "models" / f"{model}.yaml").is_file() for base in preset_dirs()):
        path = _preset_path("models", model, also=model_defaults)
        return [(read_settings(path), str(path))]
    base = next((d / "defaults" / "backbone.yaml" for d in preset_dirs() if (d / "defaults" / "backbone.yaml").is_file()), None)
    common = [(read_settings(base), str(base))] if base is not None else []
    return [*common, (own, f"backbone table row {model} (kit list)")]


def _is_path(name: str) -> bool:
    return Path(name).suffix in (".yaml", ".yml")


def load_config(
    overrides: list[str] | None = None,
    comp: str = "demo",
    model: str = "resnet20",
    model_defaults: Mapping[str, dict] | None = None,
) -> Config:
    """Build the resolved :class:`Config` from presets and ``key=value`` overrides (order: module docstring);
    ``model_defaults``: see :func:`load_config_with_origins`."""
    return load_config_with_origins(overrides, comp=comp, model=model, model_defaults=model_defaults)[0]


def load_config_with_origins(
    overrides: list[str] | None = None,
    comp: str = "demo",
    model: str = "resnet20",
    model_defaults: Mapping[str, dict] | None = None,
) -> tuple[Config, dict[str, str]]:
    """:func:`load_config`, and for every dotted key of the result the source of its value: a file path,
    ``command line``, or ``default``; a value a constraint changed says which and why.

    ``model_defaults``: the settings each model without a preset YAML brings by itself, by name (kit's backbone table
    rows, :func:`kit.models.backbones.row_settings`), merged over ``defaults/backbone.yaml``."""
    selectors, dotlist = _parse_overrides(list(overrides or []))
    comp = selectors.get("comp", comp)
    model = selectors.get("model", model)
    origins = _Origins()

    cfg = OmegaConf.structured(Config)
    for model_settings, model_path in _model_presets(model, model_defaults or {}):
        cfg = origins.merged(cfg, model_settings, str(model_path))
    comp_path = _preset_path("competitions", comp)
    comp_settings = read_settings(comp_path)
    cfg = origins.merged(cfg, comp_settings, str(comp_path))
    _narrow_flip(cfg, model_settings, comp_settings, origins, f"{comp_path} narrowed by {model_path}")
    if cfg.model.name in cfg.comp.image_sizes:
        cfg.model.image_size = int(cfg.comp.image_sizes[cfg.model.name])
        origins.by_key["model.image_size"] = f"{comp_path} (comp.image_sizes.{cfg.model.name})"
    if "hparams" in selectors:
        hparams_path = Path(selectors["hparams"])
        if not hparams_path.exists():
            raise KitError(f"hparams file {hparams_path} does not exist", "pass the best_hparams.yaml that kit tune wrote")
        hparams = read_settings(hparams_path, "hparams file")
        check_hparams(hparams, OmegaConf.to_container(cfg.tuner.space, resolve=False), hparams_path, str(cfg.model.name))
        cfg = origins.merged(cfg, hparams, str(hparams_path))
    for item in dotlist:  # train=3: a value for a whole group of settings, which OmegaConf reports without its key
        key = item.split("=", 1)[0]
        group = OmegaConf.select(cfg, key, default=None)
        if isinstance(group, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(group)):  # not a dict setting
            first = next(iter(group.keys()), "key")
            raise KitError(
                f"command line: '{quoted(key)}' is a group of settings, not one", f"set one of its keys, e.g. {key}.{first}=..."
            )
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as exc:
        raise KitError(f"command line: {str(exc).splitlines()[0]}", "write settings as key=value") from None
    except yaml.YAMLError as exc:  # OmegaConf parses each value as YAML: "model.dropout=[1" is not
        bad = next((item for item in dotlist if _bad_yaml_value(item)), " ".join(dotlist))
        raise KitError(
            f"command line: cannot read the value of '{quoted(bad)}' ({getattr(exc, 'problem', None) or 'not valid YAML'})",
            "quote it or close its brackets, e.g. predict.tta=[flip,vflip] or key='text'",
        ) from None
    cfg = merge(cfg, cli, "command line")
    origins.record(OmegaConf.to_container(cli, resolve=False), "command line")
    _allowed_tta(cfg, origins)
    try:
        config: Config = OmegaConf.to_object(cfg)  # resolves ${...} references between settings
    except OmegaConfBaseException as exc:
        raise KitError(f"config: {str(exc).splitlines()[0]}", "check interpolations such as ${comp.name}") from None
    validate(config)
    return config, {key: origins.of(key) for key, _ in _leaf_items(_plain(config))}


def _plain(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def _leaf_items(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf, like :func:`dotted_leaves`; keys may themselves hold dots (tuner.space)."""
    if not isinstance(data, dict) or not data:
        return [(prefix.rstrip("."), data)] if prefix else []
    return [item for key, value in data.items() for item in _leaf_items(value, f"{prefix}{key}.")]


def origin_lines(cfg: Config, origins: dict[str, str]) -> list[str]:
    """``key = value  # source`` for every setting, as ``kit config --origin`` prints them."""
    items = _leaf_items(_plain(cfg))
    return [f"{key} = {json.dumps(value, default=str)}  # {origins.get(key, 'default')}" for key, value in items]


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as saved in every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def readable_yaml(cfg: Config, path: Path | str) -> str:
    """:func:`to_yaml`, checked to be within the budgets kit reads settings files with: kit never writes a
    config.yaml (6,000 inferred classes, long names) that :func:`from_yaml` would then refuse."""
    text = to_yaml(cfg)
    check_yaml_bytes(len(text.encode()), path, "the settings to be written to")
    parse_yaml(text, Path(path), SECTIONS)
    return text


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
