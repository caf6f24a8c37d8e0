"""The DVC remote as the project configures it, against a real S3-speaking server.

Each test makes a small DVC repository whose `.dvc/config` is the project's own, then
points the `storage` remote at moto through `.dvc/config.local`, as a team member would.
The full-pipeline push, clone and pull is in test_e2e.py.
"""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cxrlab.core.utils import md5sum
from tests.conftest import REPO


def dvc(root: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_repo(root: Path, env: dict, endpoint: str, bucket: str, files: int = 3) -> Path:
    """A git + DVC repo with the project's remote settings and ``files`` random files."""
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, env, "init", "-q")
    (root / ".dvc" / "config").write_text((REPO / ".dvc" / "config").read_text())
    dvc(root, env, "remote", "modify", "--local", "storage", "url", f"s3://{bucket}/cache")
    dvc(root, env, "remote", "modify", "--local", "storage", "endpointurl", endpoint)
    rng = np.random.default_rng(0)
    (root / "weights").mkdir()
    for i in range(files):
        (root / "weights" / f"w{i:03d}.bin").write_bytes(rng.bytes(20_000))
    dvc(root, env, "add", "-q", "weights")
    return root


def test_project_remote_verifies_pulls_and_bounds_timeouts():
    config = (REPO / ".dvc" / "config").read_text()
    for line in ("remote = storage", "verify = true", "connect_timeout = 2", "read_timeout = 2"):
        assert line in config
    assert "access_key" not in config and "secret" not in config  # credentials: env only


def test_an_interrupted_push_is_finished_by_a_retry(s3_server, tmp_path):
    env = s3_server.env
    bucket = s3_server.bucket("cxrlab-interrupted")
    root = make_repo(tmp_path / "a", env, s3_server.endpoint, bucket, files=300)
    push = subprocess.Popen(
        ["dvc", "push", "-j", "1"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(s3_server.keys(bucket)) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(push.pid, signal.SIGKILL)  # as a lost connection or Ctrl-C would
    push.wait()
    partial = len(s3_server.keys(bucket))
    assert 0 < partial < 301, partial  # killed halfway: some objects, not all

    assert "in sync" not in dvc(root, env, "status", "-c", check=False).stdout
    dvc(root, env, "push")
    assert len(s3_server.keys(bucket)) == 301  # 300 files and the directory listing
    assert "in sync" in dvc(root, env, "status", "-c").stdout

    clone = tmp_path / "b"
    subprocess.run(["cp", "-r", str(root), str(clone)], check=True)
    subprocess.run(["rm", "-rf", str(clone / ".dvc" / "cache"), str(clone / "weights")], check=True)
    dvc(clone, env, "pull")
    for f in (root / "weights").iterdir():
        assert md5sum(clone / "weights" / f.name) == md5sum(f)


def test_a_corrupt_remote_object_is_refused_on_pull(s3_server, tmp_path):
    env = s3_server.env
    bucket = s3_server.bucket("cxrlab-corrupt")
    root = make_repo(tmp_path / "a", env, s3_server.endpoint, bucket)
    dvc(root, env, "push")
    victim = root / "weights" / "w001.bin"
    digest = md5sum(victim)
    key = f"cache/files/md5/{digest[:2]}/{digest[2:]}"
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"not the weights")

    subprocess.run(["rm", "-rf", str(root / ".dvc" / "cache"), str(root / "weights")], check=True)
    proc = dvc(root, env, "pull", check=False)
    assert proc.returncode != 0
    assert "failed to pull" in proc.stderr + proc.stdout
    assert not (root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]).exists()
    assert not victim.exists()  # nothing half-right lands in the workspace


@pytest.mark.parametrize("attempts", [None, "1"])
def test_a_dead_endpoint_fails_fast_with_a_clear_message(s3_server, tmp_path, attempts):
    """Nothing listens on the port: the push stops with the endpoint's URL in the error.

    BENCHMARKS.md records the time; the bound here only catches a hang.
    """
    env = dict(s3_server.env)
    env.pop("AWS_MAX_ATTEMPTS", None)
    if attempts:
        env["AWS_MAX_ATTEMPTS"] = attempts
    root = make_repo(tmp_path / "a", env, s3_server.endpoint, "unused")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    dvc(root, env, "remote", "modify", "--local", "storage", "endpointurl", dead)
    start = time.monotonic()
    proc = dvc(root, env, "push", check=False)
    seconds = time.monotonic() - start
    print(f"dead endpoint, AWS_MAX_ATTEMPTS={attempts}: failed after {seconds:.1f} s")
    assert proc.returncode != 0
    assert f'Could not connect to the endpoint URL: "{dead}/' in proc.stderr
    assert seconds < 60


@contextlib.contextmanager
def hung_endpoint():
    """A server that accepts connections and never answers; yields (url, accepted count)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed at the end
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def test_a_hung_endpoint_fails_after_the_read_timeouts(s3_server, tmp_path):
    """With AWS_MAX_ATTEMPTS=1 (README) only s3fs retries: 5 tries of 2 s each.

    Botocore's default retries would multiply the tries (about 25, 100 s). `dvc pull`
    asks up to 4 times (BENCHMARKS.md), too slow to repeat here.
    """
    env = {**s3_server.env, "AWS_MAX_ATTEMPTS": "1"}
    root = make_repo(tmp_path / "a", env, s3_server.endpoint, "unused")
    with hung_endpoint() as (url, accepted):
        dvc(root, env, "remote", "modify", "--local", "storage", "endpointurl", url)
        start = time.monotonic()
        proc = dvc(root, env, "push", check=False)
        seconds = time.monotonic() - start
        tries = len(accepted)
    print(f"hung endpoint, dvc push: failed after {seconds:.1f} s, {tries} connections")
    assert proc.returncode != 0
    assert f'Read timeout on endpoint URL: "{url}/' in proc.stderr
    assert 1 <= tries <= 5
    assert seconds < 60
