"""checkpoint.py on its own: atomic files, safetensors only, state round trips, bounded and finite checkpoints."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genlab import checkpoint as ckpt
from genlab.errors import CheckpointError, DivergenceError, GenlabError
from genlab.runs import LOCK_FILE


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") and p.name != LOCK_FILE]


# -- atomic files --------------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    ckpt.atomic_write_bytes(target, b"one")
    ckpt.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and no_temp_files(tmp_path)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EIO, "Input/output error")])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, code, words):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(GenlabError, match=words) as info:
        ckpt.atomic_write_bytes(target, b"new" * 1000)
    assert "previous file" in str(info.value)
    assert target.read_bytes() == b"old" and no_temp_files(tmp_path)


def test_write_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GenlabError, match="cannot write"):
        ckpt.atomic_write_bytes(blocker / "f.bin", b"data")


# -- safetensors ---------------------------------------------------------------------------------------------
def test_safetensors_bytes_are_deterministic(tmp_path):
    tensors = {f"t{i}": torch.full((2, 3), float(i)) for i in range(20)}
    meta = {f"k{i}": str(i) for i in range(20)}  # many keys: one JSON value keeps their order fixed
    ckpt.save_tensors(tmp_path / "a", tensors, meta)
    ckpt.save_tensors(tmp_path / "b", dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    loaded = ckpt.load_tensors(tmp_path / "a")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "truncated", "empty", "text"])
def test_only_safetensors_are_read(tmp_path, kind):
    path, marker = tmp_path / "model.safetensors", tmp_path / "code-ran"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": Payload(marker)}))
    elif kind == "torch.save":
        torch.save({"w": Payload(marker)}, path)
    elif kind == "truncated":
        ckpt.save_tensors(path, {"w": torch.zeros(100)})
        path.write_bytes(path.read_bytes()[:-50])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text('{"w": [1, 2, 3]}')
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as info:
        ckpt.load_tensors(path)
    assert ("pickle" in str(info.value)) == (kind in ("pickle", "torch.save"))
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_tensors(tmp_path / "nothing.safetensors")


def test_load_state_into_checks_names_shapes_and_values():
    model = tiny()
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape or dtype mismatch"):
        ckpt.load_state_into(model, {**good, "0.weight": torch.zeros(5, 3)}, "f")
    with pytest.raises(CheckpointError, match="missing 1 tensor"):
        ckpt.load_state_into(model, {k: v for k, v in good.items() if k != "2.bias"}, "f")
    with pytest.raises(CheckpointError, match="unexpected"):
        ckpt.load_state_into(model, {**good, "extra": torch.zeros(1)}, "f")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        ckpt.load_state_into(model, {**good, "2.bias": torch.tensor([0.0, float("inf")])}, "f")
    ckpt.load_state_into(model, good, "f")


# -- training state --------------------------------------------------------------------------------------------
def test_optimizer_and_rng_state_round_trip(tmp_path):
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    model(torch.randn(8, 3)).sum().backward()
    opt.step()
    random.random(), np.random.rand(), torch.rand(1)
    state = {"optimizers": {"g": opt.state_dict()}, "rng": ckpt.rng_states(), "epoch": 3}
    path = ckpt.save_checkpoint(tmp_path, 5, model, state, keep=2, meta={"config": {"a": 1}})
    expected = (random.random(), float(np.random.rand()), torch.rand(3))

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    other = tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    loaded = ckpt.load_checkpoint(path, other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    opt2 = torch.optim.Adam(other.parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizers"]["g"])
    assert opt2.param_groups[0]["betas"] == (0.5, 0.9)
    for k, s in opt.state_dict()["state"].items():
        assert all(torch.equal(s[n], opt2.state_dict()["state"][k][n]) for n in s)
    ckpt.set_rng_states(loaded["rng"])
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
    assert loaded["step"] == 5 and loaded["epoch"] == 3
    assert json.loads((path / "state.json").read_text())["config"] == {"a": 1}


def test_checkpoints_are_bounded_ordered_and_complete(tmp_path):
    model = tiny()
    (tmp_path / "checkpoints" / ".tmp-step-00000001-crash").mkdir(parents=True)  # a crash mid-write
    (tmp_path / "checkpoints" / "step-00000002").mkdir()  # no state.json: not complete
    for step in (99_999_999, 3, 100_000_000, 7):
        ckpt.save_checkpoint(tmp_path, step, model, {"x": 1}, keep=3)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step-00000007", "step-99999999", "step-100000000"]
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))


def test_non_finite_weights_are_never_saved(tmp_path):
    model = tiny()
    ckpt.save_checkpoint(tmp_path, 1, model, {}, keep=5)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="step 2"):
        ckpt.save_checkpoint(tmp_path, 2, model, {}, keep=5)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step-00000001"]


def test_full_disk_mid_checkpoint_keeps_the_earlier_ones(tmp_path, monkeypatch):
    model = tiny()
    first = ckpt.save_checkpoint(tmp_path, 1, model, {"a": torch.ones(2)}, keep=1)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file of the new checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(GenlabError, match="disk is full"):
        ckpt.save_checkpoint(tmp_path, 2, model, {"a": torch.ones(2)}, keep=1)
    monkeypatch.undo()
    assert ckpt.checkpoint_dirs(tmp_path) == [first]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "[]",
        '{"step": "3", "state": {}}',
        '{"step": -1, "state": {}}',
        '{"state": {}}',
        '{"step": 1}',
        '{"step": 1, "state": {"__tensor__": "gone"}}',
        '{"step": 1, "state": {"__dict__": [[1]]}}',
        '{"step": 1, "state": {"__x__": 1}}',
    ],
)
def test_damaged_state_json(tmp_path, content):
    path = ckpt.save_checkpoint(tmp_path, 1, tiny(), {"a": torch.ones(1)}, keep=1)
    (path / "state.json").write_text(content)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(path, tiny())


def test_damaged_rng_state():
    with pytest.raises(CheckpointError, match="random"):
        ckpt.set_rng_states({"torch": torch.zeros(3, dtype=torch.uint8), "numpy": [], "python": []})


# -- reading: regular files only, never blocking, measured before read -------------------------------------
@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: a read that blocks (a FIFO opened without O_NONBLOCK) is interrupted."""

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def header(entries) -> bytes:
    """The length and JSON header of a safetensors file describing ``entries`` (their data not included)."""
    text = json.dumps(entries).encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("name", ["model.safetensors", "state.safetensors", "state.json"])
def test_a_fifo_in_a_checkpoint_is_refused_at_once(tmp_path, name):
    path = ckpt.save_checkpoint(tmp_path, 1, tiny(), {"a": torch.ones(1)}, keep=1)
    (path / name).unlink()
    os.mkfifo(path / name)  # no writer: a blocking open or read would wait forever
    with (
        deadline(10),
        pytest.raises(CheckpointError, match=f"{name}: cannot read the checkpoint file: it is a named pipe"),
    ):
        ckpt.load_checkpoint(path, tiny())


def test_a_directory_or_device_is_not_a_weights_file(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        ckpt.load_tensors(tmp_path / "model.safetensors")
    with deadline(10), pytest.raises(CheckpointError, match="is a character device"):
        ckpt.load_tensors(Path("/dev/zero"))  # endless: reading it whole would never finish


def test_a_sparse_40_gb_weights_file_is_refused_unread(tmp_path):
    path = tmp_path / "model.safetensors"
    ckpt.save_tensors(path, tiny().state_dict())
    os.truncate(path, 40 * 2**30)  # the real file, then 40 GB of holes: costs no disk, reading it would
    with deadline(10), pytest.raises(CheckpointError, match="header accounts for"):
        ckpt.load_tensors(path)
    zeros = tmp_path / "zeros.safetensors"
    zeros.touch()
    os.truncate(zeros, 40 * 2**30)
    with deadline(10), pytest.raises(CheckpointError, match="not a valid safetensors file"):
        ckpt.load_tensors(zeros)


def test_weights_declaring_more_than_the_model_or_the_machine_are_refused_unread(tmp_path):
    path = tmp_path / "model.safetensors"
    big = 100_000 * 100_000 * 4  # 40 GB of float32, declared by the header and present (as holes)
    path.write_bytes(header({"0.weight": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, big]}}))
    os.truncate(path, path.stat().st_size + big)
    with deadline(10), pytest.raises(CheckpointError, match=r"0\.weight: file \(100000, 100000\) vs model \(4, 3\)"):
        ckpt.load_tensors(path, expect=tiny())  # checked against the model from the header alone
    huge = 4 * 2**40  # 4 TiB: more than any machine that runs this has
    path.write_bytes(header({"w": {"dtype": "U8", "shape": [huge], "data_offsets": [0, huge]}}))
    os.truncate(path, path.stat().st_size + huge)
    with deadline(10), pytest.raises(CheckpointError, match="more than this machine's memory"):
        ckpt.load_tensors(path)


@pytest.mark.parametrize(
    "content, words",
    [
        (struct.pack("<Q", 2**40) + b"{}", "a header of 1,099,511,627,776 bytes"),
        (struct.pack("<Q", 200 * 2**20) + b" " * 100, "a header of 209,715,200 bytes"),
        (header({"w": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}) + bytes(4), "unknown dtype 'Q9'"),
        (header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}) + bytes(4), "its data spans 4"),
        (header({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}) + bytes(4), "damaged shape"),
        (header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}) + bytes(5), "accounts for"),
        (header([1, 2]), "not a JSON object"),
        (struct.pack("<Q", 3) + b"\xff\xfe\xfd", "not JSON"),
    ],
)
def test_damaged_safetensors_headers(tmp_path, content, words):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as info:
        ckpt.load_tensors(path)
    assert words in str(info.value)


def test_an_oversized_state_json_is_refused_unread(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, tiny(), {}, keep=1)
    os.truncate(path / "state.json", 2**30)
    with pytest.raises(CheckpointError, match="more than the 16,777,216 such a file can hold"):
        ckpt.read_checkpoint_meta(path)


def test_the_step_must_match_the_checkpoint_folder(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 3, tiny(), {}, keep=1)
    meta = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**meta, "step": 10**12}))
    with pytest.raises(CheckpointError, match="records step 1000000000000, but its folder is step-00000003"):
        ckpt.read_checkpoint_meta(path)
