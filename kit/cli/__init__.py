"""The ``kit`` command line: one Typer app; each command is a thin wrapper over a module function.

Settings are ``key=value`` words after the command (``kit train comp=cifake model=cnn train.epochs=3``);
see ``kit config`` for every key and its current value.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

# TensorFlow's C++ start-up chatter hides kit's own output; users can still set it lower.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

from kit.cli.backbones import backbone_lines, weights_app  # noqa: E402
from kit.cli.common import (  # noqa: E402
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Settings,
    Terminated,
    app,
    interrupted_line,
    load,
    raise_terminated,
    run_setting,
    runs_setting,
    say,
)
from kit.cli.kernel import kernel_app  # noqa: E402
from kit.cli.looking import show  # noqa: E402, F401  (registers `kit show` on the app)
from kit.config import Config, presets, to_yaml  # noqa: E402
from kit.errors import EXIT_USER_ERROR, KitError, SafeStream, disk_full, os_error  # noqa: E402
from kit.secrets import credential_values  # noqa: E402

app.add_typer(kernel_app, name="kernel")
app.add_typer(weights_app, name="weights")

# Distribution names TensorFlow ships under; read from the installed metadata, so `kit --version` is instant.
_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-gpu", "tf-nightly")


def _installed_version(*distributions: str) -> str:
    from importlib import metadata

    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def versions_line() -> str:
    """``kit --version``: kit's version and the TensorFlow and Keras it would run with."""
    from kit import __version__

    tensorflow = _installed_version(*_TENSORFLOW_DISTRIBUTIONS)
    keras = _installed_version("keras")
    return f"kit {__version__} (tensorflow {tensorflow}, keras {keras}, python {sys.version.split()[0]})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(versions_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the kit, TensorFlow and Keras versions."
    ),
) -> None:
    """kit: from a Kaggle image-classification competition to a scored submission."""


@app.command()
def config(
    settings: list[str] = Settings,
    origin: bool = typer.Option(
        False, "--origin", help="Print each key = value with the file, 'command line' or 'default' it came from."
    ),
) -> None:
    """Print the resolved configuration (presets + overrides) as YAML."""
    cfg = load(settings)
    if origin:
        from kit.config import load_config_with_origins, origin_lines
        from kit.models.backbones import row_presets

        origins = load_config_with_origins(list(settings or []), model_defaults=row_presets())[1]
        typer.echo("\n".join(origin_lines(cfg, origins)))
    else:
        typer.echo(to_yaml(cfg))


@app.command("list")
def list_presets() -> None:
    """List the competitions, the models trained from scratch, models built on backbones, and the backbones by family."""
    from kit.models.backbones import BACKBONES
    from kit.models.hub_backbones import HUB_BACKBONES
    from kit.models.registry import MODELS

    typer.echo("competitions: " + ", ".join(presets("competitions")))
    typer.echo("models trained from scratch:")
    typer.echo("\n".join(f"  {name:9s} {entry.description}" for name, entry in MODELS.items() if not entry.pretrained))
    built_on = [
        f"  {name:9s} {entry.description}"
        for name, entry in MODELS.items()
        if entry.pretrained and name not in BACKBONES and name not in HUB_BACKBONES
    ]
    if built_on:
        typer.echo("models built on backbones:\n" + "\n".join(built_on))
    typer.echo("\n".join(backbone_lines()))


@app.command()
def data(settings: list[str] = Settings) -> None:
    """Download the competition from Kaggle (cached; comp=demo is written locally), index and check it."""
    cfg = load(settings)
    from kit import workflow

    index = workflow.fetch_data(cfg)
    say(f"indexed {len(index)} images of {cfg.comp.name}: {index.groupby('split').size().to_dict()}")


@app.command()
def records(settings: list[str] = Settings) -> None:
    """Write sharded TFRecords resized for the model (resumes after a kill; skips bad images)."""
    cfg = load(settings)
    from kit.data import records as records_mod

    records_mod.build_from_config(cfg)


@app.command()
def train(
    settings: list[str] = Settings,
    resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished run of this comp/model."),
) -> None:
    """Train (records built first when missing or stale); frozen then unfrozen phases; folds=N for k-fold."""
    cfg = load(settings, tensorflow=True)
    _audit_reminders(cfg)
    from kit import workflow

    run_dir = workflow.train(cfg, resume=resume)
    say(f"run directory: {run_dir}")
    say(workflow.closing_line(cfg, run_dir))


@app.command("lr-find")
def lr_find(
    settings: list[str] = Settings,
    steps: int = typer.Option(200, "--steps", help="Batches; the rate rises exponentially from --start to --end."),
    start: float = typer.Option(1e-7, "--start"),
    end: float = typer.Option(10.0, "--end"),
) -> None:
    """LR range test on the training records: lr_find.png/json beside the runs; suggests train.learning_rate."""
    cfg = load(settings, tensorflow=True)
    from kit import workflow
    from kit.train.lr_find import lr_find as range_test

    say(f"wrote {range_test(cfg, manifest=workflow.ensure_records(cfg), steps=steps, start=start, end=end)}")


@app.command()
def tune(settings: list[str] = Settings) -> None:
    """Search hyperparameters with keras-tuner (records built first when missing or stale); best_hparams.yaml."""
    cfg = load(settings, tensorflow=True)
    from kit import workflow

    workflow.tune(cfg)


@app.command()
def evaluate(
    settings: list[str] = Settings,
    run: Path = typer.Option(None, "--run", help="Run directory; default: the newest run of comp/model."),
) -> None:
    """Score a run on the validation split: metrics.json, F1-best threshold, plots."""
    settings, run = run_setting(settings, run)
    cfg = load(settings, tensorflow=True)
    from kit import evaluate as evaluate_mod

    evaluate_mod.evaluate(cfg, run)


@app.command()
def predict(
    settings: list[str] = Settings,
    run: Path = typer.Option(None, "--run", help="Run directory; default: the newest run of comp/model."),
) -> None:
    """Predict the test set (optional TTA, ensembles with runs=a,b,c) and write a validated submission.csv."""
    settings, runs = runs_setting(settings, run)
    cfg = load(settings, tensorflow=True)
    from kit.predict import predict as predict_runs

    predict_runs(cfg, runs)


@app.command("export")
def export_model(
    settings: list[str] = Settings,
    run: Path = typer.Option(None, "--run", help="Run directory; default: the newest run of comp/model."),
    fmt: str = typer.Option("", "--format", help="savedmodel | tflite | onnx (or format=... among the settings)."),
) -> None:
    """Export a run's best.keras (raw 0-255 pixels in, probabilities out) as savedmodel, tflite or onnx, checked against it."""
    from kit import export as export_mod

    settings, run = run_setting(settings, run)
    fmt, settings = export_mod.split_format(settings, fmt)  # the format and its packages checked before TensorFlow loads
    export_mod.export(load(settings, tensorflow=True), run, fmt)


@app.command()
def submit(
    settings: list[str] = Settings,
    file: Path = typer.Option(None, "--file", help="Submission CSV; default: the newest one under runs/<comp>/."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show what would be sent; upload nothing."),
    force: bool = typer.Option(False, "--force", help="Submit even a run that predicts a constant."),
    kernel: bool = typer.Option(
        False, "--kernel", help="Submit a kernel version instead of a file (the default when comp.code_competition)."
    ),
    version: int = typer.Option(None, "--version", help="With --kernel: its version; default: the one kit pushed last."),
    predict: bool = typer.Option(False, "--predict", help="With --kernel: the inference kernel (pushed with --from-run)."),
) -> None:
    """Validate submission.csv, upload it to Kaggle and wait for the public score (--kernel: submit a kernel version)."""
    cfg = load(settings)
    _audit_reminders(cfg)
    if kernel or cfg.comp.code_competition:
        from kit.kaggle.kernel_submit import submit_kernel

        submit_kernel(cfg, predict, version, file, dry_run=dry_run or cfg.kaggle.dry_run, force=force)
        return
    from kit.kaggle import submit as submit_mod

    submit_mod.submit(cfg, file, dry_run=dry_run or cfg.kaggle.dry_run, force=force)


@app.command()
def audit(
    settings: list[str] = Settings,
    ack: bool = typer.Option(
        False, "--ack", help="Accept the last audit's SHORTCUT/SHIFT warnings; kit train and kit submit stop repeating them."
    ),
) -> None:
    """Audit the data before training: balance, sizes, duplicates, shortcuts, train/test shift; report + plots."""
    cfg = load(settings)
    from kit import audit as audit_mod

    if ack:
        audit_mod.acknowledge(cfg)
        return
    audit_mod.audit(cfg)


def _audit_reminders(cfg: Config) -> None:
    """Repeat the audit's unacknowledged SHORTCUT / SHIFT warnings (kit train, kit submit)."""
    from kit import audit as audit_mod

    for line in audit_mod.reminders(cfg):
        say(line)


@app.command("new-comp")
def new_comp(
    folder: Path = typer.Argument(..., help="A downloaded competition folder."),
    name: str = typer.Option("", "--name", help="Competition name; default: the folder's name."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write the YAML; default ./configs/competitions/<name>.yaml, "
        "or ~/.config/kit/competitions/ when ./configs cannot be written.",
    ),
) -> None:
    """Infer a competition YAML from a downloaded folder (CSV columns, class folders, sample_submission)."""
    from kit.data import comp_from_folder

    path = comp_from_folder.write_competition_yaml(folder, name=name or None, output=output)
    say(f"wrote {path}: check it, then use comp={path}")


@app.command()
def demo(settings: list[str] = Settings) -> None:
    """Run the whole pipeline offline on the embedded digits competition and score it."""
    from kit import workflow

    workflow.demo(list(settings or []))


@app.command()
def runs(
    settings: list[str] = Settings,
    sort: str = typer.Option("run", "--sort", help="Column to sort by: numbers best first, text A-Z (default: run id)."),
    csv_path: Path = typer.Option(None, "--csv", help="Also write the table as CSV (raw numbers) to this path."),
    plot: Path = typer.Option(None, "--plot", help="Also draw each run's val, CV and public scores to this PNG."),
    diff: tuple[str, str] | None = typer.Option(None, "--diff", help="Two run ids (or folders): the settings that differ."),
    offline: bool = typer.Option(False, "--offline", help="Do not ask Kaggle for the public scores."),
) -> None:
    """One table of every run of the competition: settings that differ, epochs, val, CV, TTA, threshold, public score.

    Numbers: best val = best monitored value on val during training; cv = k-fold out-of-fold score; threshold = the
    binary threshold and where it was chosen (val or oof); public = newest scored Kaggle submission naming the run."""
    cfg = load(settings)
    from kit import runs_table
    from kit.kaggle.public_scores import attach_public_scores

    if diff:
        typer.echo(runs_table.diff_runs(cfg, *diff))
        return
    rows, _, why = runs_table.runs_table(cfg, sort=sort, public_scores=None if offline else attach_public_scores)
    if not rows:
        say(f"no runs of {cfg.comp.name} under {Path(cfg.run.root) / cfg.comp.name}: train one with kit train")
        return
    typer.echo(runs_table.format_table(rows))
    if why:
        say(why)
    if csv_path is not None:
        say(f"wrote {runs_table.write_csv(rows, csv_path)}")
    if plot is not None:
        say(f"wrote {runs_table.plot_scores(rows, plot)}")


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2; an interrupted command
    (Ctrl-C, SIGTERM) exits 130 / 143 with one line saying what to rerun, never 0. Everything printed passes the
    credential scan and the line bound of kit.errors."""
    signal.signal(signal.SIGTERM, raise_terminated)
    credentials = credential_values()
    sys.stdout, sys.stderr = SafeStream(sys.stdout, credentials), SafeStream(sys.stderr, credentials)
    try:
        code = app(standalone_mode=False)  # with standalone_mode=False typer *returns* 130 for a KeyboardInterrupt
    except KitError as exc:
        _fail(exc)
    except OSError as exc:
        error = os_error(exc)
        if error is None:
            raise
        _fail(error)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Terminated:
        code = EXIT_TERMINATED
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:
        error = disk_full(exc)
        if error is not None:
            _fail(error)
        # Usage errors of the CLI library (click, vendored by typer) know how to show themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(EXIT_USER_ERROR)
        raise
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        say(interrupted_line(sys.argv[1:], code))
    sys.exit(code if isinstance(code, int) else 0)


def _fail(error: KitError) -> NoReturn:
    say(f"error: {error.one_line()}")
    sys.exit(EXIT_USER_ERROR)
