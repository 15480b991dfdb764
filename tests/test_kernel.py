"""kit.kaggle.kernel: the bundle, the wheel dataset and push/status against the fake Kaggle server (following a
version to its outputs and submitting it: tests/test_kernel_run.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from fake_kaggle import KEY, USERNAME, KernelPlan, KernelVersion, write_comp_yaml

from kit.config import PROJECT_ROOT, load_config
from kit.errors import KitError
from kit.io import write_json
from kit.kaggle import kernel, kernel_run, wheels

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """build/ goes under the working directory: keep it in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(tmp_path: Path, *extra: str, slug: str = "fake-comp", source: str = "competition"):
    comp = write_comp_yaml(tmp_path, slug=slug, source=source)
    return load_config([f"comp={comp}", f"data.root={tmp_path / 'raw'}", *extra])


def _bundle_text(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted(folder.rglob("*")) if p.is_file())


def test_build_bundle(fake_kaggle, workdir):
    cfg = _cfg(workdir)
    folder = kernel.build(cfg)
    assert folder == Path("build/kernel/fake-comp")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == f"{USERNAME}/kit-fake-comp" and meta["title"] == "kit fake-comp"
    assert meta["code_file"] == "kit_kernel.py" and meta["language"] == "python" and meta["kernel_type"] == "script"
    assert meta["competition_sources"] == ["fake-comp"] and meta["dataset_sources"] == [f"{USERNAME}/kit-wheel"]
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False and meta["is_private"] is True
    code = (folder / "kit_kernel.py").read_text()
    compile(code, "kit_kernel.py", "exec")
    assert "'--no-index', '--no-deps'" in code and 'os.environ.get("KIT_KAGGLE_WORKING", "/kaggle/working")' in code
    assert 'os.path.join(WORKING, "submission.csv")' in code and 'f"data.records_root={TEMP}/records"' in code
    # the embedded config is block YAML, one setting a line (it was one JSON-escaped line)
    assert 'CONFIG_YAML = r"""comp:\n  name: fake-comp\n  slug: fake-comp\n' in code
    assert "\ntrain:\n  mode: finetune\n  batch_size: " in code and "\n  records_root: /kaggle/temp/records\n" in code
    assert KEY not in _bundle_text(folder)


@pytest.mark.slow
def test_embedded_config_reproduces_the_run(fake_kaggle, workdir):
    """The kernel's command line (comp=<config> model=<config> + paths) resolves to cfg: the config is the last layer."""
    cfg = _cfg(workdir, "train.epochs=3", "model=cnn", "augment.cutmix=0.5")
    path = workdir / "kit-config.yaml"

    path.write_text(yaml.safe_dump(kernel.kernel_config(cfg, USERNAME), sort_keys=False))
    again = load_config([f"comp={path}", f"model={path}", "data.root=/kaggle/input/fake-comp"])
    code = kernel.script(cfg, USERNAME)
    assert 'f"comp={config}",' in code and 'f"model={config}",' in code and 'f"hparams=' not in code
    assert again.train.epochs == 3 and again.model.name == "cnn" and again.augment.cutmix == 0.5
    assert again.comp == cfg.comp and again.model.image_size == cfg.model.image_size
    assert again.run.root == "/kaggle/temp/runs" and again.data.records_root == "/kaggle/temp/records"  # scratch, not output


@pytest.mark.slow
def test_dataset_comp_and_weights_sources(fake_kaggle, workdir):
    weights = workdir / "resnet50.weights.h5"
    weights.write_bytes(b"w")
    cfg = _cfg(workdir, f"weights={weights}", "model=resnet50", slug="someone/fake-data", source="dataset")
    meta = kernel.metadata(cfg, USERNAME)
    assert meta["competition_sources"] == []
    assert meta["dataset_sources"] == [f"{USERNAME}/kit-wheel", f"{USERNAME}/kit-weights", "someone/fake-data"]
    code = kernel.script(cfg, USERNAME)
    assert '"/kaggle/input/kit-weights/resnet50.weights.h5"' in code and '"fake-data"' in code


def test_local_comp_has_no_kernel(fake_kaggle, workdir):
    with pytest.raises(KitError, match="no Kaggle source"):
        kernel.build(_cfg(workdir, source="local"))


@pytest.mark.slow
def test_push_with_the_real_client(fake_kaggle, workdir, capsys):
    cfg = _cfg(workdir)
    pushed = kernel.push(cfg)
    assert pushed.url.endswith(f"{USERNAME}/kit-fake-comp") and pushed.version == 1 and pushed.time_limit_s == 9 * 3600
    assert kernel.last_pushed(cfg) == pushed and kernel.last_pushed(cfg, inference=True) is None
    assert kernel.push(cfg).version == 2 and kernel.last_pushed(cfg).version == 2  # each push is a new version
    save = fake_kaggle.calls("SaveKernel")[0]
    body = save.body
    assert body["slug"] == f"{USERNAME}/kit-fake-comp" and body["newTitle"] == "kit fake-comp"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["enableGpu"] is True and body["enableInternet"] is False and body["isPrivate"] is True
    assert body["competitionDataSources"] == ["fake-comp"] and body["datasetDataSources"] == [f"{USERNAME}/kit-wheel"]
    assert body["text"] == (Path("build/kernel/fake-comp") / "kit_kernel.py").read_text()
    assert KEY not in json.dumps(body)
    assert "pushed" in capsys.readouterr().out


def test_status_looks_once_at_the_version_pushed_last(fake_kaggle, workdir, capsys):
    cfg = _cfg(workdir)
    kernel.push(cfg)
    kernel.push(cfg)
    assert kernel_run.status(cfg) == "queued" and kernel_run.status(cfg) == "running"  # one look each
    assert kernel_run.status(cfg, number=1) == "queued"
    fake_kaggle.kernel_versions[f"{USERNAME}/kit-fake-comp-predict"] = [KernelVersion(KernelPlan(states=("COMPLETE",)))]
    assert kernel_run.status(cfg, inference=True) == "complete"  # nothing pushed from here: Kaggle's latest
    first, _, third, fourth = fake_kaggle.calls("GetKernelSessionStatus")
    assert first.body == {"userName": USERNAME, "kernelSlug": "kit-fake-comp", "versionLabel": "v2"}
    assert third.body == {"userName": USERNAME, "kernelSlug": "kit-fake-comp", "versionLabel": "v1"}
    assert fourth.body == {"userName": USERNAME, "kernelSlug": "kit-fake-comp-predict"}
    assert f"{USERNAME}/kit-fake-comp version 2: queued" in capsys.readouterr().out


@pytest.mark.slow
def test_publish_dataset_creates_then_versions(fake_kaggle, workdir, monkeypatch):
    pins = workdir / "image.txt"  # an image without omegaconf, holding kit's own versions of the rest it carries
    ours = ("faiss-cpu", "kaggle", "kagglesdk", "certifi")
    lines = [line for line in wheels.IMAGE_PINS.read_text().splitlines() if not line.startswith(("omegaconf==", *ours))]
    pins.write_text("\n".join([*lines, *(f"{name}=={version(name)}" for name in ours)]) + "\n")
    monkeypatch.setattr(wheels, "IMAGE_PINS", pins)
    cfg = _cfg(workdir)
    assert kernel.publish_dataset(cfg) == [f"{USERNAME}/kit-wheel"]
    (create,) = fake_kaggle.dataset_versions
    assert create["method"] == "CreateDataset" and create["slug"] == "kit-wheel" and create["ownerSlug"] == USERNAME
    archives = [zipfile.ZipFile(io.BytesIO(data)).namelist() for data in fake_kaggle.uploads.values()]
    (names,) = [n for n in archives if "kit/kaggle/kernel.py" in n]
    assert {"kit/kaggle/client.py", "kit/kaggle/download.py", "kit/kaggle/submit.py"} <= set(names)
    assert not any("fake_kaggle" in n or n.startswith("tests/") for n in names)
    # the dependencies a Kaggle image may lack travel beside kit's wheel, for kernels without internet
    packages = {name.split("/")[0] for n in archives if "kit/kaggle/kernel.py" not in n for name in n}
    assert packages == {"omegaconf", f"omegaconf-{version('omegaconf')}.dist-info"}  # the one package this image lacks

    kernel.publish_dataset(cfg)
    assert [v["method"] for v in fake_kaggle.dataset_versions] == ["CreateDataset", "CreateDatasetVersion"]


@pytest.mark.slow
def test_cli_push_error_is_one_line(fake_kaggle, workdir):
    fake_kaggle.fail("SaveKernel", 403, "Permission 'kernels.create' was denied")
    comp = write_comp_yaml(workdir)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "kit", "kernel", "push", f"comp={comp}"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "kernels.create" in lines[0] and "Traceback" not in result.stderr


def test_embedded_config_keeps_a_command_line_image_size(fake_kaggle, workdir):
    """model.image_size given on the command line survives the per-model size step when the kernel reloads it."""

    cfg = _cfg(workdir, "model=cnn", "comp.image_sizes.cnn=32", "model.image_size=48")
    assert cfg.model.image_size == 48
    path = workdir / "kit-config.yaml"
    path.write_text(yaml.safe_dump(kernel.kernel_config(cfg, USERNAME), sort_keys=False))
    again = load_config([f"comp={path}", f"model={path}", "data.root=/kaggle/input/fake-comp"])
    assert again.model.image_size == 48


# ----------------------------------------------------------------------------- kernels that hold


def _tiny_run(cfg, run_dir: Path, threshold: float = 0.3) -> Path:
    from run_fixtures import SIZE, make_model, make_run

    from kit.runs import write_threshold

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=SIZE))  # the size make_model takes
    run = make_run(cfg, run_dir, make_model(1, seed=1))
    write_threshold(run, threshold, "val", 10, None)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "epoch-0001.weights.h5").write_bytes(b"resume state, not needed to predict")
    return run


@pytest.mark.slow
def test_inference_kernel_from_a_run_and_a_kfold_parent(fake_kaggle, workdir):
    """--from-run packs best.keras, config.yaml and threshold.json (a k-fold parent: every fold) and predicts only."""
    cfg = _cfg(workdir, "model=cnn", "predict.threshold=auto")
    single = _tiny_run(cfg, workdir / "runs" / "a", 0.3)
    parent = workdir / "runs" / "kf"
    for k in range(2):
        _tiny_run(cfg, parent / f"fold{k}", 0.5)
    (parent / "config.yaml").write_text((single / "config.yaml").read_text())
    write_json(parent / "threshold.json", {"threshold": 0.6, "rule": "F1-best", "chosen_on": "oof"})
    folder = kernel.build(cfg, runs=[single, parent])
    assert folder == Path("build/kernel/fake-comp-predict")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == f"{USERNAME}/kit-fake-comp-predict" and meta["title"] == "kit fake-comp predict"
    assert meta["dataset_sources"] == [f"{USERNAME}/kit-wheel", f"{USERNAME}/kit-model-fake-comp"]
    models = Path("build/model/fake-comp")
    packed = sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file())
    assert packed == [
        "0-a/best.keras", "0-a/config.yaml", "0-a/threshold.json",
        "1-kf/config.yaml", "1-kf/fold0/best.keras", "1-kf/fold0/config.yaml", "1-kf/fold0/threshold.json",
        "1-kf/fold1/best.keras", "1-kf/fold1/config.yaml", "1-kf/fold1/threshold.json", "1-kf/threshold.json",
        "kit-model.json",
    ]  # fmt: skip
    summary = json.loads((models / "kit-model.json").read_text())
    assert summary["models"] == 3 and summary["threshold"] == pytest.approx(0.45)  # mean of 0.3 (run) and 0.6 (k-fold OOF)
    code = (folder / "kit_kernel.py").read_text()
    compile(code, "kit_kernel.py", "exec")
    assert 'RUNS = ["0-a", "1-kf"]' in code and 'MODEL_DATASET = "kit-model-fake-comp"' in code
    embedded = yaml.safe_load(code.split('CONFIG_YAML = r"""', 1)[1].split('"""', 1)[0])
    assert float(embedded["predict"]["threshold"]) == pytest.approx(0.45) and embedded["model"]["name"] == "cnn"
    assert '"kit", "train"' not in code and "test-records" in code


@pytest.mark.slow
def test_push_from_run_publishes_the_runs_then_the_kernel(fake_kaggle, workdir):
    cfg = _cfg(
        workdir, "model=cnn", "kaggle.kernel_accelerator=tpu", "kaggle.kernel_machine_shape=TpuV5E8", "comp.kernel_hours=3"
    )
    run = _tiny_run(cfg, workdir / "runs" / "a")
    kernel.push(cfg, runs=[run])
    (create,) = fake_kaggle.dataset_versions
    assert create["method"] == "CreateDataset" and create["slug"] == "kit-model-fake-comp"
    (save,) = fake_kaggle.calls("SaveKernel")
    body = save.body
    assert (
        body["slug"] == f"{USERNAME}/kit-fake-comp-predict" and body["datasetDataSources"][1] == f"{USERNAME}/kit-model-fake-comp"
    )
    assert body["enableTpu"] is True and body["enableGpu"] is False and body["machineShape"] == "TpuV5E8"
    assert body["sessionTimeoutSeconds"] == 3 * 3600 and "TIME_LIMIT_S = 10800" in body["text"]


@pytest.mark.slow
def test_a_secret_in_a_packed_run_is_refused_and_not_kept(fake_kaggle, workdir):
    cfg = _cfg(workdir, "model=cnn")
    run = _tiny_run(cfg, workdir / "runs" / "a")
    (run / "metrics.json").write_text(json.dumps({"note": KEY}))
    with pytest.raises(KitError, match=r"metrics.json holds the value of \$KAGGLE_KEY: kernel bundle refused"):
        kernel.build(cfg, runs=[run])
    assert not Path("build/model/fake-comp").exists() and not Path("build/kernel/fake-comp-predict").exists()


def test_imagenet_without_internet_is_an_error_naming_the_fix(fake_kaggle, workdir):
    cfg = _cfg(workdir, "model=resnet50", "weights=imagenet")
    with pytest.raises(KitError) as error:
        kernel.build(cfg)
    line = error.value.one_line()
    assert "model.weights=imagenet" in line and "weights=/kaggle/input/" in line and "--internet" in line
    assert not Path("build/kernel").exists()
    online = _cfg(workdir, "model=resnet50", "weights=imagenet", "kaggle.kernel_internet=true")
    meta = json.loads((kernel.build(online) / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is True


@pytest.mark.slow
def test_build_needs_no_credentials_with_owner(fake_kaggle, workdir):
    """`kit kernel build --owner NAME` with no key, no token, no kaggle.json; without a name, one line names --owner."""
    comp = write_comp_yaml(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env |= {"PYTHONPATH": str(PROJECT_ROOT), "HOME": str(workdir / "nobody")}
    command = [sys.executable, "-m", "kit", "kernel", "build", f"comp={comp}"]
    built = subprocess.run([*command, "--owner", "alice"], cwd=workdir, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    meta = json.loads((workdir / "build/kernel/fake-comp/kernel-metadata.json").read_text())
    assert meta["id"] == "alice/kit-fake-comp" and meta["dataset_sources"] == ["alice/kit-wheel"]
    from conftest import kit_error_line

    line = kit_error_line(command[3:], workdir, env)
    assert "cannot tell whose kernel this is" in line and "--owner" in line and "KAGGLE_USERNAME" in line


def test_image_pins_satisfy_kit_or_kit_bundles_its_own():
    """Every pinned version of a package kit requires satisfies kit's specifier, or the wheel set carries kit's own."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = wheels.read_pins()
    assert pins.python == "3.12" and len(pins.versions) > 700
    carried = {canonicalize_name(b.name) for b in wheels.resolve(pins)}
    for text in metadata_requires():
        requirement = Requirement(text)
        if requirement.marker is not None:
            continue  # extras (dev, keras-cv)
        name = canonicalize_name(requirement.name)
        assert name in carried or requirement.specifier.contains(pins.versions[name], prereleases=True), requirement
    # faiss-cpu is not in the image; its kaggle 2.0.2 is below kit's floor (2.2.4: older clients exit(1) on import
    # without credentials), and the newer client needs a newer kagglesdk and certifi than the image has.
    assert carried == {"faiss-cpu", "kaggle", "kagglesdk", "certifi"} and wheels.image_conflicts(pins) == []


def test_wheel_set_follows_the_image(tmp_path):
    """An image whose keras is too old, or that lacks typer: kit carries its own, with what they need and the image lacks."""
    lines = [line for line in wheels.IMAGE_PINS.read_text().splitlines() if not line.startswith(("keras==", "typer=="))]
    path = tmp_path / "image.txt"
    path.write_text("\n".join([*lines, "keras==3.8.0"]) + "\n")
    bundle = {b.name.lower(): b for b in wheels.resolve(wheels.read_pins(path))}
    assert bundle["keras"].reason == "the image has 3.8.0, kit needs <4,>=3.9" and bundle["keras"].version == version("keras")
    assert bundle["typer"].reason == "missing from the image" and "faiss-cpu" in bundle
    assert "rich" not in bundle and "numpy" not in bundle  # the image's own versions satisfy typer and keras


def metadata_requires() -> list[str]:
    from importlib.metadata import requires

    return requires("kit") or []


def test_embedded_config_with_quotes_and_backslashes_reads_back(fake_kaggle, workdir):
    """The raw YAML block keeps any value as it is; only three double quotes cannot be embedded (one line names it)."""
    value = "a \\ b 'c' \"d\" é \\"
    cfg = _cfg(workdir, f"comp.solution={value}")
    code = kernel.script(cfg, USERNAME)
    namespace: dict = {}
    exec(code.split("\ndef find_input", 1)[0].split("os.makedirs(WORKING, exist_ok=True)", 1)[1], namespace)
    assert yaml.safe_load(namespace["CONFIG_YAML"])["comp"]["solution"] == value == cfg.comp.solution
    with pytest.raises(KitError, match="holds three double quotes"):
        kernel.script(_cfg(workdir, 'comp.solution=x"""y'), USERNAME)
