"""kit.kaggle.kernel: the bundle, the wheel dataset and push/status against the fake Kaggle server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fake_kaggle import KEY, USERNAME, write_comp_yaml

from kit.config import PROJECT_ROOT, load_config
from kit.errors import KitError
from kit.kaggle import kernel

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
    assert "--no-deps" in code and "/kaggle/working/submission.csv" in code.replace("{WORKING}", "/kaggle/working")
    assert KEY not in _bundle_text(folder)


def test_embedded_config_reproduces_the_run(fake_kaggle, workdir):
    """The kernel's command line (comp=<config> model=<config> + paths) resolves to cfg: the config is the last layer."""
    cfg = _cfg(workdir, "train.epochs=3", "model=cnn", "augment.cutmix=0.5")
    path = workdir / "kit-config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(kernel.kernel_config(cfg, USERNAME), sort_keys=False))
    again = load_config([f"comp={path}", f"model={path}", "data.root=/kaggle/input/fake-comp"])
    code = kernel.script(cfg, USERNAME)
    assert 'f"comp={config}",' in code and 'f"model={config}",' in code and 'f"hparams=' not in code
    assert again.train.epochs == 3 and again.model.name == "cnn" and again.augment.cutmix == 0.5
    assert again.comp == cfg.comp and again.model.image_size == cfg.model.image_size
    assert again.run.root == "/kaggle/working/runs" and again.data.records_root == "/kaggle/working/records"


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


def test_push_with_the_real_client(fake_kaggle, workdir, capsys):
    cfg = _cfg(workdir)
    url = kernel.push(cfg)
    assert url.endswith(f"{USERNAME}/kit-fake-comp")
    (save,) = fake_kaggle.calls("SaveKernel")
    body = save.body
    assert body["slug"] == f"{USERNAME}/kit-fake-comp" and body["newTitle"] == "kit fake-comp"
    assert body["language"] == "python" and body["kernelType"] == "script"
    assert body["enableGpu"] is True and body["enableInternet"] is False and body["isPrivate"] is True
    assert body["competitionDataSources"] == ["fake-comp"] and body["datasetDataSources"] == [f"{USERNAME}/kit-wheel"]
    assert body["text"] == (Path("build/kernel/fake-comp") / "kit_kernel.py").read_text()
    assert KEY not in json.dumps(body)
    assert "pushed" in capsys.readouterr().out


def test_status(fake_kaggle, workdir):
    fake_kaggle.kernel_status = "COMPLETE"
    assert kernel.status(_cfg(workdir)) == "complete"
    (call,) = fake_kaggle.calls("GetKernelSessionStatus")
    assert call.body == {"userName": USERNAME, "kernelSlug": "kit-fake-comp"}


def test_publish_dataset_creates_then_versions(fake_kaggle, workdir):
    cfg = _cfg(workdir)
    assert kernel.publish_dataset(cfg) == [f"{USERNAME}/kit-wheel"]
    (create,) = fake_kaggle.dataset_versions
    assert create["method"] == "CreateDataset" and create["slug"] == "kit-wheel" and create["ownerSlug"] == USERNAME
    wheels = [zipfile.ZipFile(io.BytesIO(data)).namelist() for data in fake_kaggle.uploads.values()]
    (names,) = [n for n in wheels if "kit/kaggle/kernel.py" in n]
    assert {"kit/kaggle/client.py", "kit/kaggle/download.py", "kit/kaggle/submit.py"} <= set(names)
    assert not any("fake_kaggle" in n or n.startswith("tests/") for n in names)
    # the dependencies a Kaggle image may lack travel beside kit's wheel, for kernels without internet
    packages = {name.split("/")[0] for n in wheels if "kit/kaggle/kernel.py" not in n for name in n}
    assert {"omegaconf", "typer"} <= packages

    kernel.publish_dataset(cfg)
    assert [v["method"] for v in fake_kaggle.dataset_versions] == ["CreateDataset", "CreateDatasetVersion"]


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
    import yaml

    cfg = _cfg(workdir, "model=cnn", "comp.image_sizes.cnn=32", "model.image_size=48")
    assert cfg.model.image_size == 48
    path = workdir / "kit-config.yaml"
    path.write_text(yaml.safe_dump(kernel.kernel_config(cfg, USERNAME), sort_keys=False))
    again = load_config([f"comp={path}", f"model={path}", "data.root=/kaggle/input/fake-comp"])
    assert again.model.image_size == 48
