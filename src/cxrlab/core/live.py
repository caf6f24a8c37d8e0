"""dvclive plumbing: every stage writes its metrics through here, as dvclive folders.

A stage's metrics are ``<folder>/metrics.json`` (dvclive's summary), so ``dvc metrics``,
``dvc exp show`` and the report read one layout everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from dvclive import Live

from cxrlab.core.utils import peak_memory


class _Silent:
    """Stands in for dvclive's Live in processes that do not write (multi-process runs)."""

    def __init__(self) -> None:
        self.summary: dict = {}  # filled and dropped

    def log_metric(self, *args, **kwargs) -> None:
        """Log nothing."""


@contextlib.contextmanager
def epoch_logger(directory: str) -> Iterator[tuple[Live, Callable[[dict], None]]]:
    """Open a dvclive run in ``directory`` and yield it with a per-epoch row logger.

    The logger writes each key of an epoch row (``train_loss`` becomes
    ``train/loss``, ``val_dice`` becomes ``val/dice``) and advances the step.
    In a process other than the main one (``accelerate launch``) nothing is written.
    """
    from cxrlab.core.runtime import is_main_process  # torch: only stages that train

    if not is_main_process():
        yield _Silent(), lambda row: None
        return
    with Live(dir=directory, dvcyaml=False, save_dvc_exp=False) as live:

        def log_epoch(row: dict) -> None:
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key.replace("_", "/", 1), value)
            live.next_step()

        yield live, log_epoch
        live.summary.update(peak_memory())  # what the run cost, beside what it scored


def write_metrics(directory: str, metrics: dict[str, Any]) -> None:
    """Write a stage's final ``metrics`` (nested mappings of numbers) as a dvclive summary.

    ``<directory>/metrics.json`` then holds ``metrics`` as given, nesting included.
    """
    with Live(dir=directory, dvcyaml=False, save_dvc_exp=False) as live:
        live.summary.update(metrics)


def record_pretrained(directory: str, figure: str, source: str) -> None:
    """Mark a training stage that uses the pretrained ``source`` instead of training.

    Writes the stage's metrics (``trained_here: 0``) and a figure saying so, so that
    the outputs ``dvc.yaml`` declares exist either way.
    """
    from cxrlab.core.figures import save_note

    write_metrics(directory, {"trained_here": 0})
    save_note(f"not trained here: the pretrained {source}", figure)
