"""A fake Kaggle API server for tests: the real ``kaggle`` client talks to it over HTTP.

How the real client reaches it (read from kagglesdk 0.1.38 / kaggle 2.2.5):

* ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes ``kagglesdk.kaggle_env.get_endpoint`` answer
  ``http://localhost``, so every call is ``POST http://localhost/api/v1/<Service>/<Method>``.
* ``requests`` honours ``HTTP_PROXY`` (``Session.merge_environment_settings``), so with
  ``HTTP_PROXY=http://127.0.0.1:<port>`` and no ``NO_PROXY`` every request, including the 302'd
  file downloads and the ``PUT`` uploads, arrives here with the absolute URL in the request line.
  The port is free and per test, so pytest-xdist workers never collide.

The server implements only the calls kit makes, records every request, and can be told to fail
a method with a status code (optionally only the first K times) to test kit's error handling.

Kernels behave as on Kaggle: each push (SaveKernel) makes a new version that follows a
:class:`KernelPlan` (``fake.kernel_plan``, set before the push): its status moves one state per
status request (queued -> running -> complete, or -> error with a failure message), never on a
clock, so no test sleeps; once it ended, ListKernelSessionOutput lists its output files (fetched
from here, like Kaggle's signed URLs) and its log, a JSON list of {stream_name, time, data}
entries as Kaggle keeps it. CreateCodeSubmission refuses a version that did not complete or
lacks the named file, as Kaggle does.

PYTEST_DONT_REWRITE (no asserts here; lets test modules import helpers and load the fixture plugin).
"""

from __future__ import annotations

import contextlib
import io
import json
import stat
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from conftest import STATE_TIMEOUT_S

USERNAME = "kit-tester"
KEY = "s3cr3t-kaggle-key-0123456789abcdef"
TOKEN = "KGAT_fake_access_token_0123456789"


# ----------------------------------------------------------------------------- archives


def png_bytes(value: int, size: int = 8) -> bytes:
    """A valid grey ``size`` x ``size`` PNG (standard library only, so no cv2/PIL in these tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([value % 256]) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def demo_files(n_train: int = 6, n_test: int = 3) -> dict[str, bytes]:
    """A tiny competition in the demo layout (configs/competitions/demo.yaml)."""
    files: dict[str, bytes] = {}
    train_rows, test_rows, sample_rows = ["id,label"], ["id"], ["id,label"]
    for i in range(n_train):
        files[f"train/tr{i}.png"] = png_bytes(i * 20)
        train_rows.append(f"tr{i},{i % 2}")
    for i in range(n_test):
        files[f"test/te{i}.png"] = png_bytes(i * 30 + 5)
        test_rows.append(f"te{i}")
        sample_rows.append(f"te{i},0")
    files["train.csv"] = ("\n".join(train_rows) + "\n").encode()
    files["test.csv"] = ("\n".join(test_rows) + "\n").encode()
    files["sample_submission.csv"] = ("\n".join(sample_rows) + "\n").encode()
    return files


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_evil_zip(kind: str) -> bytes:
    """A zip with one hostile entry: ``parent`` (../), ``absolute`` (/abs) or ``symlink``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.csv", "id,label\n")
        if kind == "parent":
            archive.writestr("../evil.txt", "escaped")
        elif kind == "absolute":
            info = zipfile.ZipInfo("placeholder")
            info.filename = "/tmp/kit-abs-evil.txt"  # ZipInfo() strips a leading '/', a hostile archive does not
            archive.writestr(info, "escaped")
        elif kind == "symlink":
            info = zipfile.ZipInfo("link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc")
        else:
            raise ValueError(kind)
    return buffer.getvalue()


DEMO_COMP_YAML = """\
comp:
  name: fake-comp
  slug: fake-comp
  source: competition
  train: {csv: train.csv, id_column: id, label_column: label, image_dir: train, image_ext: .png}
  test: {csv: test.csv, id_column: id, image_dir: test, image_ext: .png}
  sample_submission: sample_submission.csv
  classes: ["0", "1"]
  metric: accuracy
  submission: {id_column: id, label_column: label, label_format: name}
"""


def write_comp_yaml(folder: Path, slug: str = "fake-comp", source: str = "competition") -> Path:
    """A competition YAML for the fake competition (demo layout) in ``folder``."""
    path = Path(folder) / f"{slug.replace('/', '-')}.yaml"
    text = DEMO_COMP_YAML.replace("slug: fake-comp", f"slug: {slug}").replace("source: competition", f"source: {source}")
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- kernels

FAKE_RUN_CONFIG = "comp:\n  name: fake-comp\nmodel:\n  name: {model}\n  image_size: 32\ntrain:\n  epochs: 2\n"
FAKE_SCORE = {"metric": "accuracy", "value": 0.75, "interval": [0.55, 0.9], "what": "hold-out at 0.5 (val, 40 rows)"}


def kernel_log(*lines: str, stream: str = "stdout") -> str:
    """A kernel log as Kaggle keeps it: a JSON list of {stream_name, time, data} entries, one a line here."""
    return json.dumps([{"stream_name": stream, "time": 1.5 * i, "data": line + "\n"} for i, line in enumerate(lines)])


def kernel_outputs(model: str = "cnn", submission: str = "id,label\nte0,0\nte1,1\nte2,0\n") -> dict[str, bytes]:
    """What kit's training kernel leaves in /kaggle/working (kit/kaggle/kernel_script.py): the submission and
    probabilities, the resolved config, and its best run's folder as run/ (config, metrics, history, plots, done)."""
    config = FAKE_RUN_CONFIG.format(model=model).encode()
    metrics = {"monitor": "val_accuracy", "best": 0.75, "epochs": 2, "score": FAKE_SCORE}
    return {
        "submission.csv": submission.encode(),
        "probabilities.csv": b"id,p0,p1\nte0,0.9,0.1\nte1,0.2,0.8\nte2,0.7,0.3\n",
        "kit-config.yaml": config,
        "run/config.yaml": config,
        "run/metrics.json": json.dumps(metrics).encode(),
        "run/history.csv": b"epoch,loss,val_accuracy\n0,0.69,0.5\n1,0.52,0.75\n",
        "run/plots/scores.png": png_bytes(200),
        "run/best.keras": b"not a real model: the fake only carries bytes",
        "run/done": b"",
    }


@dataclass
class KernelPlan:
    """What the next pushed kernel version does: the states its status answers, one per status request (the last one
    held); the failure message it ends with (answered with ERROR); its output files and its log."""

    states: tuple[str, ...] = ("QUEUED", "RUNNING", "COMPLETE")
    failure: str = ""
    files: dict[str, bytes] = field(default_factory=kernel_outputs)
    log: str = field(default_factory=lambda: kernel_log("+ pip install kit", "kit: training", "kit: submission.csv"))


@dataclass
class KernelVersion:
    plan: KernelPlan
    looks: int = 0  # status requests answered so far

    def state(self) -> str:
        return self.plan.states[min(self.looks, len(self.plan.states) - 1)]

    def ended(self) -> bool:
        return self.state() in ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")


# ----------------------------------------------------------------------------- server


@dataclass
class Request:
    method: str  # HTTP method
    path: str  # URL path, e.g. /api/v1/competitions.CompetitionApiService/DownloadDataFiles
    name: str  # the API method (DownloadDataFiles), or FILE / UPLOAD / KERNEL_FILE for blob traffic
    body: Any  # parsed JSON body, or the raw bytes of an upload
    auth: str  # the Authorization header ("" when absent)


@dataclass
class Failure:
    status: int
    message: str
    times: int | None  # None: every time
    headers: dict[str, str] = field(default_factory=dict)


class FakeKaggle:
    """The fake server's state; tests arrange it and read ``requests`` afterwards."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.competitions: dict[str, bytes] = {"fake-comp": make_zip(demo_files())}
        self.datasets: dict[str, bytes] = {}  # "owner/name" -> zip
        self.uploads: dict[str, bytes] = {}  # token -> exact bytes PUT
        self.submissions: list[dict[str, Any]] = []  # a "public_score" key: that one's score, else public_score
        self.pending_polls = 2  # ListSubmissions answers PENDING this many times, then COMPLETE
        self.public_score = "0.87654"
        self.kernels: dict[str, dict[str, Any]] = {}  # "owner/slug" -> the last SaveKernel body
        self.kernel_plan = KernelPlan()  # what the next pushed version does
        self.kernel_versions: dict[str, list[KernelVersion]] = {}  # "owner/slug" -> its versions, oldest first
        self.existing_datasets: set[str] = set()  # owner/name known to GetDatasetStatus
        self.dataset_versions: list[dict[str, Any]] = []  # CreateDataset / CreateDatasetVersion bodies
        self.failures: dict[str, list[Failure]] = {}
        self.file_hold_after: int | None = None  # archives stop after this many bytes until file_release is set
        self.file_release = threading.Event()  # (an interrupted download at any machine speed: no sleep to outrun)
        self._polls = 0
        self.home: Path | None = None  # the test's private HOME (set by the fixture)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -- arranging
    def fail(self, name: str, status: int, message: str = "", times: int | None = None, headers: dict | None = None) -> None:
        """Answer API method ``name`` with ``status`` (the first ``times`` calls, or always)."""
        default = {401: "Unauthenticated", 403: "Permission 'competitions.participate' was denied", 404: "Not found"}
        text = message or default.get(status, f"error {status}")
        self.failures.setdefault(name, []).append(Failure(status, text, times, dict(headers or {})))

    def calls(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.name == name]

    @property
    def env(self) -> dict[str, str]:
        """Environment that points the real client at this server."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": proxy, "http_proxy": proxy}

    # -- lifecycle
    def start(self) -> FakeKaggle:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.file_release.set()  # a held download ends instead of waiting out its limit
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- handling
    def _failure(self, name: str) -> Failure | None:
        for failure in self.failures.get(name, []):
            if failure.times is None:
                return failure
            if failure.times > 0:
                failure.times -= 1
                return failure
        return None

    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], bytes]:
        base = "http://localhost"
        if method == "PUT" and path.startswith("/upload/"):
            self.uploads[path.rsplit("/", 1)[1]] = body
            return _json(200, {})
        if method == "GET" and path.startswith("/kernel-output/"):
            return self._kernel_file(path[len("/kernel-output/") :])
        if method == "GET" and path.startswith("/files/"):
            name = path[len("/files/") :]
            data = {**{f"{k}.zip": v for k, v in self.competitions.items()}, **self._dataset_files()}.get(name)
            if data is None:
                return _json(404, {"code": 404, "message": "no such file"})
            headers = {"Content-Type": "application/zip", "Last-Modified": formatdate(usegmt=True)}
            return 200, headers, data
        name = path.rsplit("/", 1)[-1]
        if not path.startswith("/api/v1/"):
            return _json(404, {"code": 404, "message": f"unknown path {path}"})
        if name == "DownloadDataFiles":
            slug = body.get("competitionName", "")
            if slug not in self.competitions:
                return _json(404, {"code": 404, "message": "Competition not found"})
            return 302, {"Location": f"{base}/files/{slug}.zip", "Content-Length": "0"}, b""
        if name == "DownloadDataset":
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.datasets:
                return _json(404, {"code": 404, "message": "Dataset not found"})
            return 302, {"Location": f"{base}/files/{body.get('datasetSlug')}.zip", "Content-Length": "0"}, b""
        if name in ("StartSubmissionUpload", "StartBlobUpload"):
            token = f"tok{len(self.requests)}"
            return _json(200, {"token": token, "createUrl": f"{base}/upload/{token}"})
        if name == "CreateSubmission":
            token = body.get("blobFileTokens", "")
            ref = 1000 + len(self.submissions)
            self.submissions.append(
                {
                    "ref": ref,
                    "description": body.get("submissionDescription", ""),
                    "token": token,
                    "bytes": self.uploads.get(token),
                }
            )
            return _json(200, {"message": "Successfully submitted", "ref": ref})
        if name in ("ListSubmissions", "GetSubmission"):
            with self._lock:
                self._polls += 1
                done = self._polls > self.pending_polls
            items = [
                {
                    "ref": s["ref"],
                    "description": s["description"],
                    "fileName": "submission.csv",
                    "date": "2026-01-01T00:00:00.000Z",
                    "status": "COMPLETE" if done else "PENDING",
                    **({"publicScore": s.get("public_score", self.public_score)} if done else {}),
                }
                for s in reversed(self.submissions)
            ]
            if name == "GetSubmission":
                return _json(200, next((i for i in items if i["ref"] == body.get("ref")), {}))
            return _json(200, {"submissions": items})
        if name == "SaveKernel":
            slug = body.get("slug", "")
            self.kernels[slug] = body
            versions = self.kernel_versions.setdefault(slug, [])
            versions.append(KernelVersion(self.kernel_plan))
            url = f"https://www.kaggle.com/code/{slug}"
            return _json(200, {"ref": f"/code/{slug}", "url": url, "versionNumber": len(versions)})
        if name in ("GetKernelSessionStatus", "ListKernelSessionOutput"):
            version, number = self._kernel_version(body)
            if version is None:
                return _json(404, {"code": 404, "message": "Kernel or version not found"})
            if name == "GetKernelSessionStatus":
                with self._lock:
                    state = version.state()
                    version.looks += 1
                return _json(200, {"status": state, **({"failureMessage": version.plan.failure} if state == "ERROR" else {})})
            return _json(200, self._kernel_output(body, version, number))
        if name == "CreateCodeSubmission":
            return self._code_submission(body)
        if name == "GetDatasetStatus":
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.existing_datasets:
                return _json(404, {"code": 404, "message": "Dataset not found"})
            return _json(200, {"status": "READY"})
        if name in ("CreateDataset", "CreateDatasetVersion"):
            self.dataset_versions.append({"method": name, **body})
            ref = f"{body.get('ownerSlug')}/{body.get('slug') or body.get('datasetSlug')}"
            self.existing_datasets.add(ref)
            return _json(200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "Ok"})
        if name == "IntrospectToken":
            active = body.get("token") == TOKEN
            return _json(200, {"active": active, "username": USERNAME if active else ""})
        return _json(404, {"code": 404, "message": f"fake server does not implement {name}"})

    def _kernel_version(self, body: dict) -> tuple[KernelVersion | None, int]:
        """The version a request names (versionLabel v<N>; the latest without one) and its number."""
        versions = self.kernel_versions.get(f"{body.get('userName')}/{body.get('kernelSlug')}", [])
        label = body.get("versionLabel") or f"v{len(versions)}"
        if not (label.startswith("v") and label[1:].isdigit()):  # the client writes a number N as v<N>
            return None, 0
        number = int(label[1:])
        return (versions[number - 1], number) if 1 <= number <= len(versions) else (None, 0)

    def _kernel_output(self, body: dict, version: KernelVersion, number: int) -> dict[str, Any]:
        """One page of a version's outputs (none before it ended), each with a URL to fetch it from, and its log."""
        if not version.ended():
            return {"files": [], "log": ""}
        names = sorted(version.plan.files)
        start = int(body.get("pageToken") or 0)
        end = start + int(body.get("pageSize") or 20)
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}/{number}"
        files = [{"fileName": n, "url": f"http://localhost/kernel-output/{ref}/{quote(n, safe='')}"} for n in names[start:end]]
        return {"files": files, "log": version.plan.log, **({"nextPageToken": str(end)} if end < len(names) else {})}

    def _kernel_file(self, rest: str) -> tuple[int, dict[str, str], bytes]:
        owner, slug, number, name = rest.split("/", 3)
        versions = self.kernel_versions.get(f"{owner}/{slug}", [])
        data = versions[int(number) - 1].plan.files.get(unquote(name)) if 1 <= int(number) <= len(versions) else None
        if data is None:
            return _json(404, {"code": 404, "message": "no such output"})
        return 200, {"Content-Type": "application/octet-stream", "Last-Modified": formatdate(usegmt=True)}, data

    def _code_submission(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        slug = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
        versions = self.kernel_versions.get(slug, [])
        number = int(body.get("kernelVersion") or len(versions))
        version = versions[number - 1] if 1 <= number <= len(versions) else None
        if version is None:
            return _json(404, {"code": 404, "message": f"Kernel {slug} version {number} not found"})
        if version.state() != "COMPLETE":
            return _json(400, {"code": 400, "message": f"Kernel version {number} has not completed successfully"})
        if body.get("fileName") not in version.plan.files:
            return _json(400, {"code": 400, "message": f"Output file {body.get('fileName')} not found in kernel output"})
        ref = 1000 + len(self.submissions)
        self.submissions.append(
            {
                "ref": ref,
                "description": body.get("submissionDescription", ""),
                "kernel": slug,
                "version": number,
                "bytes": version.plan.files[body["fileName"]],
            }
        )
        return _json(200, {"message": "Your kernel submission was queued", "ref": ref})

    def _dataset_files(self) -> dict[str, bytes]:
        return {f"{ref.split('/')[1]}.zip": data for ref, data in self.datasets.items()}


def _json(status: int, value: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKaggle

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        path = urlsplit(self.path).path  # through a proxy the request line holds the absolute URL
        raw = self._body()
        if self.command == "POST":
            try:
                body: Any = json.loads(raw or b"{}")
            except ValueError:
                body = raw
        else:
            body = raw
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/files/"):
            name = "FILE"
        elif path.startswith("/upload/"):
            name = "UPLOAD"
        elif path.startswith("/kernel-output/"):
            name = "KERNEL_FILE"
        fake = self.fake
        with fake._lock:
            fake.requests.append(Request(self.command, path, name, body, self.headers.get("Authorization", "")))
            failure = fake._failure(name)
        if failure is not None:
            status, headers, data = _json(failure.status, {"code": failure.status, "message": failure.message})
            headers.update(failure.headers)
        else:
            status, headers, data = fake.handle(self.command, path, body)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if name == "FILE" and fake.file_hold_after is not None:  # a download held half way, to interrupt it there
            self.wfile.write(data[: fake.file_hold_after])
            self.wfile.flush()
            fake.file_release.wait(STATE_TIMEOUT_S)
            with contextlib.suppress(OSError):  # the client was killed meanwhile: its socket is gone
                self.wfile.write(data[fake.file_hold_after :])
            return
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _serve


@pytest.fixture
def fake_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running fake Kaggle, a private HOME and the env that points the real client at it.

    Credentials are KAGGLE_USERNAME/KAGGLE_KEY; tests that need other kinds change the env.
    Backoff and poll intervals are shortened through kit's env knobs so tests stay fast.
    """
    server = FakeKaggle().start()
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    for name in (
        "NO_PROXY",
        "no_proxy",
        "KAGGLE_API_TOKEN",
        "KAGGLE_CONFIG_DIR",
        "XDG_CONFIG_HOME",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KIT_KAGGLE_BACKOFF", "0.01")
    monkeypatch.setenv("KIT_KAGGLE_POLL", "0.01")
    server.home = home
    try:
        yield server
    finally:
        server.stop()
