"""kit: a TensorFlow/Keras kit for Kaggle image-classification competitions.

The same functions the ``kit`` command line calls, for notebooks (``import kit`` loads nothing heavy: each
is imported on first use, TensorFlow only when training or predicting)::

    from kit import load_config, fetch_data, build_records, train, predict

    cfg = load_config(["comp=demo", "model=cnn", "train.epochs=1"])  # the words `kit train ...` takes
    fetch_data(cfg)                    # kit data: the demo is written locally; other comps come from Kaggle
    manifest = build_records(cfg)      # kit records (train builds them too when missing or stale)
    print(manifest.counts["train"].total, "training images in", manifest.records_dir)
    run_dir = train(cfg)               # kit train: returns the run folder (history.csv, best.keras, plots/)
    submission = predict(cfg, [run_dir])  # kit predict: a validated submission.csv
    print(open(submission).read()[:80])

``load_config`` checks every setting as the CLI does (a mistake is one ``KitError`` line naming it).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> (module, function): the functions the CLI commands call.
_API = {
    "load_config": ("kit.settings", "load_settings"),
    "fetch_data": ("kit.workflow", "fetch_data"),
    "build_records": ("kit.data.records", "build_from_config"),
    "train": ("kit.workflow", "train"),
    "tune": ("kit.workflow", "tune"),
    "predict": ("kit.predict", "predict"),
}
__all__ = ["__version__", *_API]


def _api_function(name: str) -> Any:
    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)


def _api_property(name: str) -> property:
    def get(_module: types.ModuleType) -> Any:
        return _api_function(name)

    def set_submodule(_module: types.ModuleType, value: Any) -> None:
        # Importing the subpackage kit.train (or kit.predict) makes Python set kit.train = <module>; the submodule
        # stays reachable through sys.modules and `from kit.train import ...`, the name keeps the API function.
        if not isinstance(value, types.ModuleType):
            raise AttributeError(f"kit.{name} is kit's API function and cannot be replaced")

    return property(get, set_submodule, doc=f"kit.{name}: {_API[name][0]}.{_API[name][1]}")


class _KitPackage(types.ModuleType):
    """The ``kit`` package with its API functions resolved on first use. ``train`` and ``predict`` share their
    names with the subpackage ``kit.train`` and the module ``kit.predict``: a plain module ``__getattr__`` would
    hand out the module once any code imported it, so the names are properties of the package's class."""

    locals().update({name: _api_property(name) for name in _API})


sys.modules[__name__].__class__ = _KitPackage
