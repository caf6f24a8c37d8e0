"""Small shared helpers: logging, seeding, atomic writes, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("cxrlab")


def setup_logging(level: int = logging.INFO) -> None:
    """Log one line per phase to stderr, with a timestamp and the logger's name."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


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


def resumable_map(
    keys: list[str],
    fn: Callable[[list[str]], list[Any]],
    path: str | Path,
    run_id: str,
    batch_size: int,
    desc: str = "batches",
) -> dict[str, Any]:
    """Apply ``fn`` to ``keys`` batch by batch, appending results to a JSON-lines file.

    Each finished batch is flushed to ``path`` (one ``{"key", "value"}`` line per
    key, after a header line holding ``run_id``), so a run that is killed resumes
    with the keys still missing: no key is computed twice and none is skipped. A
    torn last line is dropped; a file written for another ``run_id`` is started over.

    Returns:
        ``{key: value}`` for every key, in the order of ``keys``.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"run_id": run_id})
    done: dict[str, Any] = {}
    lines = path.read_text().split("\n") if path.is_file() else []
    if lines and lines[0] == header:
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            done[row["key"]] = row["value"]
        log.info("%s: resuming, %d of %d already done", path, len(done), len(keys))
    good = [header] + [json.dumps({"key": k, "value": v}) for k, v in done.items()]
    path.write_text("\n".join(good) + "\n")
    todo = [k for k in keys if k not in done]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    with path.open("a") as f:
        for batch in tqdm(batches, desc=desc):
            values = fn(batch)
            for key, value in zip(batch, values, strict=True):
                f.write(json.dumps({"key": key, "value": value}) + "\n")
                done[key] = value
            f.flush()
            os.fsync(f.fileno())
    return {k: done[k] for k in keys}


def peak_memory() -> dict[str, float]:
    """This process's peak host RSS so far and, if it used a GPU, its peak allocated VRAM (GB).

    Each stage logs it at its end (:func:`cxrlab.stage.run_stage`); the training stages
    keep it in their metrics.
    """
    peak = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return peak
