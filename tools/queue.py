"""Run queued DVC experiments and wait for them: the one way the benchmark tools do it.

``dvc queue start`` forks workers that outlive it, so two things need care:

- its output is not captured: the workers would hold the pipes open and the call would
  never return;
- a queue's idle workers linger about 10 s and take any task queued meanwhile, with
  their own environment (a ``CXRLAB_WORKERS`` set for the next queue would not arrive).
  So :func:`run_queue` starts only when no worker is left, and returns only after its
  own workers are gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def dvc(repo: Path, *args: str) -> str:
    """Run ``dvc args`` in ``repo``; its stdout, or exit with the tail of its output."""
    proc = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _wait_until_no_worker(repo: Path) -> str:
    while "0 active, 0 idle" not in (status := dvc(repo, "queue", "status")):
        time.sleep(1)
    return status


def run_queue(repo: Path, experiments: dict[str, list[str]], jobs: int,
              workers: str | None = None) -> float:  # fmt: skip
    """Queue each named experiment (its ``dvc exp run`` arguments), run ``jobs`` at a time.

    Args:
        repo: The repository.
        experiments: Experiment name to the arguments after ``dvc exp run --queue -n NAME``.
        jobs: ``dvc queue start -j``.
        workers: ``CXRLAB_WORKERS`` for the queue's processes; None leaves it unset.

    Returns:
        The wall seconds from the queue's start to its last task's end. Exits if a task
        failed or the workers stopped before their tasks.
    """
    for name, args in experiments.items():
        dvc(repo, "exp", "run", "--queue", "-n", name, *args)
    _wait_until_no_worker(repo)
    env = {k: v for k, v in os.environ.items() if k != "CXRLAB_WORKERS"}
    env |= {"CXRLAB_WORKERS": workers} if workers else {}
    start = time.perf_counter()
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    idle = 0  # `dvc queue status` can show no worker for a moment while tasks run
    while any(s in (status := dvc(repo, "queue", "status")) for s in ("Queued", "Running")):
        idle = idle + 1 if "0 active, 0 idle" in status else 0
        if idle >= 30 and time.perf_counter() - start > 60:  # a minute with no worker
            sys.exit(f"the queue's workers stopped before its tasks:\n{status}")
        time.sleep(2)
    seconds = time.perf_counter() - start
    status = _wait_until_no_worker(repo)
    done = [n for n in experiments if any(n in line and "Success" in line
                                          for line in status.splitlines())]  # fmt: skip
    if len(done) != len(experiments):
        sys.exit(f"a queued experiment failed:\n{status}")
    return seconds


@contextmanager
def scratch_clone(root: Path, prefix: str, *fetch: str) -> Iterator[Path]:
    """A throwaway clone of ``root`` beside it, so that ``../shared`` resolves.

    The ``fetch_data@`` datasets named in ``fetch`` are reproduced and committed in it;
    the clone is removed afterwards.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
    repo = scratch / "repo"
    (scratch / "shared").symlink_to((root.parent / "shared").resolve())
    try:
        subprocess.run(["git", "clone", "-q", str(root), str(repo)], check=True)
        for name in fetch:
            dvc(repo, "repro", f"fetch_data@{name}")
        subprocess.run(["git", "commit", "-qam", "bench: data fetched", "--allow-empty"],
                       cwd=repo, check=True)  # fmt: skip
        yield repo
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
