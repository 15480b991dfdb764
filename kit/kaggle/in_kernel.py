"""Steps only a kernel runs, as ``python -m kit.kaggle.in_kernel STEP key=value ...``.

``test-records``: the records of the test split alone, for the inference kernel (``kit kernel build
--from-run``): its models are trained, so building the train and val records would only spend the kernel's
time and disk. The same build as ``kit records`` (atomic, resumable), over the index's test rows.
"""

from __future__ import annotations

import sys

from kit.config import load_config
from kit.errors import EXIT_USER_ERROR, KitError


def build_test_records(settings: list[str]) -> int:
    """Build the test records for ``settings``; return how many test examples they hold."""
    from kit.data.records import build_records
    from kit.data.sources import load_index
    from kit.models.backbones import row_presets

    cfg = load_config(settings, model_defaults=row_presets())  # the kernel's model may be a backbone table row
    index, classes = load_index(cfg)
    test = index[index["split"] == "test"]
    if test.empty:
        raise KitError(f"{cfg.comp.name} has no test split under {cfg.data.root}", "set comp.test to the test table or folder")
    manifest = build_records(cfg, test, classes)
    return manifest.counts["test"].total


STEPS = {"test-records": build_test_records}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STEPS:
        print(f"usage: python -m kit.kaggle.in_kernel {{{'|'.join(STEPS)}}} key=value ...", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        STEPS[argv[0]](argv[1:])
    except KitError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
