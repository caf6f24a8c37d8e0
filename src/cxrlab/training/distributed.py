"""Training under accelerate: one process, or several with DDP.

`dvc repro` runs a stage as one process, and everything here is then a no-op: the
results are the same as without accelerate. Launched as several processes, e.g.

    accelerate launch --multi_gpu --num_processes 2 stages/train_classifier.py

(on a machine without a GPU the processes talk over gloo), each process trains on its
share of every batch and DDP averages the gradients, so one optimiser step still sees the
whole batch. Only the main process writes files.

So far the classifier trainer runs under accelerate, on CPU processes; the other trainers
and GPU device placement are still to do.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


@functools.cache
def accelerator():
    """The process's :class:`accelerate.Accelerator` (CPU; one per process)."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    if acc.num_processes > 1:
        log.info(
            "process %d of %d (%s)", acc.process_index + 1, acc.num_processes, acc.distributed_type
        )
    return acc


def is_main_process() -> bool:
    """Whether this process writes outputs (always true for a single process)."""
    return accelerator().is_main_process


def shard(n: int) -> slice:
    """This process's rows of a batch of ``n``: every ``num_processes``-th from its rank."""
    acc = accelerator()
    return slice(acc.process_index, n, acc.num_processes)


def mean_over_processes(value: float, weight: float) -> float:
    """The ``weight``-weighted mean of a per-process number over all processes."""
    acc = accelerator()
    if acc.num_processes == 1:
        return value
    totals = acc.reduce(torch.tensor([value * weight, weight], dtype=torch.float64), "sum")
    return float(totals[0] / totals[1])
