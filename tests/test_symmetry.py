"""The images' symmetries are one table (kit.config.symmetry): the flip words with their axes, and the TTA views
with their transforms and the flips they need. Config loading, the augmenters and inference all read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kit.config import AugmentConfig, Flip, load_config, load_config_with_origins
from kit.config.symmetry import FLIP_AXES, HEIGHT, TTA_VIEWS, WIDTH, TtaView
from kit.data.augment import build_online_augmenter, offline_augment
from kit.errors import KitError
from kit.inference import predict_probabilities


def load_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flip: str, tta: list[str]) -> tuple:
    """load_config_with_origins for a competition whose data allows ``flip`` and a model preset wishing ``tta``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "models").mkdir(parents=True, exist_ok=True)
    (tmp_path / "configs" / "models" / "wish.yaml").write_text(f"model: {{name: cnn}}\npredict: {{tta: [{', '.join(tta)}]}}\n")
    comp = tmp_path / "data.yaml"
    comp.write_text(f"comp: {{name: shapes}}\naugment: {{flip: {flip}}}\n")
    return load_config_with_origins([f"comp={comp}", "model=wish"])


class TopLeftPixel:
    """A stand-in model: each image's "probability" is its top-left red value, so a view's effect is readable."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return batch[:, 0, 0, :1]


@pytest.mark.slow
def test_a_view_added_to_the_table_is_kept_by_loading_where_the_data_allows_it_and_applied_by_inference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    anti_transpose = TtaView(lambda x: x[:, ::-1, ::-1].swapaxes(1, 2), frozenset({WIDTH, HEIGHT}))
    monkeypatch.setitem(TTA_VIEWS, "antitranspose", anti_transpose)

    cfg, _ = load_pair(tmp_path, monkeypatch, "both", ["antitranspose", "hflip"])
    assert cfg.predict.tta == ["antitranspose", "hflip"]
    cfg, origins = load_pair(tmp_path, monkeypatch, "horizontal", ["antitranspose", "hflip"])
    assert cfg.predict.tta == ["hflip"]
    assert "without antitranspose: augment.flip horizontal" in origins["predict.tta"]

    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3)).astype(np.float32)
    dataset = [(images, np.zeros((5, 1), np.float32), np.array([f"i{k}" for k in range(5)]))]
    _, probs = predict_probabilities(TopLeftPixel(), dataset, ["antitranspose", "hflip"], progress=False)
    # top-left of the image, of its anti-transpose (the bottom-right), of its mirror (the top-right)
    expected = (images[:, 0, 0, 0] + images[:, -1, -1, 0] + images[:, 0, -1, 0]) / 3
    np.testing.assert_allclose(probs[:, 0], expected, rtol=1e-6)


def test_each_view_is_the_numpy_transform_inference_always_applied() -> None:
    x = np.arange(2 * 5 * 5 * 3).reshape(2, 5, 5, 3)
    numpy_views = {
        "flip": np.flip(x, 2),
        "hflip": np.flip(x, 2),
        "vflip": np.flip(x, 1),
        "rot90": np.rot90(x, 1, axes=(1, 2)),
        "rot180": np.rot90(x, 2, axes=(1, 2)),
        "rot270": np.rot90(x, 3, axes=(1, 2)),
        "transpose": np.swapaxes(x, 1, 2),
    }
    assert set(TTA_VIEWS) == set(numpy_views)
    for name, view in TTA_VIEWS.items():
        np.testing.assert_array_equal(view.transform(x), numpy_views[name], err_msg=name)


def test_an_unknown_view_is_one_line_naming_the_tables_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TTA_VIEWS, "antitranspose", TTA_VIEWS["transpose"])
    with pytest.raises(KitError, match="unknown TTA transform 'antitransp'") as info:
        predict_probabilities(TopLeftPixel(), [np.zeros((1, 4, 4, 3))], ["antitransp"], progress=False)
    assert "antitranspose" in info.value.one_line()


def test_the_flip_words_of_the_settings_are_the_tables() -> None:
    assert [str(word) for word in Flip] == list(FLIP_AXES)
    with pytest.raises(KitError, match="unknown value for augment.flip 'sideways'"):
        load_config(["augment.flip=sideways"])


def flipped_along(original: np.ndarray, augmented: np.ndarray) -> set[tuple[int, ...]]:
    """Which flips of one image [H, W, C] (as batch axes: HEIGHT, WIDTH) ``augmented`` equals."""
    candidates = {(): original, (WIDTH,): original[:, ::-1], (HEIGHT,): original[::-1], (WIDTH, HEIGHT): original[::-1, ::-1]}
    return {axes for axes, image in candidates.items() if np.array_equal(image, augmented)}


@pytest.mark.slow
def test_a_flip_words_axes_come_from_the_table_for_loading_and_both_augmenters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the table to say that ``horizontal`` flips the height axis, every reader would follow it."""
    monkeypatch.setitem(FLIP_AXES, "horizontal", (HEIGHT,))
    cfg, _ = load_pair(tmp_path, monkeypatch, "horizontal", ["hflip", "vflip"])
    assert cfg.predict.tta == ["vflip"]

    images = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    labels = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    augment = AugmentConfig(flip="horizontal", color_jitter=0.0, seed=3)
    online, _ = build_online_augmenter(augment, num_classes=2)(images, labels)
    offline, _ = offline_augment(images, labels, augment, seed=3)
    for augmented in (np.asarray(online).astype(np.uint8), offline):
        seen = [flipped_along(original, image) for original, image in zip(images, augmented, strict=True)]
        assert all(found and found <= {(), (HEIGHT,)} for found in seen), seen
        assert any((HEIGHT,) in found for found in seen)  # 16 coins: some images were flipped


@pytest.mark.slow
def test_importing_the_table_imports_no_numpy() -> None:
    code = "import sys, kit.config.symmetry; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_predict_warns_in_one_line_of_command_line_views_the_data_forbids(tmp_path: Path, capsys) -> None:
    from kit.predict import predict

    cfg = load_config(["comp=demo", "model=cnn", "tta=flip,vflip", f"run.root={tmp_path}"])  # digits: no flips
    assert cfg.predict.tta == ["flip", "vflip"]  # the command line is kept as given
    with pytest.raises(KitError, match="no finished run"):
        predict(cfg, [])
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "tta=flip,vflip" in warning[0] and "augment.flip=none" in warning[0]

    cfg = load_config(["comp=cifake", "model=cnn", "tta=flip", f"run.root={tmp_path}"])  # mirror-symmetric photos
    with pytest.raises(KitError, match="no finished run"):
        predict(cfg, [])
    assert "WARNING" not in capsys.readouterr().out
