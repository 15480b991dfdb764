"""Submit a kernel version to a code competition: Kaggle reruns the kernel on the hidden test set and scores the file
it writes (``competition_submit_code``; the CLI's ``kaggle competitions submit -k KERNEL -v VERSION``).

Before anything is sent, the version must have completed (a failed or running one is refused with the fix) and its
outputs, fetched into their run folder (:mod:`kit.kaggle.kernel_run`), must hold the submission file. The message
names that run folder and its honest score exactly as ``kit submit`` does for a file
(:func:`kit.kaggle.submit.submission_message`), so ``kit runs`` shows the public score beside the run; then the
public score is awaited the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.kaggle.client import LIMIT_WORDS, api, call, daily_limit_error, refuse_secrets, say
from kit.kaggle.kernel_run import COMPLETE, FAILED, chosen_version, fetch, fetched, look, numbered
from kit.kaggle.kernel_script import SUBMISSION_FILE
from kit.kaggle.submit import refuse_degenerate, wait_for_score
from kit.provenance import describe, read_provenance, recorded_score

if TYPE_CHECKING:
    from kit.config import Config


def submit_kernel(
    cfg: Config,
    inference: bool = False,
    number: int | None = None,
    file: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> float | None:
    """Submit version ``number`` of the training kernel (``inference``: the --from-run one), by default the version
    kit pushed last, and wait (cfg.kaggle.poll_timeout) for its public score; a run that predicts a constant is
    refused unless ``force``. ``dry_run`` checks everything and sends nothing."""
    slug = cfg.comp.slug
    if cfg.comp.source != "competition" or not slug:
        raise KitError(
            f"{cfg.comp.name} is not a Kaggle competition (source {cfg.comp.source}): nothing to submit to",
            "score it with kit evaluate",
        )
    if file is not None:
        raise KitError(
            f"a code competition scores a kernel version, not a file: --file {file} cannot be sent to {slug}",
            "drop --file (kit submit --kernel submits the kernel's own output), or set comp.code_competition=false",
        )
    client = api()
    version = numbered(chosen_version(cfg, client, inference, number))
    state, failure = look(client, version)
    if state in FAILED:
        raise KitError(
            f"kernel {version.label} ended {state} ({failure or 'Kaggle gave no message'}): nothing to submit",
            "fix it and push a new version (kit kernel run), or pass --version N of a version that completed",
        )
    if state != COMPLETE:
        raise KitError(
            f"kernel {version.label} is still {state}",
            f"wait for it (kit kernel status{' --predict' if inference else ''} --version {version.number} --wait), then submit",
        )
    folder = fetched(cfg, version) or fetch(cfg, client, version, state, failure)
    path = folder / SUBMISSION_FILE
    if not path.is_file():
        raise KitError(
            f"kernel {version.label} wrote no {SUBMISSION_FILE} (its outputs are in {folder}): Kaggle would score nothing",
            "make the kernel write /kaggle/working/submission.csv (see its kernel.log), push it again, then submit",
        )
    if not force:
        refuse_degenerate(cfg, path)
    message = kernel_message(cfg, folder, path)
    refuse_secrets({"the submission message": message}, "submission")
    if dry_run:
        print(f"dry run: would submit {version.label} (its {SUBMISSION_FILE}) to {slug} with message '{message}'")
        return None

    say(f"submitting {version.label} (its {SUBMISSION_FILE}) to {slug}: {message}")
    response = call(
        "submit",
        client.competition_submit_code,
        SUBMISSION_FILE,
        message,
        slug,
        version.ref,
        version.number,
        quiet=True,
        slug=slug,
        kind="competition",
    )
    text = getattr(response, "message", "") or ""
    if LIMIT_WORDS.search(text) and not getattr(response, "ref", 0):
        raise daily_limit_error(slug, text)
    return wait_for_score(cfg, client, getattr(response, "ref", 0) or 0, message)


def kernel_message(cfg: Config, folder: Path, path: Path) -> str:
    """The message of a kernel version's submission: ``kit <model> run kernel-<slug>-v<N>`` (the folder its outputs
    were fetched into, as ``kit runs`` finds it), the threshold and TTA the kernel's predict recorded, and the score
    that run recorded for a file cut so; then the git commit of the kit submitting it. The kernel's own record names
    runs by their paths inside Kaggle, which mean nothing here."""
    from kit.config import git_commit

    if cfg.kaggle.message:
        return cfg.kaggle.message
    record = dict(read_provenance(path) or {})
    record.pop("ensemble", None)
    record["runs"] = [{"run": str(folder), "model": folder.parent.name}]
    if not record.get("score"):
        threshold, auto, tta = record.get("threshold"), bool(record.get("threshold_auto")), list(record.get("tta") or [])
        record.update(recorded_score(folder, cfg.comp.metric, threshold, auto, tta))
    commit = git_commit()
    return " ".join(p for p in ("kit", describe(record), f"git {commit}" if commit else "") if p)[:250]
