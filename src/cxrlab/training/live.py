"""dvclive plumbing shared by the training stages."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from dvclive import Live


@contextlib.contextmanager
def epoch_logger(directory: str) -> Iterator[tuple[Live, Callable[[dict], None]]]:
    """Open a dvclive run in ``directory`` and yield it with a per-epoch row logger.

    The logger writes each key of an epoch row (``train_loss`` becomes
    ``train/loss``, ``val_dice`` becomes ``val/dice``) and advances the step.
    """
    with Live(dir=directory, dvcyaml=False, save_dvc_exp=False) as live:

        def log_epoch(row: dict) -> None:
            for key, value in row.items():
                if key != "epoch":
                    live.log_metric(key.replace("_", "/", 1), value)
            live.next_step()

        yield live, log_epoch
