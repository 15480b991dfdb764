"""``kit new-comp DIR``: guess a competition YAML from a downloaded folder.

The guess follows the three layouts :mod:`kit.data.sources` reads (see its docstring):

* CSVs: the labelled CSV with the most rows is ``train`` (``val``/``valid`` in a labelled CSV's name
  makes it ``val``); ``test`` is the CSV named test or the one without labels; ``sample_submission.csv``
  gives the submission columns and label format; ``solution.csv`` (hidden test labels) is kept aside.
  For each table, the column whose values are files (``<dir>/<value>``) is the path column; a column
  whose values are file names without extension (``<dir>/<value>.<ext>``) is the id column.
* Class folders: ``train/<class>/*.jpg`` (and ``val``/``test`` likewise, or loose test images).

The YAML is written with comments on every guess, then loaded and indexed once so that a wrong
guess fails here, with the file to edit, rather than in the middle of training.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from kit.data.labels import default_classes, integer_labels
from kit.data.tables import IMAGE_EXTENSIONS, is_image
from kit.errors import KitError
from kit.inputs import read_csv
from kit.io import atomic_write
from kit.submission import guess_label_format

LABEL_NAMES = ("label", "labels", "class", "class_name", "classname", "target", "category", "y", "species", "breed")
PATH_HINTS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path", "img", "image_name")
SPLIT_WORDS = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"), "test": ("test", "testing")}
SAMPLE_SIZE = 20  # values per column checked against the file system
MAX_DIRS = 200  # folders searched for the images of an id column


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "competition"


def _id_like(column: str) -> bool:
    low = column.lower()
    return low == "id" or low.endswith("_id") or low.endswith("id") and len(low) <= 8


def _unnamed(column: str) -> bool:
    return column.startswith("Unnamed:")  # the index pandas wrote with to_csv(index=True)


def _split_of(name: str) -> str | None:
    words = re.split(r"[^a-z]+", name.lower())
    for split, names in SPLIT_WORDS.items():
        if any(w in names for w in words):
            return split
    return None


class _Listings:
    """Directory listings, each read once (a folder of 100k images costs one ``os.scandir``)."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = {}
        self._stems: dict[str, dict[str, list[str]]] = {}

    def names(self, folder: str) -> set[str]:
        if folder not in self._names:
            try:
                with os.scandir(folder) as entries:
                    self._names[folder] = {e.name for e in entries if e.is_file()}
            except OSError:
                self._names[folder] = set()
            stems: dict[str, list[str]] = {}
            for name in self._names[folder]:
                stem, ext = os.path.splitext(name)
                stems.setdefault(stem, []).append(ext)
            self._stems[folder] = stems
        return self._names[folder]

    def exts(self, folder: str, stem: str) -> list[str]:
        self.names(folder)
        return self._stems[folder].get(stem, [])


def _subdirs(base: Path, depth: int = 2) -> list[str]:
    """Folders under ``base`` (relative, "" for base itself), breadth first, hidden ones skipped."""
    found, frontier = [""], [""]
    for _ in range(depth):
        nxt = []
        for rel in frontier:
            try:
                with os.scandir(base / rel) as entries:
                    nxt += sorted(os.path.join(rel, e.name) for e in entries if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
        found += nxt
        frontier = nxt
        if len(found) > MAX_DIRS:
            break
    return found[:MAX_DIRS]


def _locate(root: Path, values: list[str], dirs: list[str], listings: _Listings, role: str) -> tuple[str, str, float]:
    """The folder (relative to root) and extension that make most ``values`` existing files.

    Returns ``(image_dir, ext, hit_fraction)``; ``ext`` is "" when the values are file names already.
    """
    best: tuple[tuple[float, int, int], str, str] = ((0.0, 0, 0), "", "")
    for rank, rel in enumerate(dirs):
        exact, with_ext = 0, Counter()
        for value in values:
            full = os.path.normpath(os.path.join(root, rel, value))
            parent, name = os.path.split(full)
            if name in listings.names(parent):
                exact += 1
                continue
            for ext in listings.exts(parent, name):
                if ext.lower() in IMAGE_EXTENSIONS:
                    with_ext[ext] += 1
        ext, hits = "", exact
        if with_ext and with_ext.most_common(1)[0][1] > exact:
            ext, hits = with_ext.most_common(1)[0]
        # the folder named like the split wins ties (train/ for train.csv when val/ also holds the ids)
        key = (hits / max(len(values), 1), int(_split_of(rel) == role), -rank)
        if key > best[0]:
            best = (key, rel, ext)
    return best[1].replace(os.sep, "/"), best[2], best[0][0]


def _label_column(frame: Any, preferred: str) -> str:
    columns = list(frame.columns)
    if preferred and preferred in columns:
        return preferred
    for name in LABEL_NAMES:
        for column in columns:
            if column.lower() == name:
                return column
    return next((c for c in columns if "label" in c.lower()), "")


def _csv_table(
    root: Path, rel_csv: str, frame: Any, role: str, label: str, id_hint: str, dirs: list[str], listings: _Listings
) -> dict[str, str]:
    """The TableConfig fields for one CSV: which column points at the images, and where they are."""
    candidates = [c for c in frame.columns if c != label and not _unnamed(c)]
    candidates.sort(key=lambda c: (c != id_hint, c.lower() not in PATH_HINTS and not _id_like(c)))
    best: tuple[float, str, str, str] | None = None
    for column in candidates:
        values = [v for v in frame[column].astype(str).str.strip().tolist() if v][:SAMPLE_SIZE]
        if not values:
            continue
        image_dir, ext, fraction = _locate(root, values, dirs, listings, role)
        if best is None or fraction > best[0]:
            best = (fraction, column, image_dir, ext)
    if best is None or best[0] < 0.8:
        raise KitError(
            f"{root / rel_csv}: no column of {', '.join(map(str, frame.columns))} names image files under {root}",
            "check the download is complete, or write the YAML by hand (see configs/competitions/)",
        )
    _, column, image_dir, ext = best
    sample = frame[column].astype(str).head(SAMPLE_SIZE).tolist()
    table: dict[str, str] = {"csv": rel_csv}
    if not ext and (any("/" in v for v in sample) or not _id_like(column)):
        # values are paths: they are the ids too, unless an id-like column sits beside them
        other_id = id_hint if id_hint in frame.columns and id_hint != column else ""
        if not other_id:
            other_id = next((c for c in candidates if c != column and _id_like(c) and frame[c].is_unique), "")
        if _id_like(column):
            table["id_column"] = column
        elif other_id:
            table["id_column"] = other_id
        table["path_column"] = column
    else:
        table["id_column"] = column
    if label:
        table["label_column"] = label
    if image_dir:
        table["image_dir"] = image_dir
    if ext:
        table["image_ext"] = ext
    return table


def _classes_from_labels(labels: list[str]) -> tuple[list[str], str]:
    """The classes as the index will make them without ``comp.classes``, and a note on where they come from."""
    import pandas as pd

    unique = pd.Series(sorted(set(labels)), dtype=object)
    if len(unique) and integer_labels(unique) is not None:
        return default_classes(unique), "integer labels: give the classes names here, in index order"
    return default_classes(unique), "the sorted label names; their order fixes the class indices"


def _has_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(e.is_file() and is_image(e.name) for e in entries)
    except OSError:
        return False


def _class_dirs(folder: Path) -> list[str]:
    """Sub-folders of ``folder`` that hold images (one level down): the classes of a folder layout."""
    try:
        with os.scandir(folder) as entries:
            subs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return [sub for sub in subs if _has_images(folder / sub)]


def _descend(folder: Path) -> Path:
    """Kaggle zips sometimes wrap everything in one folder: walk down while there is nothing else."""
    base = folder
    for _ in range(3):
        entries = [e for e in base.iterdir() if not e.name.startswith(".")]
        dirs = [e for e in entries if e.is_dir()]
        if len(dirs) == 1 and len(entries) == 1:
            base = dirs[0]
        else:
            break
    return base


def _infer(folder: Path, name: str | None) -> tuple[dict, dict[str, str]]:
    """The config mapping and a comment per key (``comp.train`` -> "13000 rows ...")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found", "give the folder of a downloaded competition, e.g. data/raw/<comp>")
    name = _slug(name or folder.resolve().name)
    base = _descend(folder)
    prefix = os.path.relpath(base, folder).replace(os.sep, "/")

    def rel(path: str) -> str:
        return path if prefix == "." else (f"{prefix}/{path}" if path else prefix)

    notes: dict[str, str] = {}
    comp: dict[str, Any] = {"name": name, "slug": "", "source": "local"}
    notes["comp.slug"] = "check: the Kaggle competition slug (or owner/dataset) for `kit data` and `kit submit`"
    notes["comp.source"] = "check: competition or dataset once slug is set"

    csvs = sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    sample_path = next((p for p in csvs if "sample" in p.stem.lower() or "submission" in p.stem.lower()), None)
    solution_path = next((p for p in csvs if "solution" in p.stem.lower()), None)
    tables = {p: read_csv(p) for p in csvs if p not in (sample_path, solution_path)}
    sample = read_csv(sample_path) if sample_path else None
    sub_id = str(sample.columns[0]) if sample is not None else ""
    sub_label = str(sample.columns[1]) if sample is not None and sample.shape[1] > 1 else ""

    labels = {p: _label_column(f, sub_label) for p, f in tables.items()}
    labelled = [p for p in tables if labels[p]]
    train_path = next((p for p in labelled if _split_of(p.stem) == "train"), None)
    if train_path is None and labelled:
        train_path = max(
            (p for p in labelled if _split_of(p.stem) not in ("val", "test")), key=lambda p: len(tables[p]), default=None
        )
    raw_labels: list[str] = []
    if train_path is not None:
        listings = _Listings()
        dirs = _subdirs(base)
        roles = {"train": train_path}
        val_path = next((p for p in labelled if p != train_path and _split_of(p.stem) == "val"), None)
        if val_path:
            roles["val"] = val_path
        rest = [p for p in tables if p not in roles.values()]
        test_path = next((p for p in rest if _split_of(p.stem) == "test"), None) or next((p for p in rest if not labels[p]), None)
        if test_path:
            roles["test"] = test_path
        for role, path in roles.items():
            frame = tables[path]
            id_hint = sub_id if role == "test" else ""
            comp[role] = _csv_table(base, path.name, frame, role, labels[path], id_hint, dirs, listings)
            comp[role]["csv"] = rel(comp[role]["csv"])
            if prefix != "." or "image_dir" in comp[role]:  # images are found relative to base, data.root is folder
                comp[role]["image_dir"] = rel(comp[role].get("image_dir", ""))
            described = f"{len(frame)} rows" + (f", labels in '{labels[path]}'" if labels[path] else ", no labels")
            notes[f"comp.{role}"] = described
            if role != "test" and labels[path]:
                raw_labels += frame[labels[path]].astype(str).str.strip().tolist()
        ignored = [p.name for p in tables if p not in roles.values()]
        if ignored:
            notes["comp.train"] += f"; not used: {', '.join(ignored)}"
    else:
        train_dir = next((d for d in _subdirs(base, 1)[1:] if _split_of(d) == "train"), None)
        if train_dir is None and _class_dirs(base) and not any(_split_of(d) for d in _class_dirs(base)):
            train_dir = ""
        if train_dir is None or not _class_dirs(base / train_dir):
            found = sorted(e.name + ("/" if e.is_dir() else "") for e in base.iterdir() if not e.name.startswith("."))
            raise KitError(
                f"{folder}: no training table found (found: {', '.join(found[:10]) or 'nothing'})",
                "kit new-comp needs a CSV with a label column or train/<class>/ image folders; "
                "write the YAML by hand from configs/competitions/*.yaml",
            )
        comp["train"] = {"dir": rel(train_dir) or "."}
        class_names = _class_dirs(base / train_dir)
        raw_labels = class_names
        notes["comp.train"] = f"class folders: {', '.join(class_names[:10])}"
        if train_dir:
            for role in ("val", "test"):
                d = next((d for d in _subdirs(base, 1)[1:] if _split_of(d) == role), None)
                if d is None:
                    continue
                if _class_dirs(base / d):
                    comp[role] = {"dir": rel(d)}
                    notes[f"comp.{role}"] = "class folders: labelled, so it can be scored"
                elif _has_images(base / d):
                    comp[role] = {"dir": rel(d)}
                    notes[f"comp.{role}"] = "loose images: unlabelled; the id is the file name"

    if sample_path is not None:
        comp["sample_submission"] = rel(sample_path.name)
        notes["comp.sample_submission"] = "the reference for validating submissions"
    if solution_path is not None:
        comp["solution"] = rel(solution_path.name)
        notes["comp.solution"] = "hidden test labels, used only for scoring locally"

    classes, why = _classes_from_labels(raw_labels)
    comp["classes"] = classes
    notes["comp.classes"] = f"check: {why}"
    comp["metric"] = "f1" if len(classes) == 2 else "accuracy"
    notes["comp.metric"] = f"a guess ({len(classes)} classes): check the competition's evaluation page (accuracy | f1 | macro_f1)"

    if sample is not None:
        label_format = guess_label_format(sample[sub_label].astype(str).str.strip().tolist()) if sub_label else "index"
        comp["submission"] = {"id_column": sub_id, "label_column": sub_label or "label", "label_format": label_format}
        extra = f" ({sample.shape[1]} columns: kit writes only one label column)" if sample.shape[1] > 2 else ""
        notes["comp.submission"] = f"from {sample_path.name}{extra}; check label_format (index | name | probability)"
    else:
        test = comp.get("test", {})
        id_column = test.get("id_column") or "id"
        train_label = comp["train"].get("label_column") or "label"
        names = not all(re.fullmatch(r"\d+", c) for c in classes)
        comp["submission"] = {"id_column": id_column, "label_column": train_label, "label_format": "name" if names else "index"}
        notes["comp.submission"] = "check: no sample submission found, so these columns are a guess"

    config: dict[str, Any] = {"comp": comp}
    # data.root defaults to the relative data/raw/<comp>: only a folder elsewhere needs its path in the YAML
    if folder.resolve() != (Path.cwd() / "data" / "raw" / name).resolve():
        config["data"] = {"root": str(folder.resolve())}
        notes["data.root"] = "where the files are on this machine; override with data.root=..."
    return config, notes


def infer_competition(folder: Path, name: str | None = None) -> dict:
    """Guess the competition config of a downloaded folder: ``{"comp": {...}, "data": {"root": ...}}``."""
    return _infer(Path(folder), name)[0]


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip().removesuffix("\n...").strip()


def render_yaml(config: dict, notes: dict[str, str], folder: Path) -> str:
    """The YAML text, one setting per line with its comment, in the style of configs/competitions/."""
    lines = [
        f"# Inferred by `kit new-comp {folder}`: check every line marked 'check', then use comp=<this file>.",
    ]
    for section, values in config.items():
        lines.append(f"{section}:")
        for key, value in values.items():
            note = notes.get(f"{section}.{key}")
            line = f"  {key}: {_flow(value)}"
            if note and len(line) + len(note) > 110:  # long comments go above the setting
                lines += [f"  # {note}", line]
            else:
                lines.append(f"{line}  # {note}" if note else line)
    return "\n".join(lines) + "\n"


def write_competition_yaml(folder: Path, name: str | None = None, output: Path | None = None) -> Path:
    """Infer, write and check a competition YAML; returns its path.

    The default output is the user's folder (:func:`kit.config.user_preset_dir`: ``./configs/competitions/`` of the
    working directory, else ``~/.config/kit/competitions/``), never the installed package. An existing file is
    never overwritten. After writing, the YAML is loaded and the data indexed once; a failure names
    the file to edit.
    """
    from kit.config import load_config, user_preset_dir
    from kit.data.sources import read_index

    folder = Path(folder)
    config, notes = _infer(folder, name)
    comp_name = config["comp"]["name"]
    output = Path(output) if output else user_preset_dir("competitions") / f"{comp_name}.yaml"
    if output.suffix not in (".yaml", ".yml"):
        raise KitError(f"{output}: the output must end in .yaml", f"pass --output {output.with_suffix('.yaml')}")
    if output.exists():
        raise KitError(f"{output} already exists", "pass --output <new file>.yaml, or delete the old file first")
    atomic_write(output, render_yaml(config, notes, folder))
    try:
        cfg = load_config([f"comp={output}", f"data.root={folder}"])
        read_index(cfg)
    except KitError as exc:
        raise KitError(
            f"wrote {output}, but it does not read the data yet: {exc.message}", f"edit {output}: {exc.hint}"
        ) from None
    return output
