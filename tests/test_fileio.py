"""Memory maps for scattered reads (``lookalike.fileio``) give the arrays ``np.load`` gives."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.fileio import load_npy_for_random_reads, map_for_random_reads, reading_through


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint64).reshape(2, 6),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.zeros((0, 3), np.uint32),
        np.array([7], np.uint32),
    ],
)
def test_mapped_arrays_equal_loaded_ones(tmp_path, array):
    np.save(tmp_path / "a.npy", array)
    mapped = load_npy_for_random_reads(tmp_path / "a.npy")
    np.testing.assert_array_equal(mapped, np.load(tmp_path / "a.npy"))
    assert mapped.dtype == array.dtype and mapped.shape == array.shape
    if mapped.size:
        with pytest.raises(ValueError, match="read-only"):
            mapped.flat[0] = 1


def test_files_that_are_not_plain_arrays_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.int64))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-8])
    with pytest.raises(ValueError):
        load_npy_for_random_reads(tmp_path / "short.npy")
    (tmp_path / "text.npy").write_bytes(b"not an array at all")
    with pytest.raises(ValueError):
        load_npy_for_random_reads(tmp_path / "text.npy")
    np.save(tmp_path / "objects.npy", np.array(["a", None], object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        load_npy_for_random_reads(tmp_path / "objects.npy")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError):
        map_for_random_reads(tmp_path / "empty")


def test_a_sequential_read_leaves_the_map_readable(tmp_path):
    (tmp_path / "f").write_bytes(bytes(range(256)) * 64)
    mapped = map_for_random_reads(tmp_path / "f")
    with reading_through(mapped):
        assert mapped[:4] == b"\x00\x01\x02\x03"
    assert mapped[-1] == 255
