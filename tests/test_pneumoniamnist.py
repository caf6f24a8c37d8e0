import numpy as np
import pytest

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.core.errors import DataError
from tests.conftest import write_npz


def test_loads_splits_with_flat_int_labels(tiny_npz):
    splits = load_pneumoniamnist(tiny_npz)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64, 24, 24]
    assert splits["train"].images.shape == (64, 28, 28)
    assert splits["train"].labels.dtype == np.int64 and splits["train"].labels.ndim == 1


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found: run the fetch_data stage"):
        load_pneumoniamnist(tmp_path / "absent.npz")


@pytest.mark.parametrize("keep", [0, 100, 1000])
def test_truncated_or_garbage_file(tiny_npz, keep):
    data = tiny_npz.read_bytes()
    tiny_npz.write_bytes(data[:keep] if keep else b"not a zip at all")
    with pytest.raises(DataError, match="not a readable npz file"):
        load_pneumoniamnist(tiny_npz)


def test_missing_keys_are_listed(tmp_path):
    path = write_npz(tmp_path / "x.npz", val_labels=None, test_images=None)
    with pytest.raises(DataError, match="lacks the keys val_labels, test_images"):
        load_pneumoniamnist(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"train_images": np.zeros((64, 28, 28, 3), np.uint8)},
            "'train_images' must be uint8 of shape",
        ),
        (
            {"train_images": np.zeros((64, 28, 28), np.float32)},
            "'train_images' must be uint8 of shape",
        ),
        ({"val_labels": np.zeros((23, 1), np.uint8)}, r"'val_labels' must have shape \(24, 1\)"),
        ({"test_labels": np.full((24, 1), 2, np.uint8)}, "must be 0 or 1, found \\[2\\]"),
        (
            {"val_images": np.zeros((0, 28, 28), np.uint8), "val_labels": np.zeros((0, 1))},
            "is empty",
        ),
    ],
)
def test_wrong_shapes_and_values(tmp_path, overrides, message):
    path = write_npz(tmp_path / "x.npz", **overrides)
    with pytest.raises(DataError, match=message):
        load_pneumoniamnist(path)
