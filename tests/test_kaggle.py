"""kit.kaggle (client, download, submit) against a fake Kaggle server, with the real ``kaggle`` client doing the HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S
from fake_kaggle import KEY, TOKEN, USERNAME, make_evil_zip, make_zip, write_comp_yaml  # tests/ is on sys.path (rootdir conftest)

from kit.config import PROJECT_ROOT, load_config
from kit.errors import KitError
from kit.kaggle.client import MAX_TRIES, username
from kit.kaggle.download import MARKER, PARTIAL_DIR, download
from kit.kaggle.submit import submission_message, submit
from kit.provenance import provenance_path, run_record, write_provenance

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture


def _cfg(tmp_path: Path, *extra: str, slug: str = "fake-comp", source: str = "competition"):
    comp = write_comp_yaml(tmp_path, slug=slug, source=source)
    return load_config([f"comp={comp}", f"data.root={tmp_path / 'raw'}", f"run.root={tmp_path / 'runs'}", *extra])


def _kit(fake_kaggle, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the kit CLI in a subprocess with the fake server's environment (set by the fixture)."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------- download


@pytest.mark.slow
def test_download_unzips_indexes_and_caches(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the index goes to data/index/<comp>/ relative to the working dir
    cfg = _cfg(tmp_path)
    root = download(cfg)
    assert (root / "train.csv").is_file() and (root / "sample_submission.csv").is_file()
    assert sorted(p.name for p in (root / "train").iterdir())[:2] == ["tr0.png", "tr1.png"]
    marker = json.loads((root / MARKER).read_text())
    assert marker["slug"] == "fake-comp" and marker["files"] == 12
    assert not (root / PARTIAL_DIR).exists()
    assert [r.body for r in fake_kaggle.calls("DownloadDataFiles")] == [{"competitionName": "fake-comp"}]
    assert fake_kaggle.calls("DownloadDataFiles")[0].auth.startswith("Basic ")  # KAGGLE_USERNAME/KAGGLE_KEY

    try:
        from kit.data import sources
    except ImportError:  # another engineer's module; exercised once it exists
        sources = None
    if sources is not None and hasattr(sources, "write_index"):
        index = sources.write_index(cfg)
        assert set(index["split"]) >= {"train", "test"} and len(index) == 9

    before = len(fake_kaggle.requests)
    assert download(cfg) == root
    assert len(fake_kaggle.requests) == before  # cached: no request at all


@pytest.mark.slow
def test_dataset_download(fake_kaggle, tmp_path):
    fake_kaggle.datasets["someone/fake-data"] = make_zip({"train/REAL/a.png": b"x", "train/FAKE/b.png": b"y"})
    cfg = _cfg(tmp_path, slug="someone/fake-data", source="dataset")
    root = download(cfg)
    assert (root / "train" / "REAL" / "a.png").read_bytes() == b"x"
    body = fake_kaggle.calls("DownloadDataset")[0].body
    assert body["ownerSlug"] == "someone" and body["datasetSlug"] == "fake-data"


def test_local_source_makes_no_request(fake_kaggle, tmp_path, capsys):
    cfg = _cfg(tmp_path, source="local")
    assert download(cfg) == Path(cfg.data.root)
    assert fake_kaggle.requests == []
    assert "nothing to download" in capsys.readouterr().err


def test_retries_then_succeeds(fake_kaggle, tmp_path):
    fake_kaggle.fail("DownloadDataFiles", 503, times=2)
    download(_cfg(tmp_path))
    assert len(fake_kaggle.calls("DownloadDataFiles")) == 3


@pytest.mark.parametrize("status", [429, 500])
def test_retries_are_bounded(fake_kaggle, tmp_path, status):
    fake_kaggle.fail("DownloadDataFiles", status)
    with pytest.raises(KitError) as info:
        download(_cfg(tmp_path))
    assert len(fake_kaggle.calls("DownloadDataFiles")) == MAX_TRIES
    assert f"after {MAX_TRIES} tries" in info.value.one_line()
    assert not (tmp_path / "raw" / MARKER).exists()


@pytest.mark.parametrize("kind,entry", [("parent", "../evil.txt"), ("absolute", "/tmp/kit-abs-evil.txt"), ("symlink", "link")])
def test_zip_slip_is_refused(fake_kaggle, tmp_path, kind, entry):
    fake_kaggle.competitions["fake-comp"] = make_evil_zip(kind)
    with pytest.raises(KitError) as info:
        download(_cfg(tmp_path))
    assert entry in info.value.one_line() and "refused" in info.value.one_line()
    root = tmp_path / "raw"
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/kit-abs-evil.txt").exists()
    assert not (root / "train.csv").exists() and not (root / "link").exists()  # nothing written at all
    assert not (root / MARKER).exists()


def test_corrupt_zip_is_removed_and_a_rerun_recovers(fake_kaggle, tmp_path):
    good = fake_kaggle.competitions["fake-comp"]
    broken = bytearray(good)
    start = good.index(b"PK\x03\x04") + 60  # inside the first entry's compressed data
    broken[start : start + 40] = b"\x00" * 40
    fake_kaggle.competitions["fake-comp"] = bytes(broken)
    cfg = _cfg(tmp_path)
    with pytest.raises(KitError, match="corrupt"):
        download(cfg)
    root = Path(cfg.data.root)
    assert list((root / PARTIAL_DIR).glob("*.zip")) == [] and not (root / MARKER).exists()

    fake_kaggle.competitions["fake-comp"] = good
    download(cfg)
    assert (root / MARKER).is_file() and (root / "test.csv").is_file()


# ----------------------------------------------------------------------------- credentials


def test_world_readable_kaggle_json_warns_and_key_never_printed(fake_kaggle, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = fake_kaggle.home / ".kaggle" / "kaggle.json"
    path.write_text(json.dumps({"username": USERNAME, "key": KEY}))
    path.chmod(0o644)
    download(_cfg(tmp_path))
    out = capsys.readouterr()
    assert "readable by other users" in out.err and f"chmod 600 {path}" in out.err
    assert KEY not in out.out + out.err
    assert username() == USERNAME


def test_access_token(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    download(_cfg(tmp_path))
    assert fake_kaggle.calls("IntrospectToken")
    assert fake_kaggle.calls("DownloadDataFiles")[0].auth == f"Bearer {TOKEN}"
    assert username() == USERNAME


@pytest.mark.slow
def test_no_credentials_is_one_line_and_no_client_help(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    comp = write_comp_yaml(tmp_path)
    result = _kit(fake_kaggle, tmp_path, "data", f"comp={comp}", f"data.root={tmp_path / 'raw'}")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # the client's page of auth help is swallowed
    assert _error_lines(result.stderr) == [line for line in result.stderr.splitlines() if line.strip()]
    assert "no Kaggle credentials found" in result.stderr and "kaggle.com/settings/api" in result.stderr


def test_bad_kaggle_json(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = fake_kaggle.home / ".kaggle" / "kaggle.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(KitError, match="not valid JSON"):
        download(_cfg(tmp_path))


# ----------------------------------------------------------------------------- CLI errors

CLI_ERRORS = [
    (401, "", "rejected the credentials"),
    (403, "", "https://www.kaggle.com/competitions/fake-comp/rules"),
    (404, "Competition not found", "no competition 'fake-comp'"),
    (429, "Too many requests", "rate limit"),
    (500, "Internal error", "server error"),
]


@pytest.mark.slow
@pytest.mark.parametrize("status,message,expected", CLI_ERRORS)
def test_cli_download_errors(fake_kaggle, tmp_path, status, message, expected):
    fake_kaggle.fail("DownloadDataFiles", status, message)
    comp = write_comp_yaml(tmp_path)
    result = _kit(fake_kaggle, tmp_path, "data", f"comp={comp}", f"data.root={tmp_path / 'raw'}")
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr and KEY not in result.stdout + result.stderr
    tries = MAX_TRIES if status >= 429 else 1
    assert len(fake_kaggle.calls("DownloadDataFiles")) == tries


# ----------------------------------------------------------------------------- submit


def _run_with_submission(cfg, root: Path) -> Path:
    run = Path(cfg.run.root) / cfg.comp.name / "resnet20" / "run1"
    run.mkdir(parents=True)
    hold_out = {"metric": "accuracy", "value": 0.912345, "interval": [0.9, 0.93], "what": "hold-out (argmax)"}
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.912345, "score": hold_out}))
    path = run / "submission.csv"
    path.write_bytes((root / "sample_submission.csv").read_bytes().replace(b",0\n", b",1\n", 1))
    return path


def _predicted(path: Path, threshold: float | None, auto: bool = False, tta: tuple[str, ...] = (), metric: str = "f1") -> Path:
    """The provenance kit predict writes beside a file it predicted with the run it sits in."""
    setting = "auto" if auto else f"{threshold}"
    record = run_record(path.parent, "resnet20", metric, threshold, auto, f"predict.threshold={setting}", list(tta))
    return write_provenance(path, {**record, "tta": list(tta), "threshold_auto": auto, "metric": metric})


@pytest.mark.slow
def test_submit_uploads_exact_bytes_and_reads_the_score(fake_kaggle, tmp_path, capsys):
    cfg = _cfg(tmp_path)
    root = download(cfg)
    path = _run_with_submission(cfg, root)
    _predicted(path, None, metric="accuracy")  # as a multi-class file is: cut at the argmax
    score = submit(cfg, None, dry_run=False)
    assert score == pytest.approx(0.87654)
    assert list(fake_kaggle.uploads.values()) == [path.read_bytes()]
    (create,) = fake_kaggle.calls("CreateSubmission")
    description = create.body["submissionDescription"]
    assert description.startswith("kit resnet20 run run1 hold-out accuracy 0.9123 [0.9000-0.9300]")
    assert len(fake_kaggle.calls("ListSubmissions")) == fake_kaggle.pending_polls + 1
    assert "0.87654" in capsys.readouterr().out


def test_submit_dry_run_uploads_nothing(fake_kaggle, tmp_path, capsys):
    cfg = _cfg(tmp_path, "kaggle.message=hello")
    root = download(cfg)
    path = _run_with_submission(cfg, root)
    before = len(fake_kaggle.requests)
    assert submit(cfg, path, dry_run=True) is None
    assert len(fake_kaggle.requests) == before
    out = capsys.readouterr().out
    assert "would submit" in out and "'hello'" in out and KEY not in out


def _binary_run(cfg, root: Path, degenerate: str | None = None) -> Path:
    """A run whose metrics.json holds the hold-out F1 at 0.5 and at a cross-fitted threshold (as kit evaluate writes)."""
    path = _run_with_submission(cfg, root)
    at_half = {"metric": "f1", "value": 0.9412, "interval": [0.90, 0.97], "what": "hold-out at the fixed threshold 0.5"}
    at_chosen = {
        "metric": "f1",
        "value": 0.9231,
        "interval": [0.88, 0.96],
        "what": "hold-out at the F1-best threshold chosen on the other 4 of 5 parts (never on the rows scored)",
    }
    metrics = {"f1": 0.9412, "score": at_half, "score_at_threshold": at_chosen}
    if degenerate:
        metrics["degenerate"] = degenerate
    (path.parent / "metrics.json").write_text(json.dumps(metrics))
    record = {"threshold": 0.42, "rule": "F1-best", "chosen_on": "val", "examples": 200, "honest_score": at_chosen}
    (path.parent / "threshold.json").write_text(json.dumps(record))
    return path


@pytest.mark.slow  # the message names the git commit: `git rev-parse` runs
@pytest.mark.parametrize(
    ("threshold", "auto", "expected"),
    [
        (0.42, True, "threshold 0.4200 (auto) hold-out f1 at chosen threshold 0.9231 [0.8800-0.9600]"),
        (0.5, False, "threshold 0.5000 (fixed) hold-out f1 at 0.5 0.9412 [0.9000-0.9700]"),
        (0.3, False, "threshold 0.3000 (fixed) no score measured at threshold 0.3"),
    ],
)
@pytest.mark.parametrize("today", ["auto", "0.5", "0.3"])
def test_submit_message_names_the_score_of_the_file_uploaded_whatever_the_settings_today(
    fake_kaggle, tmp_path, threshold, auto, expected, today
):
    """Before: the message followed today's predict.threshold, so a file cut at threshold=auto (0.42) could be sent
    as 'hold-out f1 at 0.5 0.9412'. Now it is worded from the file's own provenance, written when it was predicted."""
    cfg = _cfg(tmp_path, f"predict.threshold={today}")
    path = _binary_run(cfg, download(cfg))
    _predicted(path, threshold, auto)
    message = submission_message(cfg, path)
    assert message.startswith(f"kit resnet20 run run1 {expected}")
    assert "cv " not in message


@pytest.mark.slow  # the message names the git commit: `git rev-parse` runs
def test_submit_message_of_a_kfold_parent_says_oof(fake_kaggle, tmp_path):
    cfg = _cfg(tmp_path, "predict.threshold=0.5")
    path = _run_with_submission(cfg, download(cfg))
    (path.parent / "metrics.json").unlink()
    at_half = {"value": 0.9, "interval": [0.88, 0.92], "what": "5-fold OOF at the fixed threshold 0.5"}
    chosen = "5-fold OOF at the F1-best threshold chosen on the other 4 of 5 parts"
    at_chosen = {"value": 0.91, "interval": [0.89, 0.93], "what": chosen}
    (path.parent / "cv.json").write_text(json.dumps({"metric": "f1", "score": 0.9, "at_0.5": at_half, "at_chosen": at_chosen}))
    (path.parent / "threshold.json").write_text(json.dumps({"threshold": 0.4, "chosen_on": "oof", "honest_score": at_chosen}))
    _predicted(path, 0.4, auto=True, tta=("hflip",), metric="accuracy")
    message = submission_message(cfg, path)
    assert "threshold 0.4000 (auto) tta hflip 5-fold OOF accuracy at chosen threshold (val without TTA) 0.9100" in message


@pytest.mark.slow  # the message names the git commit: `git rev-parse` runs
def test_a_file_without_its_provenance_or_changed_since_claims_no_score(fake_kaggle, tmp_path):
    cfg = _cfg(tmp_path)
    path = _binary_run(cfg, download(cfg))
    neutral = "kit submission.csv (no kit predict record of this file: no score claimed)"
    assert submission_message(cfg, path) == neutral  # a file kit predict did not write
    _predicted(path, 0.42, auto=True)
    assert "at chosen threshold 0.9231" in submission_message(cfg, path)
    path.write_bytes(path.read_bytes().replace(b",1\n", b",0\n", 1))  # edited after kit predict wrote it
    assert submission_message(cfg, path) == neutral
    assert json.loads(provenance_path(path).read_text())["threshold"] == 0.42  # the record itself is left as it was


def test_submit_refuses_a_constant_model_unless_forced(fake_kaggle, tmp_path, capsys):
    cfg = _cfg(tmp_path)
    warning = "the model gives every one of the 200 rows the same probabilities (0.5000, 0.5000): it predicts a constant"
    path = _binary_run(cfg, download(cfg), degenerate=warning)
    with pytest.raises(KitError) as refused:
        submit(cfg, path, dry_run=False)
    assert f"run {path.parent} predicts a constant" in str(refused.value) and "--force" in refused.value.hint
    assert fake_kaggle.calls("StartSubmissionUpload") == []
    assert submit(cfg, path, dry_run=True, force=True) is None
    assert "would submit" in capsys.readouterr().out


def test_submit_refuses_a_file_with_one_label_for_every_row(fake_kaggle, tmp_path):
    """A run never evaluated (or an ensemble): the file itself shows the constant."""
    cfg = _cfg(tmp_path)
    path = _run_with_submission(cfg, download(cfg))
    column = cfg.comp.submission.label_column
    frame = pd.read_csv(path)
    frame[column] = frame[column].iloc[0]
    frame.to_csv(path, index=False)
    with pytest.raises(KitError, match=rf"predicts a constant \(every one of the {len(frame)} rows of submission.csv has"):
        submit(cfg, path, dry_run=True)
    assert submit(cfg, path, dry_run=True, force=True) is None


def test_submit_validates_before_upload(fake_kaggle, tmp_path):
    cfg = _cfg(tmp_path)
    download(cfg)
    bad = tmp_path / "bad.csv"
    bad.write_text("wrong,columns\n1,2\n")
    with pytest.raises(KitError):
        submit(cfg, bad, dry_run=False)
    assert fake_kaggle.calls("StartSubmissionUpload") == []


def test_submit_poll_timeout_returns_none(fake_kaggle, tmp_path):
    fake_kaggle.pending_polls = 10_000
    cfg = _cfg(tmp_path, "kaggle.poll_timeout=0")
    path = _run_with_submission(cfg, download(cfg))
    assert submit(cfg, path) is None
    assert len(fake_kaggle.calls("ListSubmissions")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("status", [400, 429])
def test_cli_daily_limit(fake_kaggle, tmp_path, status):
    cfg = _cfg(tmp_path)
    path = _run_with_submission(cfg, download(cfg))
    fake_kaggle.fail(
        "CreateSubmission", status, "Submission not allowed: Your team has used its daily Submission allowance (5) today"
    )
    comp = write_comp_yaml(tmp_path)
    result = _kit(fake_kaggle, tmp_path, "submit", f"comp={comp}", f"data.root={cfg.data.root}", "--file", str(path))
    assert result.returncode == 2, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "daily submission limit reached for fake-comp; try again after 00:00 UTC" in lines[0]
    assert len(fake_kaggle.calls("CreateSubmission")) == 1  # never retried


def test_submit_refuses_a_credential_in_the_message_or_file(fake_kaggle, tmp_path, capsys):
    """The message and the file go to Kaggle (and a dry run prints the message): no credential in either."""
    cfg = _cfg(tmp_path, f"kaggle.message=note {KEY}")
    path = _run_with_submission(cfg, download(cfg))
    for dry_run in (True, False):
        with pytest.raises(KitError) as info:
            submit(cfg, path, dry_run=dry_run)
        assert "submission message" in info.value.one_line() and "$KAGGLE_KEY" in info.value.one_line()
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + info.value.one_line()
    assert fake_kaggle.calls("StartSubmissionUpload") == [] and fake_kaggle.calls("CreateSubmission") == []


@pytest.mark.slow
def test_commit_outside_a_checkout_comes_from_kit_commit(tmp_path):
    """The Docker image has no .git: submission messages still name the commit make docker-build passed in."""
    import shutil

    shutil.copytree(PROJECT_ROOT / "kit", tmp_path / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from kit.config import git_commit; print(repr(git_commit()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    for commit, expected in (("0123abc", "'0123abc'"), ("", "''")):
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, "KIT_COMMIT": commit},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert result.stdout.strip() == expected, result.stderr
    inside = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**os.environ, "KIT_COMMIT": "0123abc"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert inside.stdout.strip() != "'0123abc'" and len(inside.stdout.strip()) >= 9  # the checkout's own commit wins
