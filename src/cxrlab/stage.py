"""The entry point every stage script calls: params' device, logging, one-line errors."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from cxrlab.core.errors import ConfigError, CxrlabError
from cxrlab.core.utils import peak_memory, setup_logging


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` on params.yaml's device; a CxrlabError becomes one line, exit 1.

    A profile that loads hub models first checks, offline, that the model cache has them
    (:func:`cxrlab.hub.check_offline`), and one with ``device: auto`` stops if there is no
    GPU: it would otherwise train the gpu-sized models on the CPU for hours.
    """
    from cxrlab.core.config import load_params
    from cxrlab.params import apply_profile

    setup_logging()
    try:
        params = apply_profile(load_params())
        device = str(params.get("device", "cpu"))
        if params.get("profile", "cpu") != "cpu":
            _check_profile_can_run(params, device)
        precision = str(params.get("precision", "fp32"))
        # cpu and fp32 are a fresh process's defaults: a stage without a model never
        # loads torch.
        if (device, precision) != ("cpu", "fp32") or "cxrlab.core.runtime" in sys.modules:
            from cxrlab.core.runtime import use_device, use_precision

            use_device(device)
            use_precision(precision)
        _log_threads()
        start = time.perf_counter()
        main()
        logging.getLogger("stage").info(
            "done in %.0f s; peak memory: %s", time.perf_counter() - start,
            ", ".join(f"{k} {v} GB" for k, v in peak_memory().items()),
        )  # fmt: skip
    except CxrlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def _log_threads() -> None:
    """Log the stage's thread budget once; hold torch to it if torch loaded before cxrlab."""
    from cxrlab.core.threads import WORKERS, cores, processes, share_cores

    budget = share_cores()
    if budget is not None and "torch" in sys.modules:
        import torch

        torch.set_num_threads(budget)
    shared_by = processes()
    logging.getLogger("stage").info(
        "threads: %s on %d cores%s", budget or "torch's default", cores(),
        f", shared by {shared_by} processes ({WORKERS} x LOCAL_WORLD_SIZE; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')})" if shared_by > 1 else "",
    )  # fmt: skip


def _check_profile_can_run(params: dict, device: str) -> None:
    """A non-cpu profile: its hub models are cached (offline) and ``auto`` finds a GPU."""
    from cxrlab.hub import check_offline

    check_offline(params)
    if device == "auto":
        import torch

        if not torch.cuda.is_available():
            name = params["profile"]
            raise ConfigError(
                f"profile '{name}' wants a GPU (device: auto) and this machine has none; "
                f"to run it on the CPU anyway (hours), set -S profiles.{name}.device=cpu."
            )
