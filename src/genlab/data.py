"""Reading, finding, verifying and loading the IDX datasets genlab trains on.

The data flows one way: a dataset name and split are resolved to files
(:func:`find_split` / :func:`download_file`), the files are checked against the
official checksums (:func:`check_file`), decoded by a strict IDX reader
(:func:`read_idx`) and returned as in-memory uint8 tensors (:class:`Dataset`).

Everything a user can get wrong here (a missing, truncated, corrupt or
unofficial file) raises :class:`~genlab.errors.DataError` with one message that
names the file, says what is wrong and what to do about it.

IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, an element type
byte, a dimension count byte, one big-endian uint32 per dimension, then the
elements in C order, big-endian.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from genlab.errors import DataError

__all__ = [
    "DATASETS",
    "DERIVED_SPLITS",
    "MAX_IDX_BYTES",
    "SYSTEM_DATA_DIR",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "VALIDATION_IMAGES",
    "Verdict",
    "cache_dir",
    "check_file",
    "dataset_status",
    "download_file",
    "find_file",
    "find_split",
    "format_status_table",
    "load_dataset",
    "read_idx",
    "search_dirs",
    "split_names",
    "system_data_dir",
]

# Larger than any IDX file genlab knows (Fashion-MNIST train images: 47 MB raw),
# small enough that a lying header can never make us reserve absurd memory.
MAX_IDX_BYTES = 2 * 1024**3
# The biggest official .gz is 26 MB; a server sending more is not serving it.
_MAX_DOWNLOAD_BYTES = 128 * 1024**2
_DOWNLOAD_TIMEOUT_S = 20.0
# Reading in chunks means memory follows the bytes actually present, not the
# size a (possibly corrupt) header claims.
_CHUNK = 1024**2

# Debian's dataset packages install under /usr/share/datasets/<name>; the
# environment variable lets tests and unusual installs point elsewhere.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
_ENV_DATA_DIR = "GENLAB_DATA_DIR"
_ENV_SYSTEM_DIR = "GENLAB_SYSTEM_DATA_DIR"

_GZIP_MAGIC = b"\x1f\x8b"
# IDX element types; multi-byte types are big-endian on disk.
_IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGE_SHAPE = (28, 28)


# --------------------------------------------------------------------------- #
# IDX reading
# --------------------------------------------------------------------------- #


@contextmanager
def _content_stream(path: Path) -> Iterator[BinaryIO]:
    """Yield a stream of the file's IDX bytes, gunzipping on the fly when needed.

    Compression is detected by the gzip magic bytes, not by the name, because
    users rename files and Debian ships re-gzipped copies. Low-level read and
    decompression errors raised inside the ``with`` body are turned into one
    DataError naming the file, so callers never see ``zlib.error`` or ``EOFError``.
    """
    is_gzip = False
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if is_gzip:
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    yield unzipped  # type: ignore[misc]
            else:
                yield raw
    except (OSError, EOFError, zlib.error) as exc:
        if is_gzip:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({exc}); the file is damaged: "
                "delete it and download or copy it again"
            ) from exc
        raise DataError(f"{path}: cannot read the file ({exc})") from exc


def _read_exactly(stream: BinaryIO, n: int, path: Path, what: str) -> bytes:
    """Read ``n`` header bytes or explain that the file stops short (``what``: "header needs")."""
    data = stream.read(n)
    if len(data) != n:
        raise DataError(
            f"{path}: truncated: the IDX {what} {n} bytes, the file has {len(data)}; "
            "the file is damaged or not an IDX file"
        )
    return data


def _decode_magic(magic: bytes, path: Path) -> tuple[np.dtype, int]:
    """Return (element dtype, number of dimensions) from the 4-byte IDX magic."""
    if magic[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file: it starts with bytes {magic[:2].hex()}, IDX files start with 0000")
    type_byte, ndim = magic[2], magic[3]
    if type_byte not in _IDX_DTYPES:
        valid = ", ".join(f"0x{t:02X} ({d.name})" for t, d in _IDX_DTYPES.items())
        raise DataError(f"{path}: unknown IDX element type 0x{type_byte:02X}; valid types are {valid}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header gives {ndim} dimensions; genlab reads 1 to 4")
    return _IDX_DTYPES[type_byte], ndim


def _decode_dims(raw_dims: bytes, path: Path) -> tuple[int, ...]:
    """Return the shape stored as big-endian uint32s; every dimension must be > 0."""
    shape = tuple(int.from_bytes(raw_dims[i : i + 4], "big") for i in range(0, len(raw_dims), 4))
    if 0 in shape:
        raise DataError(
            f"{path}: IDX header gives shape {shape} with a zero dimension; the file is damaged or holds no data"
        )
    return shape


def _read_at_most(stream: BinaryIO, limit: int) -> bytearray:
    """Read until end of stream or ``limit`` bytes, whichever comes first.

    Growing a buffer chunk by chunk (rather than ``read(limit)``, which
    preallocates) keeps memory proportional to what the file really holds; the
    limit stops a gzip bomb from inflating past what the header promised.
    """
    buf = bytearray()
    while len(buf) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Decode an IDX file (raw or gzipped) into an array of the header's shape.

    Strict on purpose: a file whose data is shorter or longer than its header
    says is reported, never padded or cut, because silently mis-shaped training
    data is far costlier than an error. The claimed size is checked against
    ``max_bytes`` before any data is read, and the data is read with a cap of
    claimed + 1 bytes, so neither a lying header nor a gzip bomb can make this
    allocate more than the claimed size. Multi-byte types are converted from
    big-endian to native order.
    """
    path = Path(path)
    with _content_stream(path) as stream:
        dtype, ndim = _decode_magic(_read_exactly(stream, 4, path, "header needs"), path)
        shape = _decode_dims(_read_exactly(stream, 4 * ndim, path, "dimensions need"), path)
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > max_bytes:
            raise DataError(
                f"{path}: IDX header claims shape {shape}, i.e. {claimed} bytes of data, "
                f"more than the {max_bytes}-byte limit; the header is corrupt"
            )
        data = _read_at_most(stream, claimed + 1)
    if len(data) < claimed:
        raise DataError(
            f"{path}: truncated: header says {claimed} bytes of data, file has {len(data)}; "
            "the file is damaged: download or copy it again"
        )
    if len(data) > claimed:
        raise DataError(
            f"{path}: trailing bytes: header says {claimed} bytes of data, file has more; "
            "the file is damaged or not an IDX file"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    # torch refuses to share read-only memory; a copy here costs less than a warning per load.
    return array if array.flags.writeable else array.copy()


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class FileSpec:
    """One official file: its name and the checksums that identify its content.

    ``md5_gz`` is the md5 of the official ``.gz``. ``sha256_raw`` is the sha256
    of the decompressed IDX bytes, which survives re-compression (Debian
    re-gzipped Fashion-MNIST); None where it is not known.
    """

    filename: str
    md5_gz: str
    sha256_raw: str | None = None

    @property
    def raw_filename(self) -> str:
        return self.filename.removesuffix(".gz")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset genlab can load: its files per split, classes and mirrors."""

    name: str
    class_names: tuple[str, ...]
    splits: Mapping[str, Mapping[str, FileSpec]]  # split -> role -> file
    mirrors: tuple[str, ...]
    install_hint: str = ""


DATASETS: Mapping[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        splits={
            "train": {
                # No official content hash known: a re-gzipped copy is "unverified".
                "images": FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                "labels": FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            },
            "test": {
                "images": FileSpec(
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                "labels": FileSpec(
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            },
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
        splits={
            "train": {
                "images": FileSpec(
                    "train-images-idx3-ubyte.gz",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                "labels": FileSpec(
                    "train-labels-idx1-ubyte.gz",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
            },
            "test": {
                "images": FileSpec(
                    "t10k-images-idx3-ubyte.gz",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                "labels": FileSpec(
                    "t10k-labels-idx1-ubyte.gz",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            },
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        install_hint="apt-get install dataset-fashion-mnist",
    ),
}


# Splits carved from the official training split, the same on every machine: "val" is its last
# VALIDATION_IMAGES images and "fit" the rest. Models are tuned by training on "fit" and scoring on
# "val", so the official test split stays unseen until a figure is reported once. The official
# training files are already in random order (each class makes up 10 % of the last 5,000 within
# about 1 point), so a contiguous tail is a fair sample and needs no permutation to reproduce.
VALIDATION_IMAGES = 5000
DERIVED_SPLITS: Mapping[str, tuple[str, slice]] = {
    "fit": ("train", slice(0, -VALIDATION_IMAGES)),
    "val": ("train", slice(-VALIDATION_IMAGES, None)),
}


def split_names(name: str | None = None) -> tuple[str, ...]:
    """The splits :func:`load_dataset` accepts: the official ones (of ``name``, or of any dataset) and the derived."""
    official = _spec(name).splits if name else {s: None for spec in DATASETS.values() for s in spec.splits}
    return (*official, *DERIVED_SPLITS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def _split_files(spec: DatasetSpec, split: str) -> Mapping[str, FileSpec]:
    if split not in spec.splits:
        raise DataError(f"unknown split {split!r} for {spec.name}; valid splits: {', '.join(split_names(spec.name))}")
    return spec.splits[split]


# --------------------------------------------------------------------------- #
# Finding files
# --------------------------------------------------------------------------- #


def system_data_dir() -> Path:
    """Root of system-wide datasets (Debian: /usr/share/datasets), overridable by env."""
    override = os.environ.get(_ENV_SYSTEM_DIR)
    return Path(override) if override else SYSTEM_DATA_DIR


def cache_dir(name: str) -> Path:
    """Per-user download cache for one dataset, following the XDG base-dir spec.

    A relative ``XDG_CACHE_HOME`` is ignored, as the spec requires.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "genlab" / "datasets" / name


def search_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for a dataset's files, in priority order.

    The explicit ``data_dir`` wins over ``$GENLAB_DATA_DIR``; either may hold
    the files directly or in a ``<name>/`` subfolder, so one folder can serve
    several datasets. Then the user cache, then the system directory.
    """
    user_root = data_dir if data_dir is not None else os.environ.get(_ENV_DATA_DIR) or None
    # Absolute from the current directory now: messages then say exactly where genlab looked.
    root = Path(os.path.abspath(os.path.expanduser(user_root))) if user_root is not None else None
    dirs = [root, root / name] if root is not None else []
    return [*dirs, cache_dir(name), system_data_dir() / name]


def find_file(spec: FileSpec, dirs: Sequence[Path]) -> Path | None:
    """First copy of the file, gzipped or raw, in ``dirs`` order, that is not a checksum mismatch.

    MNIST and Fashion-MNIST use the same file names, so a ``--data-dir`` holding
    one dataset's files also "holds" the other's: a copy whose checksum proves it
    is another file is passed over for a later one. When every copy mismatches,
    the first is returned, so that loading reports the mismatch.
    """
    candidates = [
        directory / filename
        for directory in dirs
        for filename in (spec.filename, spec.raw_filename)
        if (directory / filename).is_file()
    ]
    if len(candidates) > 1:
        for candidate in candidates:
            if _safe_status(candidate, spec) != "mismatch":
                return candidate
    return candidates[0] if candidates else None


def _safe_status(path: Path, spec: FileSpec) -> str:
    try:
        return check_file(path, spec).status
    except DataError:
        return "mismatch"


def find_split(name: str, split: str, dirs: Sequence[Path]) -> dict[str, Path | None]:
    """Role -> path (or None) for every file of one split, without downloading."""
    return {role: find_file(fs, dirs) for role, fs in _split_files(_spec(name), split).items()}


# --------------------------------------------------------------------------- #
# Checksums
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one file: "ok", "mismatch" or "unverified".

    ``expected`` and ``got`` describe the checksums compared, for messages.
    """

    status: str
    expected: str = ""
    got: str = ""


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    try:
        if os.stat(path).st_size > MAX_IDX_BYTES:  # no official file is this large: refuse unread
            raise DataError(f"{path}: {os.stat(path).st_size:,} bytes, larger than any official dataset file")
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from exc
    return digest.hexdigest()


def _sha256_of_content(path: Path) -> str:
    """sha256 of the decompressed IDX bytes (capped, so a gzip bomb ends early)."""
    digest = hashlib.sha256()
    seen = 0
    with _content_stream(path) as stream:
        while seen <= MAX_IDX_BYTES and (chunk := stream.read(_CHUNK)):
            digest.update(chunk)
            seen += len(chunk)
    return digest.hexdigest()


def check_file(path: Path, spec: FileSpec) -> Verdict:
    """Compare a file with the official checksums.

    A file is "ok" if its gz md5 matches or its decompressed sha256 matches.
    A known sha256 that does not match (or content that does not even
    decompress) is a "mismatch". A .gz with another md5 and no known sha256 is
    "unverified", not a mismatch: it may be an honest re-compression.
    """
    with _content_stream(path) as stream:
        is_gzip = isinstance(stream, gzip.GzipFile)
    got_md5 = _md5_of_file(path) if is_gzip else ""
    if is_gzip and got_md5 == spec.md5_gz:
        return Verdict("ok")
    if spec.sha256_raw is None:
        return Verdict("unverified", f"md5 {spec.md5_gz} of the .gz", f"md5 {got_md5}")
    expected = f"md5 {spec.md5_gz} of the .gz or sha256 {spec.sha256_raw} of its IDX content"
    try:
        got_sha = _sha256_of_content(path)
    except DataError:
        return Verdict("mismatch", expected, f"md5 {got_md5}, content unreadable")
    if got_sha == spec.sha256_raw:
        return Verdict("ok")
    got = f"md5 {got_md5}, sha256 {got_sha}" if is_gzip else f"sha256 {got_sha}"
    return Verdict("mismatch", expected, got)


# --------------------------------------------------------------------------- #
# Download
# --------------------------------------------------------------------------- #


def _fetch_to(url: str, out: BinaryIO) -> str:
    """Stream ``url`` into ``out`` and return the md5 of what was written."""
    digest = hashlib.md5()
    total = 0
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        while chunk := response.read(_CHUNK):
            total += len(chunk)
            if total > _MAX_DOWNLOAD_BYTES:
                raise ValueError(f"response larger than {_MAX_DOWNLOAD_BYTES} bytes")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _download_one(url: str, spec: FileSpec, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically: temp file, md5 check, ``os.replace``.

    The temp file lives in the destination folder so the rename cannot cross
    file systems; it is removed on any failure, so a half-written or wrong file
    is never left where the next lookup would find it.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch_to(url, out)
        if got != spec.md5_gz:
            raise ValueError(f"checksum mismatch: expected md5 {spec.md5_gz}, got {got}")
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def download_file(name: str, spec: FileSpec, dest_dir: Path | None = None) -> Path:
    """Fetch one official file into ``dest_dir`` (default: the user cache).

    Mirrors are tried in order; the first verified copy wins. Raises DataError
    listing every URL tried and why it failed.
    """
    dataset = _spec(name)
    dest_dir = cache_dir(name) if dest_dir is None else dest_dir
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest_dir}: cannot create the download folder ({exc})") from exc
    dest = dest_dir / spec.filename
    failures = []
    for mirror in dataset.mirrors:
        url = mirror + spec.filename
        try:
            _download_one(url, spec, dest)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures.append((url, str(exc)))
            continue
        return dest
    reasons = {why for _, why in failures}
    if len(reasons) == 1:  # one cause (no network, most often): said once, then the URLs tried
        raise DataError(
            f"download of {name} {spec.filename} failed ({reasons.pop()}); tried:", hint=[u for u, _ in failures]
        )
    raise DataError(f"download of {name} {spec.filename} failed:", hint=[f"{u}: {why}" for u, why in failures])


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset, in memory.

    ``eq=False`` because element-wise tensor comparison has no single truth
    value; two Dataset objects are equal only if they are the same object.
    """

    name: str
    split: str
    images: torch.Tensor  # (N, 1, 28, 28) uint8, contiguous
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    class_names: tuple[str, ...]
    sources: dict[str, str]  # role -> path the file was read from
    verified: dict[str, str]  # role -> "ok" | "unverified" | "skipped"

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _not_found_message(
    spec: DatasetSpec,
    split: str,
    missing: Sequence[str],
    dirs: Sequence[Path],
    download_problems: Sequence[DataError],
    download: bool,
) -> tuple[str, list[str]]:
    """What is missing (one line), then a few short lines: where genlab looked and how to fix it."""
    files = _split_files(spec, split)
    missing_names = ", ".join(files[role].filename for role in missing)
    msg = f"{spec.name} {split} split not found: no {missing_names} (or unzipped)"
    hint = ["looked in:", *(f"  {d}{'' if d.is_dir() else ' (no such folder)'}" for d in dirs)]
    for problem in download_problems:
        hint += [problem.message, *(f"  {line}" for line in problem.hint)]
    if not download_problems and not download:
        hint.append("download is disabled")
    for other in (s for s in spec.splits if s != split):
        other_paths = find_split(spec.name, other, dirs)
        if None not in other_paths.values():
            where = ", ".join(sorted({str(p.parent) for p in other_paths.values() if p}))
            hint.append(f"the {other} split is available at {where}: use --split {other}")
    fix = f"to fix: pass --data-dir DIR or set {_ENV_DATA_DIR}=DIR (a folder holding the files)"
    hint.append(fix + (f", or run `{spec.install_hint}`" if spec.install_hint else ""))
    hint.append("`genlab datasets` shows where each dataset's files were found")
    return msg, hint


def _locate(spec: DatasetSpec, split: str, data_dir: str | os.PathLike[str] | None, download: bool) -> dict[str, Path]:
    """Role -> path for every file of the split, downloading what is missing if allowed."""
    dirs = search_dirs(spec.name, data_dir)
    found = find_split(spec.name, split, dirs)
    problems: list[DataError] = []
    if download:
        for role, path in found.items():
            if path is None:
                try:
                    found[role] = download_file(spec.name, spec.splits[split][role])
                except DataError as exc:
                    problems.append(exc)
    missing = [role for role, path in found.items() if path is None]
    if missing:
        msg, hint = _not_found_message(spec, split, missing, dirs, problems, download)
        raise DataError(msg, hint=hint)
    return {role: path for role, path in found.items() if path is not None}


def _verify(path: Path, spec: FileSpec, label: str) -> str:
    """Checksum status of one file; a mismatch is an error, not a status."""
    verdict = check_file(path, spec)
    if verdict.status == "mismatch":
        raise DataError(
            f"{path}: checksum mismatch for {label}: expected {verdict.expected}, got "
            f"{verdict.got}; the file may be corrupt or not the official one: delete it and "
            "download or copy it again (or skip the check with verify=False)"
        )
    return verdict.status


def _as_tensors(
    images: np.ndarray, labels: np.ndarray, paths: Mapping[str, Path], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check decoded arrays agree with each other and turn them into tensors."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise DataError(
            f"{paths['images']}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}; this is not an official images file"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{paths['labels']}: expected uint8 labels of shape (N,), "
            f"got {labels.dtype} {labels.shape}; this is not an official labels file"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{paths['images']} holds {len(images)} images but {paths['labels']} holds "
            f"{len(labels)} labels; the two files belong to different splits or datasets"
        )
    if int(labels.max()) >= num_classes:
        raise DataError(
            f"{paths['labels']}: label {int(labels.max())} is out of range 0..{num_classes - 1}; "
            "the file is damaged or belongs to another dataset"
        )
    image_t = torch.from_numpy(images).unsqueeze(1).contiguous()  # (N, 1, 28, 28)
    label_t = torch.from_numpy(labels.astype(np.int64))  # (N,)
    return image_t, label_t


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify: bool = True,
    image_size: int | None = None,
    skip_bad_images: bool = False,
) -> Dataset:
    """Find, verify and decode one split of a dataset into memory.

    ``name`` may be ``folder:PATH``, a folder of PNG/JPEG images (:mod:`genlab.folders`, where
    ``image_size`` and ``skip_bad_images`` apply): "train" is its images but the held-out ones,
    "test" those, both slices of a memory-mapped cache.

    ``split`` is an official split ("train", "test") or one carved from the training split
    (:data:`DERIVED_SPLITS`: "fit" = all but its last 5,000 images, "val" = those 5,000).
    Files are looked up in :func:`search_dirs` order and downloaded into the
    user cache only when absent and ``download`` is true. With ``verify`` a
    checksum mismatch raises; ``verify=False`` skips hashing (for edited or
    self-made files) and records "skipped".
    """
    from .folders import is_folder_dataset

    if is_folder_dataset(name):
        return _load_folder(name, split, image_size=image_size, skip_bad_images=skip_bad_images)
    if image_size is not None or skip_bad_images:
        raise DataError(f"--image-size and --skip-bad-images apply to folder datasets (folder:PATH), not {name}")
    if split in DERIVED_SPLITS:
        parent, rows = DERIVED_SPLITS[split]
        whole = load_dataset(name, parent, data_dir=data_dir, download=download, verify=verify)
        return dataclasses.replace(
            whole, split=split, images=whole.images[rows].contiguous(), labels=whole.labels[rows].contiguous()
        )
    spec = _spec(name)
    files = _split_files(spec, split)
    paths = _locate(spec, split, data_dir, download)
    verified = {
        role: _verify(path, files[role], f"{name} {split} {role}") if verify else "skipped"
        for role, path in paths.items()
    }
    images, labels = _as_tensors(read_idx(paths["images"]), read_idx(paths["labels"]), paths, len(spec.class_names))
    return Dataset(
        name=name,
        split=split,
        images=images,
        labels=labels,
        num_classes=len(spec.class_names),
        class_names=spec.class_names,
        sources={role: str(path) for role, path in paths.items()},
        verified=verified,
    )


def _load_folder(name: str, split: str, *, image_size: int | None, skip_bad_images: bool) -> Dataset:
    from .folders import HELDOUT_PERCENT, folder_root, load_folder

    if split not in ("train", "test"):
        raise DataError(f"a folder dataset has the splits train and test (its held-out files), not {split!r}")
    root = folder_root(name)
    whole = load_folder(root, image_size=image_size, skip_bad_images=skip_bad_images)
    rows = slice(0, whole.n_train) if split == "train" else slice(whole.n_train, None)
    images = torch.from_numpy(whole.images[rows])  # (N, C, H, W) uint8, still the memory map
    if images.shape[0] == 0:
        raise DataError(
            f"{root}: the {split} split is empty: {HELDOUT_PERCENT} % of the files (chosen by a hash of "
            f"their paths) are held out for test, and {len(whole.files)} image(s) gave none to {split}",
            hint=["add more images (a few dozen give both splits some)"],
        )
    return Dataset(
        name=name,
        split=split,
        images=images,
        labels=torch.from_numpy(whole.labels[rows].copy()),
        num_classes=max(len(whole.class_names), 1),
        class_names=whole.class_names or (root.name,),
        sources={"images": str(root), "cache": str(whole.cache)},
        verified={"images": "skipped"},
    )


# --------------------------------------------------------------------------- #
# Status
# --------------------------------------------------------------------------- #


def dataset_status(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str | None]]:
    """One row per dataset, split and file: where it was found and its checksum status.

    Status is "ok", "mismatch", "unverified" or "missing". Never downloads.
    """
    rows: list[dict[str, str | None]] = []
    for name, spec in DATASETS.items():
        dirs = search_dirs(name, data_dir)
        for split, files in spec.splits.items():
            for role, file_spec in files.items():
                path = find_file(file_spec, dirs)
                status = "missing" if path is None else check_file(path, file_spec).status
                rows.append(
                    {
                        "dataset": name,
                        "split": split,
                        "role": role,
                        "status": status,
                        "path": None if path is None else str(path),
                    }
                )
    return rows


_STATUS_COLUMNS = ("dataset", "split", "role", "status", "path")


def format_status_table(rows: Sequence[Mapping[str, str | None]]) -> str:
    """Plain left-aligned text table of :func:`dataset_status` rows ("-" for None)."""
    cells = [list(_STATUS_COLUMNS)]
    cells += [["-" if row.get(c) is None else str(row[c]) for c in _STATUS_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_STATUS_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)
