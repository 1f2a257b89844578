"""Tests for genlab.data: strict IDX reading, lookup, checksums, download and loading."""

from __future__ import annotations

import gzip
import io
import tempfile
import tracemalloc
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genlab import data
from genlab.errors import DataError

_TYPE_BYTES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env: Path) -> Path:
    """No test here may see the real cache, the real system dir or the network."""
    return isolated_data_env


# --------------------------------------------------------------------------- #
# helpers: an independent IDX writer
# --------------------------------------------------------------------------- #


def idx_header(type_byte: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_byte, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of ``array``: header, then big-endian elements in C order."""
    kind = array.dtype.kind + str(array.dtype.itemsize)
    big = array.astype(array.dtype.newbyteorder(">"))
    return idx_header(_TYPE_BYTES[kind], array.shape) + big.tobytes()


def write_file(path: Path, payload: bytes, *, compress: bool) -> Path:
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    return path


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, str] = MNIST_TRAIN) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / names[0], idx_bytes(images), compress=True)
    write_file(folder / names[1], idx_bytes(labels), compress=True)


def fake_images(n: int) -> np.ndarray:
    return np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)


def fake_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- #
# real data
# --------------------------------------------------------------------------- #


def test_load_mnist_test_split_from_shared_files(mnist_dir: Path) -> None:
    ds = data.load_dataset("mnist", "test", data_dir=mnist_dir, download=False)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert ds.labels.shape == (10000,) and ds.labels.dtype == torch.int64
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.numel() == 10 and int(counts.sum()) == 10000 and bool((counts > 0).all())
    assert int(ds.images.max()) == 255  # pixels are raw bytes, not rescaled
    assert ds.verified == {"images": "ok", "labels": "ok"}
    assert ds.sources["images"] == str(mnist_dir / MNIST_TEST[0])
    assert ds.class_names == tuple("0123456789") and ds.num_classes == 10 and len(ds) == 10000


def test_load_fashion_test_split_verifies_debian_regzipped_files(fashion_dir: Path) -> None:
    ds = data.load_dataset("fashion-mnist", "test", data_dir=fashion_dir, download=False)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10  # Fashion-MNIST test is balanced
    assert ds.verified == {"images": "ok", "labels": "ok"}
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_system_dir_is_searched(isolated_data_env: Path, mnist_dir: Path) -> None:
    (isolated_data_env / "system" / "mnist").symlink_to(mnist_dir)
    ds = data.load_dataset("mnist", "test", download=False)
    assert ds.sources["labels"] == str(isolated_data_env / "system" / "mnist" / MNIST_TEST[1])


def test_default_system_dir_is_debian_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENLAB_SYSTEM_DATA_DIR")
    assert data.system_data_dir() == Path("/usr/share/datasets")


# --------------------------------------------------------------------------- #
# lookup order
# --------------------------------------------------------------------------- #


def test_search_dirs_explicit_data_dir_wins_over_env(
    isolated_data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENLAB_DATA_DIR", str(tmp_path / "from-env"))
    dirs = data.search_dirs("mnist", tmp_path / "explicit")
    assert dirs == [
        tmp_path / "explicit",
        tmp_path / "explicit" / "mnist",
        isolated_data_env / "cache" / "genlab" / "datasets" / "mnist",
        isolated_data_env / "system" / "mnist",
    ]
    assert data.search_dirs("mnist")[:2] == [tmp_path / "from-env", tmp_path / "from-env" / "mnist"]


def test_cache_dir_ignores_relative_xdg(isolated_data_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    expected = isolated_data_env / "home" / ".cache" / "genlab" / "datasets" / "fashion-mnist"
    assert data.cache_dir("fashion-mnist") == expected


@pytest.mark.parametrize("layout", ["direct", "subfolder"])
def test_env_data_dir_accepts_both_layouts(
    layout: str, tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    target = root if layout == "direct" else root / "mnist"
    target.mkdir(exist_ok=True)
    for name in MNIST_TEST:
        (target / name).symlink_to(mnist_dir / name)
    monkeypatch.setenv("GENLAB_DATA_DIR", str(root))
    ds = data.load_dataset("mnist", "test", download=False)
    assert ds.sources["images"] == str(target / MNIST_TEST[0])


def test_raw_unzipped_files_are_found_and_verified(tmp_path: Path, mnist_dir: Path) -> None:
    for name in MNIST_TEST:
        content = gzip.decompress((mnist_dir / name).read_bytes())
        (tmp_path / name.removesuffix(".gz")).write_bytes(content)
    ds = data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert ds.sources["images"] == str(tmp_path / "t10k-images-idx3-ubyte")
    assert ds.verified == {"images": "ok", "labels": "ok"}  # via the sha256 of the content


# --------------------------------------------------------------------------- #
# strict IDX reader
# --------------------------------------------------------------------------- #

_VALID = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (_VALID[:-5], "truncated: header says 24 bytes of data, file has 19"),
        (_VALID + b"\x00", "trailing bytes: header says 24 bytes of data"),
        (b"\x01" + _VALID[1:], "not an IDX file"),
        (_VALID[:2] + b"\x07" + _VALID[3:], "unknown IDX element type 0x07"),
        (idx_header(0x08, (2, 0, 4)), "zero dimension"),
        (idx_header(0x08, ()), "0 dimensions"),
        (idx_header(0x08, (1, 1, 1, 1, 1)) + b"\x00", "5 dimensions"),
        (idx_header(0x08, (4_000_000_000, 4_000_000_000)) + b"\x00" * 10, "more than the"),
        (_VALID[:6], "truncated: the IDX dimensions need 12 bytes, the file has 2"),
        (b"", "truncated: the IDX header needs 4 bytes, the file has 0"),
    ],
    ids=[
        "truncated",
        "trailing",
        "magic",
        "type",
        "zero-dim",
        "0-dims",
        "5-dims",
        "absurd",
        "short-dims",
        "empty",
    ],  # fmt: skip
)
def test_read_idx_rejects_malformed(tmp_path: Path, payload: bytes, fragment: str, compress: bool) -> None:
    path = write_file(tmp_path / "bad-file", payload, compress=compress)
    with pytest.raises(DataError, match="bad-file") as info:
        data.read_idx(path)
    assert fragment in str(info.value)


def test_read_idx_lying_header_does_not_allocate_claimed_size(tmp_path: Path) -> None:
    """A header claiming 1.5 GiB (under the cap) over 100 bytes must not reserve 1.5 GiB."""
    payload = idx_header(0x08, (1536, 1024, 1024)) + b"\x01" * 100
    paths = [write_file(tmp_path / f"lie{c}", payload, compress=c) for c in (False, True)]
    for path in paths:
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="truncated: header says 1610612736 bytes"):
                data.read_idx(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 1024**2


def test_read_idx_gzip_bomb_stops_at_claimed_size(tmp_path: Path) -> None:
    """A 16-byte header followed by 256 MiB of zeros is cut off right after 16 + 1 bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    parts = [compressor.compress(idx_header(0x08, (16,)))]
    zeros = bytes(1024**2)
    parts += [compressor.compress(zeros) for _ in range(256)]
    path = tmp_path / "bomb.gz"
    path.write_bytes(b"".join(parts) + compressor.flush())
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="trailing bytes"):
            data.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2


def test_read_idx_corrupt_gzip_names_the_file(tmp_path: Path, mnist_dir: Path) -> None:
    raw = bytearray((mnist_dir / MNIST_TEST[1]).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path = tmp_path / "flipped.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"flipped\.gz: corrupt or truncated gzip"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.*cannot read"):
        data.read_idx(tmp_path / "nope")


@pytest.mark.parametrize("dtype", ["i1", ">i2", "<i4", "f4", "f8"])
def test_read_idx_decodes_big_endian_types(tmp_path: Path, dtype: str) -> None:
    scale = 1 if np.dtype(dtype).itemsize == 1 else 1000  # multi-byte values expose byte order
    array = (np.arange(-6, 6).reshape(3, 4) * scale + 1).astype(dtype)
    path = write_file(tmp_path / "typed", idx_bytes(array), compress=False)
    got = data.read_idx(path)
    assert got.dtype.isnative and got.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(got, array)


def _read_bytes(payload: bytes) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f"
        path.write_bytes(payload)
        return data.read_idx(path)


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)),
    compress=st.booleans(),
)
def test_read_idx_round_trips(array: np.ndarray, compress: bool) -> None:
    payload = idx_bytes(array)
    got = _read_bytes(gzip.compress(payload) if compress else payload)
    assert got.dtype == np.uint8 and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: b"\x00\x00" + b),
        st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b),
    )
)
def test_read_idx_random_bytes_raise_only_data_error(payload: bytes) -> None:
    try:
        _read_bytes(payload)
    except DataError:
        pass


@settings(max_examples=100, deadline=None)
@given(compress=st.booleans(), data_=st.data())
def test_read_idx_any_truncation_is_data_error(compress: bool, data_: st.DataObject) -> None:
    payload = gzip.compress(_VALID) if compress else _VALID
    cut = data_.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(DataError):
        _read_bytes(payload[:cut])


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, len(gzip.compress(_VALID)) - 1), flip=st.integers(1, 255))
def test_read_idx_any_gzip_byte_flip_is_data_error_or_same_data(position: int, flip: int) -> None:
    payload = bytearray(gzip.compress(_VALID))
    payload[position] ^= flip
    try:
        got = _read_bytes(bytes(payload))
    except DataError:
        return
    assert got.tobytes() == _VALID[16:]  # only gzip header metadata was hit


# --------------------------------------------------------------------------- #
# checksums and content checks on load
# --------------------------------------------------------------------------- #


def test_checksum_mismatch_on_load(tmp_path: Path) -> None:
    write_split(tmp_path, fake_images(3), fake_labels(3), names=MNIST_TEST)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / MNIST_TEST[0]) in message
    assert "expected md5 9fb629c4189551a2d022fa330f9573f3" in message
    assert "not the official one" in message
    ds = data.load_dataset("mnist", "test", data_dir=tmp_path, download=False, verify=False)
    assert ds.verified == {"images": "skipped", "labels": "skipped"} and len(ds) == 3


def test_unknown_hash_is_unverified_not_mismatch(tmp_path: Path) -> None:
    """MNIST train has no known content hash: a re-gzipped copy cannot be judged."""
    write_split(tmp_path, fake_images(4), fake_labels(4))
    ds = data.load_dataset("mnist", "train", data_dir=tmp_path, download=False)
    assert ds.verified == {"images": "unverified", "labels": "unverified"}
    assert ds.images.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), fake_images(4))
    assert ds.labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("images", "labels", "fragment"),
    [
        (fake_images(3), fake_labels(2), "holds 3 images but"),
        (fake_images(2), np.array([1, 10], np.uint8), "label 10 is out of range 0..9"),
        (np.zeros((2, 28, 27), np.uint8), fake_labels(2), "expected uint8 images of shape"),
        (fake_images(2), np.zeros((2, 1), np.uint8), "expected uint8 labels of shape"),
        (fake_images(2).astype(">i2"), fake_labels(2), "expected uint8 images"),
    ],
    ids=["count", "range", "image-shape", "label-shape", "image-dtype"],
)
def test_inconsistent_files_are_rejected(tmp_path: Path, images: np.ndarray, labels: np.ndarray, fragment: str) -> None:
    write_split(tmp_path, images, labels)
    with pytest.raises(DataError, match=fragment):
        data.load_dataset("mnist", "train", data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------- #
# not found
# --------------------------------------------------------------------------- #


def test_unknown_dataset_and_split_list_valid_names() -> None:
    with pytest.raises(DataError, match="valid names: mnist, fashion-mnist"):
        data.load_dataset("cifar", "test")
    with pytest.raises(DataError, match="valid splits: train, test, fit, val"):
        data.load_dataset("mnist", "validation")


def test_missing_split_points_to_the_available_one(mnist_dir: Path) -> None:
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "train", data_dir=mnist_dir, download=False)
    message = str(info.value)
    assert message.startswith("mnist train split not found")
    assert f"the test split is available at {mnist_dir}: use --split test" in message


def test_missing_dataset_lists_every_place_and_remedy() -> None:
    with pytest.raises(DataError) as info:
        data.load_dataset("fashion-mnist", "train", download=False)
    message = str(info.value)
    for folder in data.search_dirs("fashion-mnist"):
        assert str(folder) in message
    for remedy in ("--data-dir", "GENLAB_DATA_DIR", "apt-get install dataset-fashion-mnist",
                   "train-images-idx3-ubyte.gz", "download is disabled"):  # fmt: skip
        assert remedy in message
    assert "available at" not in message


def test_failed_download_is_reported_in_not_found_message() -> None:
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "test")  # network blocked by the fixture
    message = str(info.value)
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in message
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz" in message
    assert "network disabled" in message and "apt-get" not in message


# --------------------------------------------------------------------------- #
# download
# --------------------------------------------------------------------------- #


class _Response(io.BytesIO):
    """A urlopen response that can fail after ``fail_after`` bytes."""

    def __init__(self, payload: bytes, fail_after: int | None = None) -> None:
        super().__init__(payload)
        self.fail_after = fail_after

    def read(self, size: int | None = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise TimeoutError("read timed out")
        return super().read(size if self.fail_after is None else min(size or 1, self.fail_after))


def _serve(monkeypatch: pytest.MonkeyPatch, respond: Callable[[str], _Response]) -> list[str]:
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float | None = None) -> _Response:
        calls.append(url)
        assert timeout is not None and timeout <= 60
        return respond(url)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


@pytest.mark.parametrize("fail_mid_stream", [False, True], ids=["wrong-md5", "broken-stream"])
def test_bad_download_leaves_nothing_in_cache(
    isolated_data_env: Path, monkeypatch: pytest.MonkeyPatch, fail_mid_stream: bool
) -> None:
    payload = gzip.compress(idx_bytes(fake_labels(5)))
    calls = _serve(monkeypatch, lambda url: _Response(payload, 10 if fail_mid_stream else None))
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "test")
    expected = "read timed out" if fail_mid_stream else "checksum mismatch: expected md5"
    assert expected in str(info.value)
    assert calls[:2] == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz",
    ]
    assert files_under(isolated_data_env / "cache") == []


def test_good_download_lands_in_cache_and_is_reused(
    isolated_data_env: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def official_file(url: str) -> _Response:
        return _Response((mnist_dir / url.rsplit("/", 1)[1]).read_bytes())

    calls = _serve(monkeypatch, official_file)
    ds = data.load_dataset("mnist", "test")
    cache = isolated_data_env / "cache" / "genlab" / "datasets" / "mnist"
    assert sorted(p.name for p in files_under(cache)) == sorted(MNIST_TEST)
    assert ds.sources["images"] == str(cache / MNIST_TEST[0])
    assert ds.verified == {"images": "ok", "labels": "ok"} and len(ds) == 10000
    assert len(calls) == 2  # first mirror served both files
    calls.clear()
    again = data.load_dataset("mnist", "test")
    assert calls == [] and again.sources == ds.sources


# --------------------------------------------------------------------------- #
# status
# --------------------------------------------------------------------------- #


def test_dataset_status_reports_each_file(tmp_path: Path, mnist_dir: Path) -> None:
    for name in MNIST_TEST:
        (tmp_path / name).symlink_to(mnist_dir / name)
    write_split(tmp_path / "fashion-mnist", fake_images(2), fake_labels(2), names=MNIST_TEST)
    (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte").write_bytes(idx_bytes(fake_images(2)))
    rows = data.dataset_status(tmp_path)
    by_key = {(r["dataset"], r["split"], r["role"]): r for r in rows}
    assert len(rows) == 8
    assert by_key["mnist", "test", "images"]["status"] == "ok"
    assert by_key["mnist", "test", "images"]["path"] == str(tmp_path / MNIST_TEST[0])
    assert by_key["mnist", "train", "labels"] == {
        "dataset": "mnist", "split": "train", "role": "labels", "status": "missing", "path": None
    }  # fmt: skip
    assert by_key["fashion-mnist", "test", "labels"]["status"] == "mismatch"
    assert by_key["fashion-mnist", "train", "images"]["status"] == "mismatch"  # raw, known hash
    assert by_key["fashion-mnist", "train", "labels"]["status"] == "missing"


def test_dataset_status_unverified(tmp_path: Path) -> None:
    write_split(tmp_path / "mnist", fake_images(2), fake_labels(2))
    rows = data.dataset_status(tmp_path)
    assert [r["status"] for r in rows if r["dataset"] == "mnist" and r["split"] == "train"] == [
        "unverified",
        "unverified",
    ]


def test_format_status_table_aligns_columns() -> None:
    rows = [
        {"dataset": "mnist", "split": "test", "role": "images", "status": "ok", "path": "/x/y.gz"},
        {"dataset": "fashion-mnist", "split": "train", "role": "labels", "status": "missing",
         "path": None},
    ]  # fmt: skip
    lines = data.format_status_table(rows).splitlines()
    assert lines[0].split() == ["dataset", "split", "role", "status", "path"]
    assert lines[1].split() == ["mnist", "test", "images", "ok", "/x/y.gz"]
    assert lines[2].split() == ["fashion-mnist", "train", "labels", "missing", "-"]
    starts = {line.index(word) for line, word in zip(lines, ("status", "ok", "missing"))}
    assert len(starts) == 1


def test_a_data_dir_of_another_dataset_is_passed_over(isolated_data_env, mnist_dir, fashion_dir):
    """MNIST and Fashion-MNIST share file names: a --data-dir holding MNIST must not shadow
    Fashion-MNIST found later in the lookup (and vice versa it still serves MNIST)."""
    system = isolated_data_env / "system" / "fashion-mnist"
    system.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (system / name).write_bytes((fashion_dir / name).read_bytes())
    fashion = data.load_dataset("fashion-mnist", "test", data_dir=mnist_dir, download=False)
    assert fashion.sources["images"].startswith(str(system)) and fashion.verified["images"] == "ok"
    mnist = data.load_dataset("mnist", "test", data_dir=mnist_dir, download=False)
    assert mnist.sources["images"].startswith(str(mnist_dir))
    rows = {(r["dataset"], r["split"], r["role"]): r for r in data.dataset_status(data_dir=mnist_dir)}
    assert rows[("fashion-mnist", "test", "images")]["status"] == "ok"
    assert rows[("mnist", "test", "images")]["status"] == "ok"


def test_fit_and_val_partition_the_training_split_and_never_touch_test(fashion_dir):
    """'val' (for choosing settings) is the training split's last 5,000 images and 'fit' the rest:
    together exactly the training split, in order, read from the training files only."""
    train = data.load_dataset("fashion-mnist", "train", data_dir=fashion_dir, download=False)
    fit = data.load_dataset("fashion-mnist", "fit", data_dir=fashion_dir, download=False)
    val = data.load_dataset("fashion-mnist", "val", data_dir=fashion_dir, download=False)
    assert (len(fit), len(val)) == (len(train) - data.VALIDATION_IMAGES, data.VALIDATION_IMAGES) == (55000, 5000)
    assert torch.equal(torch.cat([fit.images, val.images]), train.images)
    assert torch.equal(torch.cat([fit.labels, val.labels]), train.labels)
    assert (fit.split, val.split) == ("fit", "val")
    for part in (fit, val):
        assert part.sources == train.sources and "t10k" not in " ".join(part.sources.values())
    # every class is there in about its share (the official order is random): 10 % +- 1.5 points
    shares = torch.bincount(val.labels, minlength=10).double() / len(val)
    assert float((shares - 0.1).abs().max()) < 0.015


def test_the_derived_splits_are_accepted_where_a_split_is_named(isolated_data_env, mnist_dir):
    from genlab.cli import build_parser
    from genlab.config import DataConfig
    from genlab.errors import ConfigError

    assert data.split_names() == ("train", "test", "fit", "val")
    train_split = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "split"
    )
    assert tuple(train_split.choices) == data.split_names()  # the CLI lists them without importing torch
    DataConfig("fashion-mnist", "val").validate()
    with pytest.raises(ConfigError, match="data.split must be one of train, test, fit, val"):
        DataConfig("fashion-mnist", "validation").validate()
    # MNIST's training files are missing here: 'fit' says so and names the split that is there
    with pytest.raises(data.DataError, match="mnist train split not found"):
        data.load_dataset("mnist", "fit", data_dir=mnist_dir, download=False)
