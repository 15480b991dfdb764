"""From a pushed kernel to a scored code-competition submission, against the fake Kaggle server driven by the real
``kaggle`` client: ``kit kernel run`` (wait, outputs into a run folder ``kit runs`` lists, a failure's log, Ctrl-C),
``kit kernel status --wait`` and ``kit submit --kernel``."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, kit_error_line, wait_until
from fake_kaggle import USERNAME, KernelPlan, kernel_log, kernel_outputs, write_comp_yaml

from kit.config import PROJECT_ROOT, load_config, to_yaml
from kit.errors import KitError
from kit.kaggle import kernel_run
from kit.kaggle.kernel import push
from kit.kaggle.kernel_submit import submit_kernel

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

REF = f"{USERNAME}/kit-fake-comp"
RUN = Path("runs/fake-comp/cnn/kernel-kit-fake-comp-v1")  # where version 1's outputs land (the kernel trained cnn)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """build/ and runs/ go under the working directory: keep them in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(workdir: Path, *extra: str):
    return load_config([f"comp={write_comp_yaml(workdir)}", f"data.root={workdir / 'raw'}", "run.root=runs", *extra])


def _kit(*args: str, **popen: object) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))  # the fixture pointed os.environ at the fake server
    return subprocess.Popen([sys.executable, "-m", "kit", *args], env=env, text=True, **popen)


# ----------------------------------------------------------------------------- kit kernel run


def test_run_waits_then_fetches_the_outputs_into_a_run_folder_that_kit_runs_lists(fake_kaggle, workdir, capsys):
    from kit.runs_table import runs_table

    cfg = _cfg(workdir)
    folder = kernel_run.run(cfg)
    assert folder == RUN
    looks = fake_kaggle.calls("GetKernelSessionStatus")
    assert [r.body["versionLabel"] for r in looks] == ["v1"] * 3  # queued, running, complete: one look each
    err = capsys.readouterr().err
    for state in ("queued", "running", "complete"):
        assert re.search(rf"{REF} version 1: {state}, \d+:\d\d:\d\d elapsed of the kernel's 9:00:00 limit\n", err)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "best.keras", "config.yaml", "done", "history.csv", "kernel.json", "kernel.log", "kit-config.yaml",
        "metrics.json", "plots/scores.png", "probabilities.csv", "submission.csv",
    ]  # fmt: skip
    assert (folder / "submission.csv").read_bytes() == kernel_outputs()["submission.csv"]
    about = json.loads((folder / "kernel.json").read_text())
    assert about["kernel"] == REF and about["version"] == 1 and about["state"] == "complete"
    assert "run/metrics.json" in about["files"] and "kit-fake-comp.log" in about["files"]  # the names Kaggle sent
    assert list(Path("runs/.kernel-downloads").iterdir()) == []  # the staging folder is gone
    (row,) = runs_table(cfg)[0]
    assert (row.values["run"], row.values["model"], row.values["state"]) == (RUN.name, "cnn", "done")
    assert row.values["best_val"] == 0.75


def test_the_wait_backs_off_and_the_failed_kernel_shows_its_log_tail(fake_kaggle, workdir, monkeypatch, capsys):
    pauses: list[float] = []
    monkeypatch.setattr(kernel_run.time, "sleep", pauses.append)
    lines = [f"step {i}" for i in range(40)] + ["Traceback (most recent call last):", "ValueError: the labels are empty"]
    fake_kaggle.kernel_plan = KernelPlan(
        states=("QUEUED", "RUNNING", "RUNNING", "RUNNING", "ERROR"),
        failure="Your notebook tried to allocate more memory than is available",
        files={"kit-config.yaml": b"model:\n  name: resnet9\n"},
        log=kernel_log(*lines),
    )
    with pytest.raises(KitError) as failed:
        kernel_run.run(_cfg(workdir))
    line = failed.value.one_line()
    assert f"kernel {REF} version 1 ended error: Your notebook tried to allocate more memory" in line
    assert "runs/fake-comp/resnet9/kernel-kit-fake-comp-v1/kernel.log" in line
    assert pauses == pytest.approx([0.01, 0.015, 0.0225, 0.03375])  # KIT_KAGGLE_POLL, then 1.5x each look
    err = capsys.readouterr().err
    shown = err.split("the last 20 lines of the kernel's log", 1)[1].splitlines()[1:]
    assert [s.strip() for s in shown] == lines[-20:]  # the tail, read out of Kaggle's JSON log, nothing before it


def test_log_lines_read_kaggles_json_and_plain_text():
    assert kernel_run.log_lines(kernel_log("a", "b\nc")) == ["a", "b", "c"]
    assert kernel_run.log_lines("plain\ntext\n") == ["plain", "text"]
    assert kernel_run.log_lines('{"not": "a list"}') == ['{"not": "a list"}']


def test_outputs_named_outside_the_run_folder_are_refused(fake_kaggle, workdir):
    fake_kaggle.kernel_plan = KernelPlan(states=("COMPLETE",), files={**kernel_outputs(), "../../escaped.txt": b"x"})
    with pytest.raises(KitError, match="Refusing to download '../../escaped.txt'"):
        kernel_run.run(_cfg(workdir))
    assert not (workdir / "escaped.txt").exists() and not (workdir / "runs" / "escaped.txt").exists()
    assert not RUN.exists() and list(Path("runs/.kernel-downloads").iterdir()) == []


def test_a_model_name_from_the_kernel_never_leaves_the_runs(fake_kaggle, workdir):
    outputs = {**kernel_outputs(), "run/config.yaml": b"model:\n  name: ../../../elsewhere\n"}
    fake_kaggle.kernel_plan = KernelPlan(states=("COMPLETE",), files=outputs)
    cfg = _cfg(workdir, "model=resnet20")
    assert kernel_run.run(cfg) == Path("runs/fake-comp/resnet20/kernel-kit-fake-comp-v1")  # the settings' model instead


@pytest.mark.slow
def test_a_failed_kernel_exits_non_zero_with_one_error_line(fake_kaggle, workdir):
    fake_kaggle.kernel_plan = KernelPlan(states=("ERROR",), failure="Notebook Exceeded Allowed Compute", files={})
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    line = kit_error_line(["kernel", "run", f"comp={write_comp_yaml(workdir)}"], workdir, env)
    assert f"kernel {REF} version 1 ended error: Notebook Exceeded Allowed Compute" in line


@pytest.mark.slow
def test_ctrl_c_stops_the_waiting_not_the_kernel_and_says_how_to_wait_again(fake_kaggle, workdir):
    fake_kaggle.kernel_plan = KernelPlan(states=("QUEUED", "RUNNING"))  # runs until the test says otherwise
    comp = write_comp_yaml(workdir)
    log = workdir / "kernel-run.err"
    with log.open("w") as err:
        proc = _kit("kernel", "run", f"comp={comp}", cwd=workdir, stdout=subprocess.PIPE, stderr=err)
    try:
        wait_until(lambda: f"{REF} version 1: running" in log.read_text(), "the progress line", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=REAP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    text = log.read_text()
    assert proc.returncode == 130, text
    hint = f"stopped waiting for {REF} version 1, which goes on on Kaggle; wait for it again with `"
    assert hint in text and "Traceback" not in text and not RUN.exists()
    command = shlex.split(text.split(hint, 1)[1].split("`", 1)[0])
    assert command == ["kit", "kernel", "status", f"comp={comp}", "--version", "1", "--wait"]

    fake_kaggle.kernel_versions[REF][0].plan.states = ("COMPLETE",)  # the kernel went on and finished
    resumed = subprocess.run(
        [sys.executable, "-m", *command], cwd=workdir, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"outputs of {REF} version 1 in {RUN}" in resumed.stdout and (workdir / RUN / "submission.csv").is_file()
    assert len(fake_kaggle.calls("SaveKernel")) == 1  # waiting again pushed nothing


# ----------------------------------------------------------------------------- kit submit --kernel


@pytest.mark.slow  # the message names the git commit (git rev-parse)
def test_submit_kernel_sends_the_version_with_a_message_naming_its_run_and_reads_the_score(fake_kaggle, workdir):
    from kit.kaggle.public_scores import attach_public_scores
    from kit.runs_table import runs_table

    cfg = _cfg(workdir)
    kernel_run.run(cfg)
    assert submit_kernel(cfg) == pytest.approx(0.87654)
    (sent,) = fake_kaggle.calls("CreateCodeSubmission")
    message = sent.body.pop("submissionDescription")
    assert sent.body == {
        "competitionName": "fake-comp",
        "kernelOwner": USERNAME,
        "kernelSlug": "kit-fake-comp",
        "kernelVersion": 1,
        "fileName": "submission.csv",
    }
    assert message.startswith(f"kit cnn run {RUN.name} hold-out accuracy 0.7500 [0.5500-0.9000]")
    (row,) = runs_table(cfg, public_scores=attach_public_scores)[0]
    assert row.values["run"] == RUN.name and row.values["public"] == pytest.approx(0.87654)  # kit runs: beside the run


@pytest.mark.slow  # the message names the git commit (git rev-parse)
def test_submit_kernel_fetches_the_outputs_of_a_version_it_has_not_seen(fake_kaggle, workdir, capsys):
    cfg = _cfg(workdir)
    fake_kaggle.kernel_plan = KernelPlan(states=("COMPLETE",))
    kernel_run.run(cfg)
    kernel_run.run(cfg)  # version 2
    assert submit_kernel(cfg, number=1, dry_run=True) is None
    assert f"dry run: would submit {REF} version 1 (its submission.csv) to fake-comp" in capsys.readouterr().out
    assert fake_kaggle.calls("CreateCodeSubmission") == []
    fake_kaggle.kernel_versions[REF].append(fake_kaggle.kernel_versions[REF][0])  # version 3, pushed from elsewhere
    submit_kernel(cfg, number=3)
    assert fake_kaggle.calls("CreateCodeSubmission")[0].body["kernelVersion"] == 3
    assert Path("runs/fake-comp/cnn/kernel-kit-fake-comp-v3/submission.csv").is_file()


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            KernelPlan(states=("ERROR",), failure="Kernel ran out of time"),
            "ended error (Kernel ran out of time): nothing to submit",
        ),
        (KernelPlan(states=("RUNNING",)), "is still running (fix: wait for it (kit kernel status --version 1 --wait)"),
        (KernelPlan(states=("COMPLETE",), files={"kit-config.yaml": b"model: {name: cnn}\n"}), "wrote no submission.csv"),
        (
            KernelPlan(states=("COMPLETE",), files=kernel_outputs(submission="id,label\nte0,1\nte1,1\nte2,1\n")),
            "predicts a constant",
        ),
    ],
    ids=["failed", "running", "no-submission-file", "constant"],
)
def test_submit_kernel_refuses_what_kaggle_would_not_score(fake_kaggle, workdir, plan, expected):
    cfg = _cfg(workdir)
    fake_kaggle.kernel_plan = plan
    push(cfg)  # the version kit pushed last is the one submitted
    with pytest.raises(KitError) as refused:
        submit_kernel(cfg)
    assert expected in refused.value.one_line()
    assert fake_kaggle.calls("CreateCodeSubmission") == []


def test_submit_kernel_refuses_a_file_and_needs_a_version_when_nothing_was_pushed_here(fake_kaggle, workdir):
    cfg = _cfg(workdir)
    with pytest.raises(KitError, match="not a file: --file x.csv cannot be sent"):
        submit_kernel(cfg, file=Path("x.csv"))
    with pytest.raises(KitError) as unknown:
        submit_kernel(cfg)
    assert f"which version of {REF}? kit pushed none from this folder (fix: pass --version N" in unknown.value.one_line()
    assert fake_kaggle.calls("CreateCodeSubmission") == []


@pytest.mark.slow
def test_kit_submit_on_a_code_competition_submits_the_kernel(fake_kaggle, workdir):
    """comp.code_competition=true: `kit submit` (and so `make submit`) sends the kernel version pushed last."""
    cfg = _cfg(workdir)
    fake_kaggle.kernel_plan = KernelPlan(states=("COMPLETE",))
    kernel_run.run(cfg)
    comp = write_comp_yaml(workdir)
    comp.write_text(comp.read_text() + "  code_competition: true\n")
    proc = _kit("submit", f"comp={comp}", "run.root=runs", cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert "public score for fake-comp: 0.87654" in out
    assert fake_kaggle.calls("CreateCodeSubmission")[0].body["kernelSlug"] == "kit-fake-comp"


@pytest.mark.slow
def test_code_competition_is_a_comp_setting_a_resume_may_gain(workdir):
    """A run trained before the setting existed (its config.yaml lacks it) still resumes with it set."""
    from kit.runs import check_resume_settings

    cfg = _cfg(workdir, "comp.code_competition=true")
    assert cfg.comp.code_competition is True
    saved = yaml.safe_load(to_yaml(cfg))
    del saved["comp"]["code_competition"]
    run = workdir / "runs" / "old"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    check_resume_settings(cfg, run)


@pytest.mark.slow
def test_a_run_trained_in_a_kernel_feeds_the_inference_kernel(fake_kaggle, workdir):
    """Train on Kaggle, then predict there: the fetched run folder is a --from-run run (its best.keras packed)."""
    from run_fixtures import SIZE, make_model, make_run

    from kit.kaggle import kernel
    from kit.runs import write_threshold

    cfg = _cfg(workdir, "model=cnn", f"model.image_size={SIZE}", "predict.threshold=auto")
    trained = make_run(cfg, workdir / "kernel-side", make_model(1, seed=1))
    write_threshold(trained, 0.4, "val", 10, None)
    outputs = {**kernel_outputs(), **{f"run/{p.name}": p.read_bytes() for p in trained.iterdir() if p.is_file()}}
    fake_kaggle.kernel_plan = KernelPlan(states=("COMPLETE",), files=outputs)
    folder = kernel_run.run(cfg)
    assert (folder / "best.keras").read_bytes() == (trained / "best.keras").read_bytes()
    kernel.push(cfg, runs=[folder])
    assert kernel.last_pushed(cfg, inference=True).ref == f"{REF}-predict"
    packed = Path("build/model/fake-comp")
    names = {p.relative_to(packed).as_posix() for p in packed.rglob("*") if p.is_file()}
    assert {f"0-{folder.name}/{name}" for name in ("best.keras", "config.yaml", "threshold.json")} <= names
    assert (packed / f"0-{folder.name}" / "best.keras").read_bytes() == (trained / "best.keras").read_bytes()


def test_on_a_terminal_the_progress_line_is_rewritten_in_place(fake_kaggle, workdir, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    cfg = _cfg(workdir)
    push(cfg)
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    client = kernel_run.api()
    assert kernel_run.wait(client, kernel_run.chosen_version(cfg, client)) == ("complete", "")
    text = screen.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 3  # one line, drawn three times
    last = text.rsplit("\r", 1)[1]
    assert last.startswith(f"{REF} version 1: complete, ") and len(last.rstrip("\n")) >= len(text.split("\r")[1])
