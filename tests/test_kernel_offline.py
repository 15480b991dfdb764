"""The inference kernel end to end, offline, on a stand-in for the Kaggle image.

A clean venv (``python -m venv``; pip from ensurepip, nothing from the network) sees exactly the distributions
named in kit/kaggle/kaggle_image.txt: a ``.pth`` points at a folder of symlinks to those distributions' files in
this machine's venv (found with ``importlib.metadata`` ``files()``), and nothing else. The kernel's own script
then installs the wheel set (``pip install --no-index --no-deps``), imports kit.cli, builds the test records of a
tiny competition under /kaggle/input-shaped folders in tmp_path and predicts into working/submission.csv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S, TOOL_TIMEOUT_S
from fake_kaggle import demo_files, write_comp_yaml
from packaging.utils import canonicalize_name
from run_fixtures import make_model, make_run

from kit.config import load_config
from kit.kaggle import kernel, wheels
from kit.runs import write_threshold

OWNER = "kit-tester"


def _link_image(names: set[str], out: Path) -> list[str]:
    """Symlink into ``out`` the files of the installed distributions named ``names`` (canonical); return those found.

    A top-level folder owned only by image distributions is linked whole; one shared with other distributions
    (a namespace package such as google/) is a real folder holding links to the image's parts only.
    """
    from packaging.utils import canonicalize_name

    owners: dict[tuple[str, ...], set[str]] = defaultdict(set)
    children: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    found, site = [], Path(sysconfig.get_paths()["purelib"]).resolve()
    for dist in metadata.distributions():
        if Path(dist.locate_file("")).resolve() != site:
            continue  # an editable install's finder, or a distribution from another folder
        name = canonicalize_name(dist.metadata["Name"] or "")
        in_image = name in names
        if in_image:
            found.append(name)
        for file in dist.files or []:
            parts = Path(file).parts
            if not parts or parts[0] == "..":
                continue
            for k in range(1, len(parts) + 1):
                owners[parts[:k]].add(name)
                if in_image and k > 1:
                    children[parts[: k - 1]].add(parts[:k])
            if in_image:
                children[()].add(parts[:1])

    def place(prefix: tuple[str, ...]) -> None:
        source, target = site.joinpath(*prefix), out.joinpath(*prefix)
        if not source.exists():
            return
        if owners[prefix] <= names or not source.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
            return
        target.mkdir(parents=True, exist_ok=True)
        for child in children[prefix]:
            place(child)

    for top in children[()]:
        place(top)
    return found


@pytest.mark.slow
def test_inference_kernel_runs_offline_on_the_image_packages(tmp_path, monkeypatch):
    kaggle = tmp_path / "kaggle"
    comp_dir, working, temp = kaggle / "input" / "fake-comp", kaggle / "working", kaggle / "temp"
    for name, data in demo_files(n_train=6, n_test=5).items():
        (comp_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (comp_dir / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)  # build/ goes here

    # A tiny run: an 8 px model with seeded weights, its config and the threshold evaluate would have chosen.
    comp = write_comp_yaml(tmp_path)
    cfg = load_config([f"comp={comp}", "model=cnn", "model.image_size=8", f"data.root={comp_dir}", "predict.threshold=auto"])
    run = make_run(cfg, tmp_path / "runs" / "fake-comp" / "cnn" / "run1", make_model(1, seed=3))
    write_threshold(run, 0.45, "val", 6, None)

    # The bundle as `kit kernel build --from-run` and `kit kernel dataset` write it, attached under input/.
    folder = kernel.build(cfg, OWNER, [run])
    pins = wheels.read_pins()
    built = wheels.build_wheel_set(kaggle / "input" / "kit-wheel", pins)
    assert built[0].name.startswith("kit-") and {w.name.split("-")[0] for w in built[1:]} == {
        "faiss_cpu",
        "kaggle",
        "kagglesdk",
        "certifi",
    }  # as test_kernel checks
    shutil.copytree(tmp_path / "build" / "model" / "fake-comp", kaggle / "input" / "kit-model-fake-comp")

    # The stand-in image: a venv with pip only, plus a .pth to links of exactly the pinned distributions.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TOOL_TIMEOUT_S)
    python = venv / "bin" / "python"
    image = tmp_path / "image"
    # What the bundle carries is left out: the real image's older copies would be replaced by pip, while links to this
    # machine's newer ones would be "uninstalled" by pip moving the links folder away.
    carried = {canonicalize_name(b.name) for b in wheels.resolve(pins)}
    found = _link_image(set(pins.versions) - carried, image)
    assert {"tensorflow", "keras", "pandas", "typer", "omegaconf"} <= set(found) and "faiss-cpu" not in found
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "kaggle-image.pth").write_text(f"{image}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KAGGLE"))}
    env |= {"KIT_KAGGLE_INPUT": str(kaggle / "input"), "KIT_KAGGLE_WORKING": str(working), "KIT_KAGGLE_TEMP": str(temp)}
    env |= {"HOME": str(tmp_path / "home"), "PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1"}
    before = subprocess.run([str(python), "-c", "import kit"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert before.returncode != 0  # kit comes only from the bundle

    result = subprocess.run(
        [str(python), str(folder / "kit_kernel.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import kit.cli, kit; print(kit.__file__)"], capture_output=True, text=True, env=env
    )
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr

    submission = pd.read_csv(working / "submission.csv", dtype=str)
    sample = pd.read_csv(comp_dir / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == ["id", "label"] and submission["id"].tolist() == sample["id"].tolist()
    assert set(submission["label"]) <= {"0", "1"}
    probs = pd.read_csv(working / "probabilities.csv")
    expected = (probs["1"] >= 0.45).map({True: "1", False: "0"})
    assert submission["label"].tolist() == expected.tolist()  # the threshold packed with the run
    # Only what the user needs is in working; records are scratch, in temp.
    written = ["kit-config.yaml", "probabilities.csv", "submission.csv", "submission.json"]  # .json: how it was made
    assert sorted(p.name for p in working.iterdir()) == written
    assert list((temp / "records" / "fake-comp" / "8").rglob("test-*.tfrecord"))
    assert not list((temp / "records" / "fake-comp" / "8").rglob("train-*.tfrecord"))
