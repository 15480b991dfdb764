"""The audit's small cross-validated models: the metadata shortcut, and adversarial validation on pixels.

Each warning is worded by the feature that drives it: a model on constant columns learns nothing from them,
so constant columns are dropped before fitting and never named (every image 32x32 cannot make "image sizes"
predict anything; the file size of same-sized PNGs follows their content).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = ["width", "height", "aspect", "file_size", "channels", "jpeg_quality"]
PIXEL_SIDE = 8  # grayscale thumbnail side seen by the adversarial model
HISTOGRAM_BINS = 8  # per RGB channel
MIN_PER_SIDE = 10  # fewer images on either side: no adversarial score (chance AUC varies too much)

_ADVICE = {
    "size": "the classes have different image sizes: resize uniformly and check the test images look the same",
    "content_size": (
        "every image is {size}, so file size follows the content's compressibility (or the encoder that wrote it), "
        "not the image size: check every class was encoded the same way"
    ),
    "file_size": "file size follows image size and encoding: resize and re-encode uniformly",
    "jpeg_quality": "the classes were compressed at different JPEG qualities: re-encode uniformly",
    "format": "the classes come in different file formats: re-encode uniformly",
    "channels": "grayscale and colour images differ by class: convert all to RGB",
}
_NAMES = {"width": "image width", "height": "image height", "aspect": "aspect ratio", "file_size": "file size"}
_NAMES |= {"channels": "channel count", "jpeg_quality": "JPEG quality"}


def feature_name(column: str) -> str:
    if column.startswith("format_"):
        return f"file format ({column.removeprefix('format_')})"
    return _NAMES.get(column, column)


def metadata_features(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The metadata table, without columns that are constant on these rows (they cannot drive anything)."""
    numeric = frame[FEATURES].astype(float).fillna(-1.0)
    formats = pd.get_dummies(frame["format"], prefix="format").astype(float)
    table = pd.concat([numeric, formats], axis=1)
    table = table.loc[:, table.nunique() > 1]
    return table.to_numpy(), list(table.columns)


def _cross_validated(model: Any, x: np.ndarray, target: np.ndarray, seed: int) -> np.ndarray | None:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    values, counts = np.unique(target, return_counts=True)
    if len(values) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=seed)
    return cross_val_predict(model, x, target, cv=folds, method="predict_proba")


def metadata_model_score(frame: pd.DataFrame, target: np.ndarray, seed: int) -> dict[str, Any] | None:
    """Cross-validated score of a random forest predicting ``target`` from the non-constant metadata alone.

    Binary targets: ROC AUC of out-of-fold probabilities. Multi-class: accuracy, with the majority-class
    rate and the normalised gain over it. None when a class has fewer than 2 examples or nothing varies.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score

    x, names = metadata_features(frame)
    values, counts = np.unique(target, return_counts=True)
    if not names:
        return None
    # small forest, one thread: the CPU is shared and this is a smoke detector, not a model
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_depth=12, random_state=seed, n_jobs=1)
    proba = _cross_validated(forest, x, target, seed)
    if proba is None:
        return None
    forest.fit(x, target)
    importance = sorted(zip(names, forest.feature_importances_, strict=True), key=lambda t: -t[1])
    result: dict[str, Any] = {
        "examples": len(target),
        "features": names,
        "top_features": [{"feature": n, "importance": round(float(v), 4)} for n, v in importance[:5]],
    }
    if len(values) == 2:
        result["metric"] = "auc"
        result["value"] = float(roc_auc_score(target == values[1], proba[:, 1]))
    else:
        majority = counts.max() / counts.sum()
        accuracy = float(accuracy_score(target, values[proba.argmax(axis=1)]))
        result.update(
            metric="accuracy", value=accuracy, majority=float(majority), gain=float((accuracy - majority) / (1 - majority))
        )
    return result


def driver_advice(result: dict[str, Any], frame: pd.DataFrame) -> tuple[str, str]:
    """The words for the feature that drives a metadata model, and what to do about it."""
    top = result["top_features"][0]["feature"]
    driver = feature_name(top)
    if top in ("width", "height", "aspect"):
        return driver, _ADVICE["size"]
    if top == "file_size":
        sizes = (frame["width"].astype("Int64").astype(str) + "x" + frame["height"].astype("Int64").astype(str)).unique()
        if len(sizes) == 1:
            return f"file size (every image {sizes[0]})", _ADVICE["content_size"].format(size=sizes[0])
        return driver, _ADVICE["file_size"]
    if top.startswith("format_"):
        return "file format", _ADVICE["format"]
    return driver, _ADVICE.get(top, "check how the images of each class were made")


def shortcut_warning(result: dict[str, Any], frame: pd.DataFrame, auc: float, gain: float) -> str | None:
    """The SHORTCUT warning, named by its driving feature, or None below the thresholds."""
    driver, advice = driver_advice(result, frame)
    features = ", ".join(f"{feature_name(f['feature'])} {f['importance']:.2f}" for f in result["top_features"][:3])
    if result["metric"] == "auc" and result["value"] > auc:
        score = f"cross-validated AUC {result['value']:.3f}"
    elif result["metric"] == "accuracy" and result["gain"] > gain:
        score = f"cross-validated accuracy {result['value']:.3f} (majority class {result['majority']:.3f})"
    else:
        return None
    return (
        f"SHORTCUT: {driver} predicts the label with {score} (metadata model; importance: {features}): {advice}; "
        "otherwise your validation score will not transfer to the leaderboard"
    )


# ------------------------------------------------------------------------------------ adversarial validation


def pixel_features(path: str) -> np.ndarray | None:
    """Colour histogram (8 bins per RGB channel, as fractions), channel means and spreads, and an 8x8
    grayscale thumbnail of one image; None when it cannot be decoded."""
    import cv2

    from kit.data.images import ImageError, decode

    try:
        image = decode(path, max_side=64)
    except (ImageError, OSError):
        return None
    histogram = [np.histogram(image[..., c], bins=HISTOGRAM_BINS, range=(0, 256))[0] / image[..., c].size for c in range(3)]
    flat = image.reshape(-1, 3).astype(np.float32)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    thumbnail = cv2.resize(gray, (PIXEL_SIDE, PIXEL_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255
    return np.concatenate([*histogram, flat.mean(0) / 255, flat.std(0) / 255, thumbnail]).astype(np.float32)


def adversarial_validation(paths: list[str], is_test: np.ndarray, seed: int, workers: int) -> dict[str, Any] | None:
    """Cross-validated AUC of gradient boosting telling test images from training images on their pixels.

    0.5: the test set looks like the training set; towards 1: it does not, and validation scores will
    overstate the leaderboard. Also the out-of-fold probabilities (for the plot). None with too few images.
    """
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from kit.progress import progress

    with ThreadPoolExecutor(max_workers=workers) as pool:  # cv2 decoding releases the GIL
        features = list(progress(pool.map(pixel_features, paths), "audit: adversarial validation's pixels", len(paths), "img"))
    keep = np.array([f is not None for f in features], dtype=bool)
    target = np.asarray(is_test, dtype=int)[keep]
    if target.sum() < MIN_PER_SIDE or (1 - target).sum() < MIN_PER_SIDE:
        return None
    x = np.stack([f for f in features if f is not None])
    model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, min_samples_leaf=10, random_state=seed)
    proba = _cross_validated(model, x, target, seed)
    if proba is None:
        return None
    return {
        "examples": int(len(target)),
        "test": int(target.sum()),
        "metric": "auc",
        "value": float(roc_auc_score(target, proba[:, 1])),
        "features": "colour histogram, channel mean and spread, 8x8 grayscale thumbnail",
        "oof_test": proba[target == 1, 1].tolist(),
        "oof_train": proba[target == 0, 1].tolist(),
    }
