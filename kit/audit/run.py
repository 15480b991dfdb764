"""``kit audit``: look at the data before training on it.

What it checks, and why it matters on Kaggle:

- class balance, per split;
- width, height, aspect, format, file size and JPEG quality per class and per split: a detector that
  can tell the classes apart by these alone learns the shortcut, not the content;
- exact duplicates (SHA-1 of the file bytes) and near duplicates (64-bit DCT perceptual hash within a
  small Hamming distance, every pair of every image compared with faiss), within train and across
  train/val/test: duplicates across splits inflate the validation score, duplicates with conflicting
  labels are noise. The duplicate groups a split would keep whole are reported under both rules of
  ``data.duplicate_groups`` (exact, near); the audit writes nothing that changes a split: the index build
  computes the groups it uses (:mod:`kit.data.duplicates`);
- a shortcut score: the cross-validated AUC (binary) or accuracy (multi-class) of a random forest that
  sees only the metadata above, worded by the feature that drives it; the same model telling test
  images from training images on metadata, and adversarial validation on pixels (gradient boosting on
  colour histograms and thumbnails): its AUC foresees a leaderboard drop that validation will not show.

SHORTCUT and SHIFT warnings are repeated by ``kit train`` and ``kit submit`` (:func:`reminders`) until
``kit audit --ack`` (:func:`acknowledge`) writes ``ack.json`` beside the report. Output, under
``<run.root>/<comp>/audit/``: ``audit.md`` with the plots beside it, and ``audit.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kit.audit.duplicates import exact_duplicates, near_duplicates, split_groups
from kit.audit.models import adversarial_validation, driver_advice, metadata_model_score, shortcut_warning
from kit.audit.report import adversarial_plot, describe, markdown, write_plots
from kit.errors import KitError
from kit.io import atomic_write, write_json
from kit.progress import progress

if TYPE_CHECKING:
    from kit.config import Config

SHIFT_AUC = 0.75  # adversarial validation: warn when test is told from training with this cross-validated AUC
REPEATED = ("SHORTCUT", "SHIFT")  # warnings that kit train and kit submit repeat until acknowledged


def audit_dir(cfg: Config) -> Path:
    return Path(cfg.run.root) / cfg.comp.name / "audit"


def audit(cfg: Config) -> dict:
    """Audit the competition's images (no training); write audit.md, audit.json and plots; return the summary."""
    from kit.data.images import file_facts
    from kit.data.sources import load_index

    settings = cfg.audit
    index, classes = load_index(cfg)
    index = index.reset_index(drop=True)
    out_dir = audit_dir(cfg)
    workers = settings.workers or min(16, os.cpu_count() or 1)
    paths = index["path"].astype(str).tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:  # I/O, hashlib and cv2 release the GIL
        facts = list(progress(pool.map(file_facts, paths), "audit", len(paths), "img"))
    meta = pd.concat([index, pd.DataFrame(facts)], axis=1)
    meta["aspect"] = meta["width"] / meta["height"]
    names = [str(c) for c in classes]
    meta["class"] = [names[i] if 0 <= i < len(names) else "unlabelled" for i in meta["label"].astype(int)]

    readable = meta[meta["error"] == ""]
    labelled = readable[readable["label"] >= 0]
    warnings: list[str] = []
    summary: dict[str, Any] = {"comp": cfg.comp.name, "images": len(meta), "classes": names}
    # what an acknowledgement covers: these files (their bytes and splits), not only the wording of the warnings
    summary["data_digest"] = hashlib.sha1("\n".join(sorted(meta["sha1"] + " " + meta["split"])).encode()).hexdigest()
    summary["splits"] = {k: int(v) for k, v in meta["split"].value_counts().sort_index().items()}
    balance = {
        names[i]: int(n) for i, n in labelled["label"].astype(int).value_counts().sort_index().items() if 0 <= i < len(names)
    }
    summary["class_balance"] = balance
    summary["class_balance_by_split"] = {
        str(s): {names[i]: int(n) for i, n in g["label"].astype(int).value_counts().sort_index().items() if 0 <= i < len(names)}
        for s, g in labelled.groupby("split")
    }
    if balance and min(balance.values()) > 0 and max(balance.values()) / min(balance.values()) > 10:
        ratio = max(balance.values()) / min(balance.values())
        warnings.append(f"classes are imbalanced {ratio:.0f}:1: prefer F1 / macro F1, tune the threshold")
    bad = meta[meta["error"] != ""]
    summary["unreadable"] = {
        "count": len(bad),
        "examples": [{"path": p, "error": e} for p, e in zip(bad["path"][:10], bad["error"][:10], strict=True)],
    }
    if len(bad):
        warnings.append(f"{len(bad)} files are unreadable (e.g. {bad['path'].iloc[0]}): kit records will skip them")
    summary["by_class"] = describe(readable[readable["label"] >= 0], "class")
    summary["by_split"] = describe(readable, "split")

    exact = exact_duplicates(meta)
    near = near_duplicates(readable, settings.near_distance)
    summary["exact_duplicates"] = exact
    summary["near_duplicates"] = near
    splittable = meta[meta["split"].isin(["train", "val"])]  # the rows a validation split or the folds divide
    summary["duplicate_groups"] = split_groups(splittable, settings.near_distance, cfg.data.group_max_share)
    summary["duplicate_groups"]["setting"] = str(cfg.data.duplicate_groups)
    if exact["test_groups_with_labelled_copy"]:
        warnings.append(f"{exact['test_groups_with_labelled_copy']} test images have a byte-identical copy in the labelled data")
    cross = {k: v for k, v in exact["pairs"].items() if k != "train-train"}
    if cross:
        warnings.append(f"exact duplicates across splits: {cross}: validation scores on them are memorised, not learned")
    if exact["label_conflicts"]:
        warnings.append(f"{exact['label_conflicts']} groups of identical files carry different labels")
    near_cross = {k: v for k, v in near["pairs"].items() if k != "train-train"}
    if near_cross:
        warnings.append(f"near duplicates across splits (pHash distance <= {settings.near_distance}): {near_cross}")

    shortcut_rows = labelled
    if len(shortcut_rows) > settings.shortcut_sample:
        shortcut_rows = shortcut_rows.sample(settings.shortcut_sample, random_state=cfg.data.seed)
    shortcut = (
        metadata_model_score(shortcut_rows, shortcut_rows["label"].astype(int).to_numpy(), cfg.data.seed)
        if len(shortcut_rows)
        else None
    )
    summary["shortcut"] = shortcut
    if shortcut is not None:
        line = shortcut_warning(shortcut, shortcut_rows, settings.shortcut_auc, settings.shortcut_gain)
        warnings += [line] if line else []
    shift = None
    has_test = bool((readable["split"] == "test").any()) and len(labelled) > 0
    if has_test:
        pool_rows = readable.sample(min(len(readable), settings.shortcut_sample), random_state=cfg.data.seed)
        shift = metadata_model_score(pool_rows, (pool_rows["split"] == "test").astype(int).to_numpy(), cfg.data.seed)
        if shift is not None and shift["value"] > settings.shortcut_auc:
            driver, advice = driver_advice(shift, pool_rows)
            warnings.append(
                f"SHIFT: test images differ from labelled ones in {driver} (metadata model tells them apart with "
                f"cross-validated AUC {shift['value']:.3f}): {advice}"
            )
    adversarial = None
    if has_test:
        rows = readable.sample(min(len(readable), settings.shortcut_sample), random_state=cfg.data.seed)
        adversarial = adversarial_validation(
            rows["path"].astype(str).tolist(), (rows["split"] == "test").to_numpy(), cfg.data.seed, workers
        )
        if adversarial is not None and adversarial["value"] > SHIFT_AUC:
            warnings.append(
                f"SHIFT: a classifier tells test images from training images on their pixels ({adversarial['features']}) "
                f"with cross-validated AUC {adversarial['value']:.3f} (0.5: alike): expect the leaderboard score to fall "
                "below validation; look at adversarial_validation.png and validate on the training images most like test"
            )
    summary["adversarial_validation"] = adversarial
    summary["train_test_shift"] = shift
    summary["warnings"] = warnings

    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_plots(readable, out_dir)
    if adversarial is not None:
        written.append(adversarial_plot(adversarial, out_dir))
    summary["plots"] = [p.name for p in written]
    write_json(out_dir / "audit.json", summary)
    atomic_write(out_dir / "audit.md", markdown(summary))
    summary["report"] = str(out_dir / "audit.md")
    for line in warnings:
        print(f"WARNING: {line}")
    print(f"audit of {len(meta)} images: {len(warnings)} warnings; report {out_dir / 'audit.md'}")
    return summary


def _repeated(warnings: list[str]) -> list[str]:
    return [w for w in warnings if w.startswith(REPEATED)]


def _digest(warnings: list[str], data_digest: str) -> str:
    return hashlib.sha1(json.dumps([warnings, data_digest]).encode()).hexdigest()


def _audit_state(cfg: Config) -> tuple[list[str], str] | None:
    """The last audit's warnings and data digest; None without a readable audit.json."""
    try:
        summary = json.loads((audit_dir(cfg) / "audit.json").read_text())
        return list(summary["warnings"]), str(summary["data_digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def acknowledge(cfg: Config) -> list[str]:
    """Write ``ack.json`` beside the audit report: its SHORTCUT / SHIFT warnings are read and accepted."""
    state = _audit_state(cfg)
    if state is None:
        raise KitError(f"no audit report in {audit_dir(cfg)} to acknowledge", f"run `kit audit comp={cfg.comp.name}` first")
    accepted = _repeated(state[0])
    write_json(audit_dir(cfg) / "ack.json", {"digest": _digest(accepted, state[1]), "warnings": accepted})
    print(f"acknowledged {len(accepted)} SHORTCUT/SHIFT warnings of {audit_dir(cfg) / 'audit.md'}")
    return accepted


def reminders(cfg: Config) -> list[str]:
    """The audit's SHORTCUT / SHIFT warnings not yet acknowledged, as lines to print (none without an audit)."""
    state = _audit_state(cfg)
    pending = _repeated(state[0]) if state else []
    if state is None or not pending:
        return []
    try:
        ack = json.loads((audit_dir(cfg) / "ack.json").read_text())
    except (OSError, ValueError):
        ack = {}
    if isinstance(ack, dict) and ack.get("digest") == _digest(pending, state[1]):
        return []
    hint = f"(from {audit_dir(cfg) / 'audit.md'}; `kit audit --ack comp={cfg.comp.name}` once you have dealt with it)"
    return [f"WARNING: {line} {hint}" for line in pending]
