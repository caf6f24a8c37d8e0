"""Each process's thread share when several run at once (cxrlab.core.threads)."""

import os
import subprocess
import sys

import pytest

from cxrlab.core.threads import share_cores
from tests.conftest import REPO


def test_a_lone_process_keeps_every_setting():
    env = {}
    assert share_cores(env, n_cores=16) is None and env == {}
    env = {"OMP_NUM_THREADS": "3"}  # set by hand: kept and reported
    assert share_cores(env, n_cores=16) == 3 and env == {"OMP_NUM_THREADS": "3"}


@pytest.mark.parametrize(
    ("env", "threads"),
    [
        ({"CXRLAB_WORKERS": "2"}, 8),  # dvc queue start -j 2 on 16 cores
        ({"LOCAL_WORLD_SIZE": "4"}, 4),  # accelerate's 4 processes on this machine
        ({"CXRLAB_WORKERS": "2", "LOCAL_WORLD_SIZE": "4"}, 2),
        ({"CXRLAB_WORKERS": "64"}, 1),  # never fewer than one thread
        ({"CXRLAB_WORKERS": "2", "OMP_NUM_THREADS": "5"}, 5),  # set by hand: wins
    ],
)
def test_shared_cores_are_split_and_openmp_stops_spinning(env, threads):
    assert share_cores(env, n_cores=16) == threads
    assert env["OMP_NUM_THREADS"] == str(threads) and env["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_worker_count_says_what_it_expects(value):
    with pytest.raises(ValueError, match=f"CXRLAB_WORKERS is '{value}'; expected a whole number"):
        share_cores({"CXRLAB_WORKERS": value}, n_cores=16)


def torch_threads(**extra: str) -> tuple[int, str]:
    """torch's thread count and OpenMP's wait policy in a fresh process that imports cxrlab."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "CXRLAB_"))}
    env |= {"PYTHONPATH": str(REPO / "src"), **extra}
    code = "import cxrlab, os, torch; print(torch.get_num_threads(), os.getenv('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    threads, policy = out.stdout.split()
    return int(threads), policy


def test_importing_cxrlab_sets_the_share_before_torch_loads():
    alone = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env={k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))},
        capture_output=True, text=True,
    )  # fmt: skip
    assert torch_threads() == (int(alone.stdout), "None")  # alone: torch's own default
    cores = len(os.sched_getaffinity(0))
    assert torch_threads(CXRLAB_WORKERS="2") == (max(1, cores // 2), "PASSIVE")
