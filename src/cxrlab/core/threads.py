"""Each process's share of the cores, when several train at once.

torch and OpenMP size their thread pools as if the process owned every core, and OpenMP's
idle threads spin for a while before they sleep. Two training processes on two cores
(``dvc queue start -j 2``, ``accelerate launch --num_processes 2``) then fight over the
cores: a small conv-net step took 127 ms each instead of 22 ms alone (issue 18).

Say how many processes share the machine, and every cxrlab process takes its share:

    CXRLAB_WORKERS=2 dvc queue start -j 2        # or: make queue JOBS=2

The share is the usable cores divided by ``CXRLAB_WORKERS`` times the processes that
accelerate (torchrun) starts on this machine (``LOCAL_WORLD_SIZE``), at least one thread.
It goes into ``OMP_NUM_THREADS`` with ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (the
``cxrlab`` package applies it on import), so children inherit both. An ``OMP_NUM_THREADS``
set by hand wins. A process alone changes nothing: torch keeps its own default.

This module must not import torch: OpenMP reads its settings when torch loads.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WORKERS = "CXRLAB_WORKERS"


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processes(env: MutableMapping[str, str] = os.environ) -> int:
    """How many processes share the cores: ``CXRLAB_WORKERS`` x ``LOCAL_WORLD_SIZE``."""
    counts = []
    for name in (WORKERS, "LOCAL_WORLD_SIZE"):
        value = env.get(name, "1").strip() or "1"
        if not value.isdigit() or int(value) < 1:
            # Not a ConfigError: this runs as the package loads, before cxrlab.core.errors.
            raise ValueError(f"{name} is '{value}'; expected a whole number of processes, ≥ 1.")
        counts.append(int(value))
    return counts[0] * counts[1]


def share_cores(
    env: MutableMapping[str, str] = os.environ, n_cores: int | None = None
) -> int | None:
    """Set this process's thread share in ``env``; the thread count, or None when alone.

    Sets ``OMP_NUM_THREADS`` (unless already set) and ``OMP_WAIT_POLICY=PASSIVE`` (unless
    set) when more than one process shares the cores; touches nothing for a lone process.
    """
    shared_by = processes(env)
    if shared_by == 1:
        return int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else None
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not env.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(max(1, (n_cores or cores()) // shared_by))
    return int(env["OMP_NUM_THREADS"])
