"""kit: a TensorFlow/Keras kit for Kaggle image-classification competitions.

The functions the ``kit`` command line calls, for notebooks and scripts. ``import kit`` loads nothing heavy:
each function imports its stage when called, TensorFlow only when training or predicting::

    import kit

    if __name__ == "__main__":  # a script's guard, as for any code that starts worker processes
        cfg = kit.load_config(["comp=demo", "model=resnet9", "train.epochs=1"])  # the words `kit train` takes
        kit.fetch_data(cfg)                  # kit data: the demo is written locally, other comps come from Kaggle
        manifest = kit.build_records(cfg)    # kit records (kit.fit builds them too when missing or stale)
        print(manifest.counts["train"].total, "training images in", manifest.records_dir)
        run_dir = kit.fit(cfg)               # kit train: the run folder (history.csv, best.keras, plots/)
        submission = kit.predict_test(cfg, [run_dir])  # kit predict: a validated submission.csv
        print(open(submission).read()[:80])

``load_config`` checks every setting as the CLI does (a mistake is one ``KitError`` line naming it). The names
differ from the subpackages ``kit.train`` and ``kit.predict`` on purpose: ``kit.fit`` is always this function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kit.version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.io import URLPath

__all__ = ["__version__", "build_records", "fetch_data", "fit", "load_config", "predict_test", "tune"]


def load_config(overrides: list[str] | None = None, comp: str = "demo", model: str = "resnet20") -> Config:
    """The settings ``kit <command> WORDS`` would use (``overrides`` are those words), checked as the CLI does."""
    from kit.settings import load_settings

    return load_settings(overrides, comp=comp, model=model)


def fetch_data(cfg: Config) -> pd.DataFrame:
    """``kit data``: the competition in ``data.root`` (the demo written locally) and its checked index."""
    from kit.workflow import fetch_data as fetch

    return fetch(cfg)


def build_records(cfg: Config) -> Manifest:
    """``kit records``: the sharded TFRecords of ``cfg`` (reused when up to date) and their manifest."""
    from kit.data.records import build_from_config

    return build_from_config(cfg)


def fit(cfg: Config, resume: bool = False) -> Path | URLPath:
    """``kit train``: records built when missing or stale, then one run (or every fold); the run folder."""
    from kit.workflow import train

    return train(cfg, resume=resume)


def tune(cfg: Config) -> Path:
    """``kit tune``: the hyperparameter search (resumed when killed); its folder, with best_hparams.yaml."""
    from kit.workflow import tune as search

    return search(cfg)


def predict_test(cfg: Config, runs: Sequence[str | Path] = ()) -> Path:
    """``kit predict``: the test split predicted by ``runs`` (default: the newest run; several: an ensemble),
    written as a validated submission.csv; its path."""
    from kit.predict import predict

    return predict(cfg, [Path(run) for run in runs])
