"""Shared fixtures: tiny synthetic PneumoniaMNIST files, tiny model configs, an S3 server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cxrlab.classification.config import ClassifierConfig, TrainConfig
from tests import tiny

torch.set_flush_denormal(True)  # as every stage does (seed_everything): tiny nets crawl without
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests first: under xdist the longest group must start at once."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


SHARED_DATA = REPO.parent / "shared" / "data"
# The pretrained weight files `make weights` fetches: a second mirror for the pipelines the
# tests run, so no test downloads them.
PRETRAINED = [
    REPO / "data" / "raw" / name for name in ("efficientnet_lite0", "smollm2", "fid_inception")
]


def stage_metrics(root: Path, folder: str) -> dict:
    """A stage's dvclive summary, ``<root>/<folder>/metrics.json``."""
    from cxrlab.report.report import metrics_file

    return json.loads((Path(root) / metrics_file(folder)).read_text())


def offline_mirrors() -> list[str]:
    """``fetch.mirrors`` of a test pipeline: the data mirror and the fetched weights."""
    missing = [p for p in PRETRAINED if not p.is_dir()]
    if missing:
        pytest.skip(f"no {missing[0]}: run `make weights` (or `make test`) first")
    return [str(SHARED_DATA), str(REPO / "data" / "raw")]


def run(cmd, cwd, env) -> subprocess.CompletedProcess:
    """Run ``cmd``; fail the test with its output's tail if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def copy_repository(dest: Path) -> Path:
    """The tracked and untracked-not-ignored files of this checkout, without DVC outputs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def commit_all(root: Path) -> dict[str, str]:
    """``git init`` and commit everything in ``root``; the env with this venv on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        run(cmd, root, env)
    return env


def assert_resume_gives_the_same_weights(
    train, fresh, checkpoint: Path, stop_at: int = 2, weights=lambda model: model.state_dict()
):
    """Train straight; train again, interrupted after epoch ``stop_at``, then resumed from
    ``checkpoint``: the weights match and the checkpoint is gone.

    ``train(model, checkpoint, on_epoch)`` trains ``model`` in place; ``fresh()`` builds
    the same untrained model every call; ``weights(model)`` is the state compared.
    """

    class Interrupted(Exception):
        pass

    def stop(row):
        if row["epoch"] == stop_at:
            raise Interrupted

    straight = fresh()
    train(straight, None, None)
    with pytest.raises(Interrupted):
        train(fresh(), checkpoint, stop)
    assert checkpoint.is_file()
    resumed = fresh()
    train(resumed, checkpoint, None)
    for a, b in zip(weights(straight).values(), weights(resumed).values(), strict=True):
        torch.testing.assert_close(a, b)
    assert not checkpoint.exists()


def synthetic_split(
    n: int, rng: np.random.Generator, size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images; class 1 has a bright blob in the lower-left quadrant."""
    labels = rng.integers(0, 2, n).astype(np.uint8)
    labels[:2] = [0, 1]  # both classes always present
    images = rng.normal(90, 25, (n, size, size))
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - 0.7 * size) ** 2 + (xx - 0.3 * size) ** 2) / (2 * (size / 7) ** 2))
    images += labels[:, None, None] * 120 * blob
    return np.clip(images, 0, 255).astype(np.uint8), labels[:, None]


def write_npz(path: Path, sizes=(64, 24, 24), seed: int = 0, **overrides) -> Path:
    """Write a PneumoniaMNIST-layout npz; ``overrides`` replace or (None) drop keys."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = synthetic_split(n, rng)
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "pneumoniamnist.npz")


@pytest.fixture
def tiny_model_cfg() -> ClassifierConfig:
    return tiny.CLASSIFIER


@pytest.fixture
def tiny_train_cfg() -> TrainConfig:
    return tiny.CLASSIFIER_TRAIN


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mirror = tmp_path / "mirror"
    write_npz(mirror / "pneumoniamnist" / "pneumoniamnist.npz")
    params["fetch"]["mirrors"] = [str(mirror)]
    params["classifier"]["model"]["width"] = 8
    params["classifier"]["train"].update(epochs=2, batch_size=16)
    params["classifier"]["eval"].update(gradcam_per_group=3, failures=4)
    params["clip"]["arch"].update(
        embed_dim=16,
        vision={"image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16},
    )
    params["clip"]["arch"]["text"].update(width=32, layers=1)
    params["clip"]["train"].update(epochs=1, batch_size=16)
    params["clip"]["subset"]["per_class"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path, params


@pytest.fixture(scope="session")
def skeleton_home(tmp_path_factory) -> Path:
    """An offline HF_HOME with every repository the gpu profiles name, as small skeletons.

    About 6 GB and a minute to write, so it is built once per test run and shared by the
    xdist workers (the first to ask builds it under a lock). Tests only read it.
    """
    from filelock import FileLock

    from cxrlab.skeletons import build

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above every worker's own
    home = base / "hf-skeletons"
    with FileLock(f"{home}.lock"):
        if not (home / "complete").is_file():
            shutil.rmtree(home, ignore_errors=True)
            build(home, "small")
            (home / "complete").touch()
    return home


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1, the test double of a team's DVC remote."""

    endpoint: str
    env: dict[str, str]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server():
    """Start ``moto_server``; credentials come from the environment, as they should."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env = {**os.environ, **creds, "AWS_DEFAULT_REGION": "us-east-1"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.Popen(
        [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    old = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)  # for the boto3 client in the test process
    yield S3Server(f"http://127.0.0.1:{port}", env)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


SCREENSHOTS = REPO / "build" / "screenshots"  # kept after the run (CI can upload them)
STAGE_SECONDS = REPO / "build" / "e2e_stage_seconds.tsv"  # kept after the run, like screenshots


def run_timed(cmd, cwd, env, tsv: Path = STAGE_SECONDS) -> str:
    """Run ``cmd`` like ``run``, and write how long each `Running stage` block took to ``tsv``."""
    env = {**env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines, starts = [], []  # (stage, seconds since start)
    t0 = time.perf_counter()
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Running stage '"):
            starts.append((line.split("'")[1], time.perf_counter() - t0))
    proc.wait()
    total = time.perf_counter() - t0
    out = "".join(lines)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    ends = [t for _, t in starts[1:]] + [total]
    spans = ((end - t, name) for (name, t), end in zip(starts, ends, strict=True))
    rows = sorted(spans, reverse=True)
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(
        f"seconds\tstage\n{total:.1f}\t(all)\n" + "".join(f"{s:.1f}\t{n}\n" for s, n in rows)
    )
    return out
