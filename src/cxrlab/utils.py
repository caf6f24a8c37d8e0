"""Small shared helpers: logging, seeding, atomic writes, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.errors import CxrlabError

log = logging.getLogger("cxrlab")


def setup_logging(level: int = logging.INFO) -> None:
    """Log one line per phase to stderr, with a timestamp and the logger's name."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`CxrlabError` becomes one line and exit 1."""
    setup_logging()
    try:
        main()
    except CxrlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch, and make torch deterministic where affordable.

    Also flushes denormals to zero: small randomly initialised nets ran several
    times slower on this project's reference CPU without it.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_flush_denormal(True)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and directories. If the body raises, the temporary path is
    removed and ``path`` is left as it was, so a killed or failed stage never
    leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_csv(path: str | Path, frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV (no index, 5 decimals), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.5f", **kwargs)
