"""Reliability, runs that disagree with their data: wherever a run is used (predict, evaluate, export, kernel build,
kit runs) its classes, image size and model are checked against its model file and the current settings, and a
mismatch is one line instead of silently wrong labels; test labels never add classes.

Runs are tiny hand-made ones (tests/run_fixtures.py): real Keras files and real records, no training.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split

from kit.config import Config, to_yaml
from kit.errors import KitError

N_TEST = 6


@pytest.fixture
def run(tmp_path: Path) -> tuple[Config, Path]:
    """A binary run (classes a, b) of comp ``tiny`` with its val and test records and a sample submission."""
    cfg = make_config(tmp_path, ["a", "b"])
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "val", random_images(8, 0), np.arange(8) % 2, [f"v{i}" for i in range(8)])
    write_split(cfg, "test", random_images(N_TEST, 1), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    run_dir = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", make_model(1, seed=3))
    return cfg, run_dir


def _reordered(cfg: Config, run_dir: Path) -> Config:
    return dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, classes=["b", "a"]))


def _other_classes(cfg: Config, run_dir: Path) -> Config:
    return dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, classes=["cat", "dog"]))


def _model_of_another_competition(cfg: Config, run_dir: Path) -> Config:
    make_model(10, seed=1).save(run_dir / "best.keras")  # ten outputs in a two-class run
    return cfg


def _random_bytes_model(cfg: Config, run_dir: Path) -> Config:
    (run_dir / "best.keras").write_bytes(np.random.default_rng(0).bytes(1000))
    return cfg


def _another_image_size(cfg: Config, run_dir: Path) -> Config:
    import keras

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    model.save(run_dir / "best.keras")
    return cfg


def _another_competition(cfg: Config, run_dir: Path) -> Config:
    saved = dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, name="other-comp"))
    (run_dir / "config.yaml").write_text(to_yaml(saved))
    return cfg


def _records_with_other_classes(cfg: Config, run_dir: Path) -> Config:
    from kit.data.manifest import records_dir

    manifest = Path(records_dir(cfg)) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["classes"], data["num_classes"] = ["a", "b", "c"], 3  # rebuilt with a class the run never saw
    manifest.write_text(json.dumps(data))
    return dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, classes=[]))


ALL = ("predict", "evaluate", "export", "kernel build")
APPLYING = ("predict", "evaluate", "kernel build")  # uses that apply the run to this competition (export reads no data)
READING = ("predict", "evaluate")  # uses that read the records

# case -> (what goes wrong, the uses that must refuse it, words of the refusal)
CASES: dict[str, tuple[Callable[[Config, Path], Config], tuple[str, ...], list[str]]] = {
    "comp.classes reordered after training": (
        _reordered,
        APPLYING,
        ["trained on classes [a, b]", "now [b, a]", "every label would be swapped"],
    ),
    "other comp.classes": (_other_classes, APPLYING, ["comp.classes now [cat, dog]: other classes"]),
    "a run of another competition": (_another_competition, APPLYING, ["trained on competition other-comp, not tiny"]),
    "a best.keras of another competition": (
        _model_of_another_competition,
        ALL,
        ["10 output(s) where the run's 2 classes need 1"],
    ),
    "a best.keras of random bytes": (_random_bytes_model, ALL, ["cannot be loaded as a Keras model"]),
    "a best.keras of another image size": (
        _another_image_size,
        ALL,
        ["a 16x16 input where the run's model.image_size is 8"],
    ),
    "records rebuilt with other classes": (_records_with_other_classes, READING, ["hold classes [a, b, c]", "trained on [a, b]"]),
}


def _predict(cfg: Config, run_dir: Path) -> None:
    from kit.predict import predict

    predict(cfg, [run_dir])


def _evaluate(cfg: Config, run_dir: Path) -> None:
    from kit.evaluate import evaluate

    evaluate(cfg, run_dir)


def _export(cfg: Config, run_dir: Path) -> None:
    from kit.export import export

    export(cfg, run_dir, "savedmodel")


def _kernel_build(cfg: Config, run_dir: Path) -> None:
    from kit.kaggle import kernel

    kernel.build(dataclasses.replace(cfg, comp=dataclasses.replace(cfg.comp, slug="tiny")), "someone", [run_dir])


USES = {"predict": _predict, "evaluate": _evaluate, "export": _export, "kernel build": _kernel_build}


@pytest.mark.slow
@pytest.mark.parametrize(("case", "use"), [(case, use) for case, (_, uses, _) in CASES.items() for use in uses])
def test_a_run_that_disagrees_with_its_data_is_refused_wherever_it_is_used(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, use: str
) -> None:
    spoil, _, words = CASES[case]
    monkeypatch.chdir(tmp_path)  # kernel build writes build/ in the working folder
    cfg, run_dir = run
    cfg.predict.output = str(tmp_path / "out" / "submission.csv")
    cfg = spoil(cfg, run_dir)
    with pytest.raises(KitError) as info:
        USES[use](cfg, run_dir)
    for word in words:
        assert word in info.value.message, info.value.one_line()
    assert not (tmp_path / "out").exists() and not list(run_dir.glob("export*"))  # nothing written from it
    assert not (tmp_path / "build" / "model").exists()  # nothing packed


@pytest.mark.slow
def test_the_unspoiled_run_is_used(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline the cases spoil: the same run predicts and evaluates."""
    cfg, run_dir = run
    cfg.predict.output = str(tmp_path / "out" / "submission.csv")
    _predict(cfg, run_dir)
    assert (tmp_path / "out" / "submission.csv").is_file()
    _evaluate(cfg, run_dir)


@pytest.mark.parametrize("case", ["comp.classes reordered after training", "a best.keras of random bytes"])
def test_kit_runs_says_which_runs_cannot_be_used(run, case: str) -> None:
    from kit.runs_table import format_table, runs_table

    cfg, run_dir = run
    cfg = CASES[case][0](cfg, run_dir)
    rows, _, _ = runs_table(cfg)
    expected = "not usable now: trained on classes [a, b]" if "reordered" in case else "best.keras is not a Keras file"
    assert expected in rows[0].notes["state"] and expected in format_table(rows)


@pytest.mark.parametrize("content", ["[1, 2, 3]", "42", '"text"'])
def test_kit_runs_reads_a_metrics_file_that_is_not_an_object(run, content: str) -> None:
    from kit.runs_table import runs_table

    cfg, run_dir = run
    (run_dir / "metrics.json").write_text(content)
    (run_dir / "cv.json").write_text(content)
    rows, _, _ = runs_table(cfg)
    assert rows[0].values["best_val"] is None and rows[0].values["cv"] is None


# ---------------------------------------------------------------------------------------------- test labels


def test_test_labels_never_add_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A class present only in the labelled test folder keeps a binary task binary; its rows are unlabelled."""
    import cv2
    from run_fixtures import folder_comp_config

    from kit.data.sources import read_index

    cfg = folder_comp_config(tmp_path, "test-only-class")
    cfg.comp.classes = []
    layout = {"train/a": 4, "train/b": 4, "test/a": 2, "test/b": 2, "test/c": 3}
    for folder, n in layout.items():
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / "raw" / folder / f"{i}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    index, classes = read_index(cfg)
    assert classes == ["a", "b"]
    test = index[index["split"] == "test"]
    assert (test["label"] == -1).sum() == 3 and set(test.loc[test["label"] >= 0, "label"]) == {0, 1}
    assert "3 test label(s) name no class of the training data (e.g. 'c'" in capsys.readouterr().err
