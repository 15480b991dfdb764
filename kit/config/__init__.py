"""Typed configuration, the public face of six modules:

- :mod:`kit.config.schema`: the declaration (dataclasses, StrEnum choices, each numeric setting's range);
- :mod:`kit.config.symmetry`: the flips each ``augment.flip`` word allows and the TTA views (transform, flips needed);
- :mod:`kit.config.yaml_files`: reading a settings file as untrusted input (size, aliases, sections);
- :mod:`kit.config.folders`: where presets are searched and where a user's new preset is written;
- :mod:`kit.config.loading`: the merge order (the data beats the model, the command line beats both),
  overrides, ``load_config``, where each value came from; :mod:`kit.config.checks`: ranges (of a whole config
  or one section, e.g. an AugmentConfig edited in Python), folder names and classes of the resolved config.

Declaration only: the checks that need the model registry or the search space are in :mod:`kit.settings`.
"""

from kit.config.checks import MAX_NAME_LENGTH, plain_name_problem, ranged_fields, validate
from kit.config.folders import PROJECT_ROOT, git_commit, preset_dirs, user_preset_dir
from kit.config.loading import (
    ALIASES,
    SELECTORS,
    all_keys,
    from_yaml,
    load_config,
    load_config_with_origins,
    origin_lines,
    presets,
    read_settings,
    readable_yaml,
    suggest_keys,
    to_yaml,
    with_settings,
)
from kit.config.schema import (
    AuditConfig,
    AugmentConfig,
    AugmentLibrary,
    AugmentMode,
    CompetitionConfig,
    Config,
    DataConfig,
    DistributionStrategy,
    FineTuneConfig,
    Flip,
    ImageFormat,
    KaggleConfig,
    LabelFormat,
    LrSchedule,
    Metric,
    MixedPrecision,
    ModelConfig,
    Optimizer,
    PredictConfig,
    ProbeConfig,
    Range,
    RunConfig,
    Source,
    SubmissionConfig,
    TableConfig,
    TrainConfig,
    TunerConfig,
    TunerKind,
)
from kit.config.yaml_files import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

__all__ = [
    "ALIASES", "MAX_NAME_LENGTH", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "PROJECT_ROOT",
    "SELECTORS",
    "AugmentConfig", "AugmentLibrary", "AugmentMode", "AuditConfig", "CompetitionConfig", "Config", "DataConfig",
    "DistributionStrategy", "FineTuneConfig", "Flip", "ImageFormat", "KaggleConfig", "LabelFormat", "LrSchedule",
    "Metric", "MixedPrecision", "ModelConfig", "Optimizer", "PredictConfig", "ProbeConfig", "Range", "RunConfig", "Source",
    "SubmissionConfig", "TableConfig", "TrainConfig", "TunerConfig", "TunerKind",
    "all_keys", "from_yaml", "git_commit", "load_config", "load_config_with_origins", "origin_lines", "plain_name_problem",
    "preset_dirs", "presets", "ranged_fields", "read_settings", "readable_yaml", "suggest_keys",
    "to_yaml", "user_preset_dir", "validate", "with_settings",
]  # fmt: skip
