"""Checkpoints for resuming, and safetensors weights for sharing.

Checkpoints are written atomically and read with ``weights_only=True``; model
weights meant for other people go out as safetensors plus a JSON config.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (configs, data checksums)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a training state (tensors, numbers, strings, dicts, lists)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """Load a training state if it exists and was made with the same config.

    Returns:
        The state, or None when there is no checkpoint, it belongs to another
        config, or it cannot be read (then training starts over, with a warning).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means start over
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return None
    if state.get("fingerprint") != expected_fingerprint:
        log.info("checkpoint %s is from another config; starting over", path)
        return None
    return state


def save_model(directory: str | Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``, atomically."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_model_files(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the weights and config that :func:`save_model` wrote.

    Raises:
        DataError: If either file is missing or unreadable.
    """
    directory = Path(directory)
    weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    for path in (weights, config):
        if not path.is_file():
            raise DataError(f"{path} not found: train the model first (dvc repro).")
    try:
        return load_file(str(weights)), json.loads(config.read_text())
    except Exception as exc:  # noqa: BLE001 - safetensors and json raise various types
        raise DataError(f"{directory} holds an unreadable model ({exc}).") from exc
