"""Reliability, settings as hostile input: every setting is checked when it is
loaded, by one mechanism per kind of mistake, and every mistake is one KitError line naming the setting.

- folder names (comp.name, model.name, run.id, comp.slug) must be plain names: nothing is written outside data/, runs/;
- an ``hparams=`` file may set only the keys of the model's ``tuner.space`` (what ``kit tune`` writes);
- no ``${...}`` resolver (oc.env, oc.decode, ...) from any source; ``${comp.name}`` references keep working;
- a settings YAML is a regular file of bounded size whose aliases expand to a bounded size, with known sections only;
- every numeric setting lies in the range declared next to its field; ``comp.classes`` are distinct names.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import COMMAND_TIMEOUT_S

from kit.config import MAX_YAML_BYTES, Config, from_yaml, load_config, ranged_fields, to_yaml
from kit.errors import KitError
from kit.train.search_space import nested, parse_space

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-kaggle-key-0123456789abcdef"
GENEROUS = COMMAND_TIMEOUT_S  # seconds: a hang fails the test, a slow machine does not


def kit_config(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``kit config ...`` in a child process with a credential in its environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAGGLE_KEY": SECRET, "KAGGLE_USERNAME": "someone"}
    return subprocess.run(
        [sys.executable, "-m", "kit", "config", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GENEROUS
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command (exit 2, no traceback, no secret anywhere)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def one_line(overrides: list[str]) -> str:
    with pytest.raises(KitError) as info:
        load_config(overrides)
    line = info.value.one_line()
    assert "\n" not in line
    return line


# ------------------------------------------------------------------------------- folder names (case 4b)

LONG = "a" * 300
BAD_NAMES = {
    "comp.name climbing out": (["comp.name=../../ESCAPED"], "comp.name='../../ESCAPED' is used as a folder name"),
    "comp.name absolute": (["comp.name=/tmp/elsewhere"], "comp.name='/tmp/elsewhere'"),
    "comp.name hidden": (["comp.name=.git"], "comp.name='.git'"),
    "comp.name with a slash": (["comp.name=a/b"], "comp.name='a/b'"),
    "comp.name too long": ([f"comp.name={LONG}"], "300 characters long, over the 128 allowed"),
    "model.name climbing out": (["model.name=../m"], "model.name='../m'"),
    "run.id climbing out": (["run.id=../../x"], "run.id='../../x'"),
    "run.id dot-dot": (["run.id=.."], "run.id='..'"),
    "run.id with a backslash": (["run.id=a\\b"], "run.id="),
    "comp.slug climbing out": (["comp.slug=../x"], "comp.slug='..'"),
    "comp.slug of three parts": (["comp.slug=a/b/c"], "more than one '/'"),
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_a_name_used_as_a_folder_must_be_plain(case: str) -> None:
    overrides, expected = BAD_NAMES[case]
    line = one_line(overrides)
    assert expected in line and "plain name" in line


def test_plain_names_are_accepted() -> None:
    cfg = load_config(["comp.name=my-comp_2.v1", "run.id=fold-run.3", "comp.slug=owner/my-data"])
    assert (cfg.comp.name, cfg.run.id, cfg.comp.slug) == ("my-comp_2.v1", "fold-run.3", "owner/my-data")


@pytest.mark.slow
def test_an_escaping_comp_name_in_a_yaml_writes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "a" / "b"
    (work / "raw").mkdir(parents=True)
    comp = work / "escape.yaml"
    comp.write_text("comp: {name: ../../ESCAPED, source: local, train: {dir: raw}}\n")
    before = sorted(tmp_path.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "kit", "records", f"comp={comp}", "data.root=raw"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENEROUS,
    )
    assert "comp.name='../../ESCAPED'" in error_line(result)
    assert sorted(tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------- hparams files (case 4b)


@pytest.mark.parametrize(
    "setting",
    [
        {"data": {"root": "/etc"}},
        {"run": {"root": "/tmp/elsewhere"}},
        {"predict": {"output": "/tmp/elsewhere.csv"}},
        {"comp": {"name": "other"}},
        {"data": {"records_root": "/tmp/r"}},
        {"model": {"options": {"x": 1}}},  # cnn's space has no model.options
        {"tuner": {"space": {}}},
    ],
)
def test_an_hparams_file_may_set_only_the_search_space_keys(tmp_path: Path, setting: dict) -> None:
    path = tmp_path / "best_hparams.yaml"
    path.write_text(yaml.safe_dump({"model": {"dropout": 0.2}, **setting}))
    line = one_line(["model=cnn", f"hparams={path}"])
    assert f"hparams file {path} sets" in line and "not in tuner.space of model cnn" in line


@pytest.mark.slow
def test_the_hparams_file_kit_tune_writes_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(["model=cnn"])
    dims = parse_space(cfg.tuner.space)
    values = {"model.dense_units": 128, "model.dropout": 0.3, "train.learning_rate": 0.002}
    assert set(values) == {d.name for d in dims}
    path = tmp_path / "best_hparams.yaml"
    path.write_text("# best of 3 trials\n" + yaml.safe_dump(nested(values), sort_keys=True))  # as tuner._write_outputs
    tuned = load_config(["model=cnn", f"hparams={path}"])
    assert (tuned.model.dense_units, tuned.model.dropout, tuned.train.learning_rate) == (128, 0.3, 0.002)


def test_options_keys_of_a_space_are_allowed_in_hparams(tmp_path: Path) -> None:
    model = tmp_path / "m.yaml"
    model.write_text("model: {name: cnn}\ntuner:\n  space:\n    model.options.filters: {type: choice, values: [[4], [8]]}\n")
    path = tmp_path / "best_hparams.yaml"
    path.write_text(yaml.safe_dump(nested({"model.options.filters": [8]})))
    assert load_config([f"model={model}", f"hparams={path}"]).model.options == {"filters": [8]}


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"data.root": {"type": "choice", "values": ["/etc"]}}, "'data.root' is not a setting"),
        ({"predict.output": {"type": "choice", "values": ["/x.csv"]}}, "'predict.output' is not a setting"),
        ({"model.name": {"type": "choice", "values": ["cnn"]}}, "'model.name' is not a setting"),
        ({"model.dropout": {"type": "float", "min": 0.1, "max": 1.5}}, "model.dropout=1.5 is outside its allowed range [0, 1)"),
        ({"train.epochs": {"type": "int", "min": 0, "max": 4}}, "train.epochs=0 is outside its allowed range [1,"),
    ],
)
def test_a_search_space_may_tune_only_model_training_and_augmentation_within_their_ranges(space: dict, expected: str) -> None:
    with pytest.raises(KitError) as info:
        parse_space(space)
    assert expected in info.value.one_line()


# ------------------------------------------------------------------------------- resolvers (case 5a)

RESOLVERS = {
    "oc.env in a competition file": ("comp", "comp:\n  name: envy\n  solution: ${oc.env:KAGGLE_KEY}\n", "comp.solution"),
    "oc.env with a default": ("comp", "kaggle:\n  message: ${oc.env:KAGGLE_KEY,none}\n", "kaggle.message"),
    "inside other text": ("comp", "data:\n  root: /data/${oc.env:KAGGLE_KEY}/x\n", "data.root"),
    "nested in a reference": ("comp", "data:\n  root: ${comp.${oc.env:KAGGLE_KEY}}\n", "data.root"),
    "oc.decode": ("comp", "comp:\n  slug: ${oc.decode:'${oc.env:KAGGLE_KEY}'}\n", "comp.slug"),
    "in a list": ("comp", "predict:\n  tta: [flip, '${oc.env:KAGGLE_KEY}']\n", "predict.tta.1"),
    "in a model file": ("model", "model: {name: cnn, weights: '${oc.env:KAGGLE_KEY}'}\n", "model.weights"),
    "in an options mapping": ("model", "model: {name: cnn, options: {k: '${oc.env:KAGGLE_KEY}'}}\n", "model.options.k"),
    "in a mapping key": (
        "model",
        "model: {name: cnn, options: {'${oc.env:KAGGLE_KEY}': 1}}\n",
        "model.options.${oc.env:KAGGLE_KEY}",
    ),
    "in an hparams file": ("hparams", "model: {dropout: '${oc.env:KAGGLE_KEY}'}\n", "model.dropout"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RESOLVERS))
def test_a_resolver_in_a_settings_file_is_refused_naming_file_and_key(tmp_path: Path, case: str) -> None:
    selector, text, key = RESOLVERS[case]
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    args = [f"{selector}={path}"] + (["model=cnn"] if selector == "hparams" else [])
    line = error_line(kit_config(*args, cwd=tmp_path))
    assert f"{path}: setting '{key}' uses a ${{...}} resolver" in line


@pytest.mark.slow
def test_a_resolver_on_the_command_line_is_refused(tmp_path: Path) -> None:
    line = error_line(kit_config("comp.solution=${oc.env:KAGGLE_KEY}", cwd=tmp_path))
    assert "command line: setting 'comp.solution' uses a ${...} resolver" in line


def test_a_resolver_in_a_run_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(Config()).replace("solution: ''", "solution: ${oc.env:KAGGLE_KEY}"))
    with pytest.raises(KitError) as info:
        from_yaml(path)
    assert "setting 'comp.solution' uses a ${...} resolver" in info.value.one_line()


def test_references_between_settings_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("comp: {name: mine}\ndata: {root: '/data/${comp.name}/raw'}\npredict: {output: '${..data.root}.csv'}\n")
    cfg = load_config([f"comp={path}", "run.root=runs/${comp.name}"])
    assert (cfg.data.root, cfg.predict.output, cfg.run.root) == ("/data/mine/raw", "/data/mine/raw.csv", "runs/mine")


# ------------------------------------------------------------------------------- YAML files as hostile input (case 6)


def bomb(levels: int, width: int) -> str:
    """``levels`` anchors each aliasing the previous one ``width`` times: width**levels leaves from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "6 levels of 9 aliases": (bomb(6, 9), "YAML nodes, 5000 more than it holds"),
    "the same bomb under a known setting": (
        "model:\n  options:\n" + "".join(f"    {line}\n" for line in bomb(6, 9).splitlines()),
        "YAML nodes, 5000 more than it holds",
    ),
    "2 levels of 3000 aliases": (bomb(2, 3000), "YAML nodes, 5000 more than it holds"),
    "nested 100000 deep": ("comp: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested over 32 deep"),
    "nested 40 deep": ("model:\n  options: " + "{a: " * 40 + "1" + "}" * 40 + "\n", "nested over 32 deep"),
    "a recursive alias": ("model: &m {name: cnn, options: {again: *m}}\n", "refers to a mapping or list that contains it"),
    "an unknown section": ("modle: {name: cnn}\n", "unknown setting 'modle' (fix: did you mean model"),
    "not a mapping": ("- a\n- b\n", "expected a mapping of settings"),
    "too large": ("#" + "x" * MAX_YAML_BYTES + "\n", f"over {MAX_YAML_BYTES} bytes"),
    "not UTF-8": ("comp: {name: \udcff}\n", "not UTF-8 text"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_a_hostile_settings_file_is_one_line_without_expanding_it(tmp_path: Path, case: str) -> None:
    text, expected = HOSTILE_YAML[case]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert expected in error_line(kit_config(f"comp={path}", cwd=tmp_path))


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("model: {dropout: &rate 0.25}\naugment: {cutmix: *rate}\ndata: {val_fraction: *rate}\n")
    cfg = load_config([f"comp={path}"])
    assert cfg.model.dropout == cfg.augment.cutmix == cfg.data.val_fraction == 0.25


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_settings_path_that_is_no_regular_file_is_refused_without_reading(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "special.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever: the child's timeout makes that a failure
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.mkdir()
    for selector in ("comp", "model", "hparams"):
        line = error_line(kit_config(f"{selector}={path}", cwd=tmp_path))
        assert f"{path} is not a regular file" in line


# ------------------------------------------------------------------------------- declared ranges (case 9)

ISSUE_CASES = {
    "no epochs": (["train.epochs=0"], "train.epochs=0 is outside its allowed range [1, 100000]"),
    "negative epochs": (["train.epochs=-3"], "train.epochs=-3 is outside its allowed range [1,"),
    "negative steps": (["train.steps_per_epoch=-5"], "train.steps_per_epoch=-5 is outside its allowed range [0,"),
    "dropout 2": (["model.dropout=2"], "model.dropout=2.0 is outside its allowed range [0, 1)"),
    "predict batch 0": (["predict.batch_size=0"], "predict.batch_size=0 is outside its allowed range [1, 65536]"),
    "huge image": (["model.image_size=100000"], "raise it there"),
    "jpeg quality 500": (["data.jpeg_quality=500"], "data.jpeg_quality=500 is outside its allowed range [1, 100]"),
    "nan learning rate": (["train.learning_rate=nan"], "train.learning_rate=nan is outside"),
    "infinite shard size": (["data.shard_mb=inf"], "data.shard_mb=inf is outside"),
    "per-model image size": (["comp.image_sizes={resnet20: 100000}"], "comp.image_sizes.resnet20=100000 is outside"),
    "repeated class": (["comp.classes=[a,b,a]"], "comp.classes names 'a' twice"),
    "one class": (["comp.classes=[a]"], "names one class"),
    "empty class name": (["comp.classes=[a,'']"], "empty name"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ISSUE_CASES))
def test_the_issue_settings_are_refused_at_load_time(case: str) -> None:
    overrides, expected = ISSUE_CASES[case]
    assert expected in one_line(overrides)


def test_every_numeric_setting_declares_a_range() -> None:
    fields = ranged_fields()
    assert len(fields) > 40 and "train.epochs" in {key for key, _, _ in fields}
    assert [key for key, _, allowed in fields if allowed is None] == []


def outside(allowed, kind: type) -> list[float]:
    """Values just outside a range: the open bound itself, or one step past a closed one."""
    step = 1 if kind is int else 1e-3 * max(1.0, abs(allowed.high))
    below = allowed.low if allowed.low_open else allowed.low - step
    above = allowed.high if allowed.high_open else allowed.high + step
    return [kind(below), kind(above)] if kind is int else [below, above, math.nan]


RANGE_CASES = [(key, kind, allowed, value) for key, kind, allowed in ranged_fields() for value in outside(allowed, kind)]


@pytest.mark.slow
@pytest.mark.parametrize(("key", "kind", "allowed", "value"), RANGE_CASES, ids=[f"{c[0]}={c[3]}" for c in RANGE_CASES])
def test_each_numeric_setting_is_checked_against_its_declared_range(key: str, kind: type, allowed, value: float) -> None:
    line = one_line([f"{key}={value}"])
    assert f"{key}={value}" in line and str(allowed) in line


@pytest.mark.slow
@pytest.mark.parametrize(("key", "kind", "allowed"), ranged_fields())
def test_each_range_bound_itself_is_accepted(key: str, kind: type, allowed) -> None:
    for bound, is_open in ((allowed.low, allowed.low_open), (allowed.high, allowed.high_open)):
        if not is_open:
            cfg = load_config([f"{key}={kind(bound)}"])
            section, _, name = key.rpartition(".")
            node = cfg
            for part in section.split("."):
                node = getattr(node, part)
            assert getattr(node, name) == kind(bound)  # the bound itself is kept, not clipped or replaced


@pytest.mark.slow
def test_a_run_config_out_of_range_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(Config()).replace("epochs: 20", "epochs: 0"))
    with pytest.raises(KitError) as info:
        from_yaml(path)
    assert info.value.one_line().startswith(f"{path}: train.epochs=0 is outside its allowed range")


@pytest.mark.slow
def test_the_cli_names_setting_value_and_range_in_one_line(tmp_path: Path) -> None:
    line = error_line(kit_config("train.steps_per_epoch=-5", cwd=tmp_path))
    assert "train.steps_per_epoch=-5 is outside its allowed range [0, 1000000000]" in line


# --- what a competitor types on the first day ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["train=3"], "'train' is a group of settings, not one"),
        (["predict=flip"], "'predict' is a group of settings, not one"),
        (["augment=1"], "'augment' is a group of settings, not one"),
    ],
)
def test_a_value_for_a_whole_group_is_one_line_naming_it(words: list[str], expected: str) -> None:
    with pytest.raises(KitError) as info:
        load_config(words)
    assert expected in info.value.one_line() and "e.g." in info.value.one_line()


def test_short_forms_and_model_names_in_any_case() -> None:
    cfg = load_config(["lr=0.1", "bs=8", "wd=0.01", "model=ResNet9"])
    assert (cfg.train.learning_rate, cfg.train.batch_size, cfg.train.weight_decay) == (0.1, 8, 0.01)
    assert cfg.model.name == "resnet9"


def test_on_and_off_are_words_for_choices_and_booleans_for_switches() -> None:
    """YAML 1.1 reads a bare on/off as a boolean; kit keeps the word, so choices take it and switches convert it."""
    cfg = load_config(["train.jit_compile=on", "train.mixed_precision=off", "train.ema=on", "augment.jit_compile=off"])
    assert (cfg.train.jit_compile, cfg.train.mixed_precision) == ("on", "off")
    assert cfg.train.ema is True and cfg.augment.jit_compile is False
