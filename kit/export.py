"""``kit export``: a run's best.keras as a TF SavedModel, a TFLite (LiteRT) file or an ONNX model, checked in its own runtime.

Every kit model already takes raw RGB pixels 0-255 as float32 (S, S, 3) and does its own preprocessing, and ends in a
sigmoid (binary) or a softmax (kit.models.common), so an export is the model's graph as it is: nothing is wrapped.
The path of one export::

    RUN/best.keras -> Keras model.export (tf_saved_model | litert)      -> a temp folder RUN/export/.tmp-<format>-<pid>
                   -> onnx: Keras's SavedModel, then tf2onnx's SavedModel loader (see _convert_onnx: why not model.export)
    -> the file loaded back in its own runtime (tf.saved_model.load, ai_edge_litert's Interpreter, onnxruntime) and
       compared with best.keras on the same images (the run's val records, else test, else seeded random pixels)
    -> export.json beside it (input, output, classes, threshold, versions, the check) -> the folder renamed to
       RUN/export/<format>/ (a previous export is replaced only by a checked one)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.config import git_commit
from kit.data import resizing
from kit.data.manifest import read_manifest, records_dir
from kit.errors import KitError, unknown_choice
from kit.inference import class_names, resolve_threshold, split_dataset
from kit.io import as_path, read_json, write_json
from kit.run_model import load_model, run_config, saved_config
from kit.runs import BEST_MODEL, THRESHOLD_FILE, expand_runs, latest_run

if TYPE_CHECKING:
    import keras

    from kit.config import Config

EXPORT_DIR = "export"
EXPORT_JSON = "export.json"
CHECK_IMAGES = 32  # images each export is compared on: enough to cover every class's output range, cheap in any runtime
# float32 graphs rewritten by a converter (fused ops, another summation order) differ by ~1e-7 on probabilities;
# a difference above this means the converter changed the model, and the export is refused.
MAX_DIFFERENCE = 1e-4
# kit is installed from its checkout (not from PyPI, where "kit" is another project): the extra comes from there too.
INSTALL_HINT = "in kit's checkout: make dev, or pip install -e '.[export]'"


@dataclass(frozen=True)
class Format:
    keras_format: str  # the `format` of keras.Model.export
    file: str  # the model's name inside RUN/export/<format>/ (a folder for a SavedModel)
    packages: tuple[str, ...]  # modules the export and its check import (the `export` extra)
    runtime: str  # what loads it back
    load: str  # how a user loads it (written into export.json)


FORMATS = {
    "savedmodel": Format(
        "tf_saved_model", "saved_model", (), "tensorflow (tf.saved_model.load)", "tf.saved_model.load(path).serve(images)"
    ),
    "tflite": Format(
        "litert",
        "model.tflite",
        ("ai_edge_litert",),
        "ai_edge_litert.interpreter.Interpreter",
        "ai_edge_litert.interpreter.Interpreter(model_path=path): resize_tensor_input to (N,S,S,3), allocate_tensors, invoke",
    ),
    "onnx": Format(
        "onnx",
        "model.onnx",
        ("tf2onnx", "onnx", "onnxruntime"),
        "onnxruntime.InferenceSession (CPUExecutionProvider)",
        "onnxruntime.InferenceSession(path).run(None, {input_name: images})[0]",
    ),
}
_FORMAT_KEYS = ("format", "export.format")


def split_format(settings: Sequence[str] | None, given: str | None = None) -> tuple[str, list[str]]:
    """``format=...`` (or ``--format``) taken out of the command's settings and checked (``check_format``); the rest go
    to load_settings."""
    fmt, rest = given or "", []
    for item in settings or []:
        key, sep, value = item.partition("=")
        if sep and key.strip() in _FORMAT_KEYS:
            fmt = value
        else:
            rest.append(item)
    if not fmt:
        raise KitError("kit export needs a format", f"add format={'|'.join(FORMATS)}, e.g. kit export format=onnx")
    check_format(fmt)
    return fmt, rest


def check_format(fmt: str) -> Format:
    """The format, checked, and its optional packages importable: before any model is loaded."""
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise unknown_choice("export format", name, FORMATS)
    spec = FORMATS[name]
    missing = [package for package in spec.packages if importlib.util.find_spec(package) is None]
    if missing:
        raise KitError(
            f"format={name} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed", INSTALL_HINT
        )
    return spec


def export(cfg: Config, run_dir: Path | None, fmt: str) -> Path:
    """Export ``run_dir`` (default: the newest finished run of comp/model) as ``fmt``; return RUN/export/<fmt>/<file>."""
    spec = check_format(fmt)
    name = str(fmt).strip().lower()
    run = as_path(run_dir) if run_dir is not None else latest_run(cfg)
    members = expand_runs([run])
    if members != [run]:
        folds = ", ".join(str(m) for m in members[:3]) + (", ..." if len(members) > 3 else "")
        raise KitError(
            f"{run} holds {len(members)} models (a k-fold parent), not one {BEST_MODEL}",
            f"export one fold: run={folds.split(',')[0]}",
        )
    run_cfg = run_config(cfg, run, with_data=False)  # the run's own model and classes; this competition's data unread
    model = load_model(run)  # checked against the run's config.yaml: no classes made up for another model's outputs
    images, source = check_images(run_cfg, model)
    expected = np.asarray(model.predict_on_batch(images), dtype=np.float32)

    final = run / EXPORT_DIR / name
    staging = run / EXPORT_DIR / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        target = staging / spec.file
        with _quiet_converters():
            predict, io_names = _write_and_load(model, name, target)
            got = predict(images)
        difference = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == expected.shape else float("inf")
        if not difference <= MAX_DIFFERENCE:
            raise KitError(
                f"the {name} export of {run} does not reproduce {BEST_MODEL}: max abs difference {difference:.3g} on {source} "
                f"(shape {got.shape} vs {expected.shape}); nothing was written",
                "report it with the run's versions.json; use another format meanwhile",
            )
        # The output range says how much the check shows: an untrained net's near-constant output matches trivially.
        check = {"runtime": spec.runtime, "images": len(images), "on": source, "max_abs_difference": difference}
        check |= {"against": BEST_MODEL, "output_range": [float(expected.min()), float(expected.max())], "limit": MAX_DIFFERENCE}
        write_json(staging / EXPORT_JSON, describe(run_cfg, run, model, name, io_names, check))
        _replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    path = final / spec.file
    print(f"exported {path} ({spec.runtime}: max abs difference {difference:.2e} vs {BEST_MODEL} on {source})")
    return path


# --- writing each format ------------------------------------------------------------------------------------


def _write_and_load(model: keras.Model, name: str, target: Path) -> tuple[Predictor, dict[str, Any]]:
    """Write ``target`` and load it back; a TFLite file that needs TensorFlow's Select ops is written again for batch 1.

    Keras's converter allows Select (Flex) ops, which no LiteRT interpreter runs without the Flex delegate: the LSTM's
    loop over a dynamic batch is one (TensorListReserve ...). With a fixed batch of 1 the converter lowers it to
    builtins, so the file runs in the plain interpreter; export.json then says the batch is 1.
    """
    if name == "onnx":
        _convert_onnx(model, target)
        return _load_onnx(target)
    model.export(str(target), format=FORMATS[name].keras_format, verbose=False)
    if name == "savedmodel":
        return _load_savedmodel(target)
    try:
        predict, names = _load_tflite(target)
        predict(np.zeros((1, *model.input_shape[1:]), np.float32))
        return predict, names
    except RuntimeError as exc:
        if "Select TensorFlow op" not in str(exc):
            raise
    import tensorflow as tf

    single = [tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="image")]
    model.export(str(target), format="litert", input_signature=single, verbose=False)
    predict, names = _load_tflite(target)
    return (lambda images: np.concatenate([predict(images[i : i + 1]) for i in range(len(images))])), {**names, "batch": 1}


def _convert_onnx(model: keras.Model, target: Path) -> None:
    """Keras's SavedModel, converted by tf2onnx's SavedModel loader.

    Not ``model.export(format="onnx")``: that path hands tf2onnx a traced function, and tf2onnx (1.17) keeps every
    tensor the function captures as an extra *graph input*; Keras's Normalization layer with a fixed mean and variance
    (EfficientNet's stem, kit's ResNet50 caffe preprocessing) holds its constants as such tensors, so the ONNX model asks
    the caller for ``.../Sub/y:0`` and ``.../Sqrt/x:0`` besides the image. tf2onnx's SavedModel loader leaves captured
    tensors out of the inputs (they become constants), which is what ``python -m tf2onnx.convert --saved-model`` does.
    """
    import tf2onnx

    with tempfile.TemporaryDirectory(prefix="kit-export-") as folder:
        saved = str(Path(folder) / "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        graph_def, inputs, outputs, renames = tf2onnx.tf_loader.from_saved_model(saved, None, None, return_tensors_to_rename=True)
        tf2onnx.convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, tensors_to_rename=renames, output_path=str(target)
        )


# --- loading each format back in its own runtime ------------------------------------------------------------

Predictor = Callable[[np.ndarray], np.ndarray]


def _load_savedmodel(path: Path) -> tuple[Predictor, dict[str, Any]]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]
    (output_name,) = signature.structured_outputs
    return lambda images: np.asarray(loaded.serve(tf.constant(images))), {"input": input_name, "output": output_name}


def _load_tflite(path: Path) -> tuple[Predictor, dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()

    def predict(images: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(source["index"], list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(sink["index"]))

    return predict, {"input": source["name"], "output": sink["name"]}


def _load_onnx(path: Path) -> tuple[Predictor, dict[str, Any]]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types; tf2onnx leaves ops it cannot convert as they were
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"the ONNX export does not load in onnxruntime (an op tf2onnx could not convert, e.g. exact GELU's Erfc): {reason}",
            "use format=savedmodel or format=tflite",
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:  # the captured-tensor inputs of _convert_onnx's docstring: never hand a user such a model
        raise KitError(
            f"the ONNX export asks for {len(inputs)} inputs ({', '.join(i.name for i in inputs)}), not just the image",
            "report it with the run's versions.json; use format=savedmodel or format=tflite meanwhile",
        )
    name = inputs[0].name
    return lambda images: np.asarray(session.run(None, {name: images})[0]), {"input": name, "output": outputs[0].name}


# --- what the check runs on, what export.json says ----------------------------------------------------------


def check_images(cfg: Config, model: keras.Model, count: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``count`` images of the run's records (val, else test), else seeded random pixels; and what they are."""
    size = int(model.input_shape[1])
    for split in ("val", "test"):
        try:
            manifest = read_manifest(records_dir(cfg))
            if not manifest.count(split):
                continue
            batches = []
            for element in split_dataset(cfg, manifest, split):
                batches.append(np.asarray(element[0], dtype=np.float32))
                if sum(len(b) for b in batches) >= count:
                    break
        except KitError:
            break  # no records for this run here: random pixels
        images = np.concatenate(batches)[:count]
        if images.shape[1:] == (size, size, 3):
            return np.ascontiguousarray(images), f"{len(images)} {split} images of the records"
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3)).astype(np.float32)
    return images, f"{count} random images (seed 0; no records of this run found)"


def describe(
    cfg: Config, run: Path, model: keras.Model, fmt: str, io_names: dict[str, Any], check: dict[str, Any]
) -> dict[str, Any]:
    """export.json: what goes in, what comes out, what it means, where it came from and how well it matches."""
    from kit.version import __version__

    size = int(model.input_shape[1])
    outputs = int(model.output_shape[-1])
    classes = _classes(cfg, run, outputs)
    binary = outputs == 1
    threshold, threshold_source = _threshold(cfg, run) if binary else (None, None)
    return {
        "format": fmt,
        "file": FORMATS[fmt].file,
        "load": FORMATS[fmt].load,
        "input": {
            "name": io_names["input"],
            "shape": [io_names.get("batch"), size, size, 3],
            "dtype": "float32",
            "pixels": f"raw RGB 0-255 (uint8 images cast to float32), {resizing.describe(cfg)} "
            "(kit.data.resizing); no scaling or normalisation: the model does its own",
        },
        "output": {
            "name": io_names["output"],
            "shape": [io_names.get("batch"), outputs],
            "dtype": "float32",
            "values": f"sigmoid probability of class {classes[1]!r}; predict {classes[1]!r} when >= threshold"
            if binary
            else "softmax probabilities of the classes, in the order of `classes`",
        },
        "classes": classes,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "run": str(run),
        "model": {"name": cfg.model.name, "image_size": size},
        "check": check,
        "kit_version": __version__,
        "commit": git_commit(),
        "versions": _versions(fmt),
    }


def _classes(cfg: Config, run: Path, outputs: int) -> list[str]:
    """The classes the run was trained on (its config.yaml, a fold's parent's), else the current settings' / records'."""
    saved = saved_config(run)
    names = [str(c) for c in saved.comp.classes] if saved is not None else []
    wanted = 2 if outputs == 1 else outputs
    if len(names) != wanted:
        with contextlib.suppress(KitError):
            names = class_names(cfg)
    return names if len(names) == wanted else [str(i) for i in range(wanted)]


def _threshold(cfg: Config, run: Path) -> tuple[float, str]:
    """The binary threshold kit predict would use for this run alone (kit.inference.resolve_threshold: a number in
    predict.threshold wins; ``auto`` reads the run's threshold.json), and where it came from."""
    threshold = resolve_threshold(cfg.predict.threshold, [run])
    if str(cfg.predict.threshold).strip().lower() != "auto":
        return threshold, f"the predict.threshold setting ({cfg.predict.threshold}; auto reads {THRESHOLD_FILE})"
    saved = read_json(run / THRESHOLD_FILE)  # there: resolve_threshold raised otherwise (a k-fold parent is refused earlier)
    return threshold, f"{THRESHOLD_FILE} ({saved.get('rule', 'F1-best')} on {saved.get('chosen_on', 'val')})"


def _versions(fmt: str) -> dict[str, str]:
    from importlib import metadata

    names = ["tensorflow", "keras", *{"tflite": ["ai-edge-litert"], "onnx": ["tf2onnx", "onnx", "onnxruntime"]}.get(fmt, [])]
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


# --- helpers -----------------------------------------------------------------------------------------------


def _replace(staging: Path, final: Path) -> None:
    """``staging`` becomes ``final``; an old export is moved aside first and removed only once the new one is in place."""
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _quiet_converters() -> Iterator[None]:
    """The converters' Python warnings (tf2onnx's numpy shims, TF v1-API deprecations) say nothing a user can act on."""
    import logging

    levels = {name: logging.getLogger(name).level for name in ("tf2onnx", "tensorflow")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
