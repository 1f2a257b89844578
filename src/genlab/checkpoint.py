"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A run directory holds ``config.json`` + ``model.safetensors`` (final weights) and
``checkpoints/step-XXXXXXXX/`` folders for resuming: ``model.safetensors``,
``state.safetensors`` (optimiser moments, RNG states) and ``state.json`` (step,
epoch, the non-tensor parts of the optimiser state). Nothing is ever unpickled:
safetensors files hold raw tensors behind a JSON header, so loading one cannot
run code.

Every file is written to a temporary name in the same folder, flushed to disk
and renamed over the target (``os.replace`` is atomic on POSIX), so a crash or a
full disk leaves the previous file intact. A checkpoint folder is assembled
under a temporary name and renamed into place the same way.

Every file is read as if it came from a stranger: opened without blocking (a FIFO
cannot hang a reader), refused unless a regular file, and measured before it is
read (:func:`read_capped`, :func:`load_tensors`). A safetensors file's header must
account for its size exactly, and weights are checked against their model from
the header, before their data is read (:func:`load_tensors`). Resuming reads a
checkpoint whole and checked (:func:`read_checkpoint`), so a damaged one can be
skipped for an older one before anything is loaded.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CheckpointError, DivergenceError, GenlabError
from .io import MissingFileError, atomic_write_bytes, atomic_write_text, fsync_dir, open_regular, remove_quietly, why
from .runs import CHECKPOINT_DIR, CONFIG_FILE, MODEL_FILE  # noqa: F401  (re-exported for callers)


# -- tensors <-> safetensors ----------------------------------------------------------
def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    # safetensors refuses shared or strided storage: give it dense, detached CPU copies.
    dense = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    # One metadata key: safetensors keeps metadata in a hash map whose order varies
    # between processes, and identical runs must write identical bytes.
    meta = json.dumps({"genlab_version": __version__, **(metadata or {})}, sort_keys=True)
    atomic_write_bytes(path, st_save(dense, metadata={"genlab": meta}))


# -- reading files that may come from anywhere ------------------------------------------------
# Every checkpoint or weights file is opened without blocking (a FIFO named model.safetensors must
# not hang a resume), must be a regular file (not a FIFO, device or socket), and is measured before
# it is read: nothing is read whose size the file's own header does not account for.
SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # safetensors' own limit for its JSON header
STATE_JSON_LIMIT = 16 * 2**20  # a checkpoint's state.json: settings and the optimisers' skeleton


@contextmanager
def _open_regular(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """``(file, size)`` of ``path`` opened for reading (:func:`genlab.io.open_regular`: a regular file,
    opened without blocking), or a CheckpointError saying what is wrong with it."""
    path = Path(path)
    try:
        fd, size = open_regular(path, 1 << 62, "checkpoint file")
    except MissingFileError:
        raise CheckpointError(f"{path}: file is missing") from None
    except GenlabError as e:
        raise CheckpointError(str(e)) from None
    with os.fdopen(fd, "rb") as f:  # buffered: read(n) returns n bytes unless the file ends
        yield f, size


def _read_exactly(f: IO[bytes], n: int, path: Path) -> bytes:
    try:
        data = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if data is None or len(data) != n:
        raise CheckpointError(f"{path}: the file changed while it was read")
    return data


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of a small regular file (state.json, summary.json); one over ``limit`` bytes is refused unread."""
    path = Path(path)
    with _open_regular(path) as (f, size):
        if size > limit:
            raise CheckpointError(
                f"{path}: {size:,} bytes, more than the {limit:,} such a file can hold; it is not one genlab wrote"
            )
        return _read_exactly(f, size, path)


# safetensors' dtype names -> torch's (those this torch lacks are left out)
_ST_DTYPES: dict[str, torch.dtype] = {
    k: getattr(torch, v)
    for k, v in {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U64": "uint64",
        "U32": "uint32",
        "U16": "uint16",
        "U8": "uint8",
        "BOOL": "bool",
        "C64": "complex64",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
    }.items()
    if hasattr(torch, v)
}


class _NotSafetensors(ValueError):
    pass


def _parse_header(header: bytes) -> tuple[dict[str, torch.Tensor], int]:
    """Each tensor's (dtype, shape) as a meta tensor, and the bytes of data the header declares."""
    try:
        entries = json.loads(header)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _NotSafetensors("its header is not JSON") from None
    if not isinstance(entries, dict):
        raise _NotSafetensors("its header is not a JSON object")
    shapes: dict[str, torch.Tensor] = {}
    end = 0
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise _NotSafetensors(f"tensor {name!r} has no description")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(dtype, str) and dtype in _ST_DTYPES):
            raise _NotSafetensors(f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not (
            isinstance(shape, list)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(v) is int and v >= 0 for v in (*shape, *offsets))
        ):
            raise _NotSafetensors(f"tensor {name!r} has a damaged shape or data offsets")
        size, span = math.prod(shape) * _ST_DTYPES[dtype].itemsize, offsets[1] - offsets[0]
        if span != size:
            raise _NotSafetensors(f"tensor {name!r} is {dtype} {shape} ({size:,} bytes) but its data spans {span:,}")
        if offsets[1] >= 2**62:
            raise _NotSafetensors(f"tensor {name!r} ends {offsets[1]:,} bytes in, more than any file holds")
        try:
            shapes[name] = torch.empty(shape, dtype=_ST_DTYPES[dtype], device="meta")
        except (RuntimeError, OverflowError, ValueError, TypeError):
            raise _NotSafetensors(f"tensor {name!r} has an impossible shape {shape}") from None
        end = max(end, offsets[1])
    return shapes, end


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def load_tensors(path: Path, expect: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file, a FIFO) is refused.

    The header is read first and must account for the file exactly (8 bytes, the header, the
    tensors' data), so a file padded, truncated or swollen to gigabytes is refused before its data
    is read. With ``expect`` (a model, possibly on the meta device) the tensors' names, shapes and
    dtypes are checked against it from the header too: weights of another model are refused unread.
    """
    path = Path(path)
    with _open_regular(path) as (f, size):
        first = _read_exactly(f, min(size, 8), path)
        hint = (
            " (it looks like a pickle file: genlab never loads those)"
            if first[:1] == b"\x80" or first[:2] == b"PK"
            else ""
        )

        def refuse(why: str) -> CheckpointError:
            return CheckpointError(f"{path}: not a valid safetensors file{hint}: {why}")

        if size < 8:
            raise refuse(f"{size} bytes, too short for a header")
        (header_len,) = struct.unpack("<Q", first)
        if header_len > SAFETENSORS_HEADER_LIMIT or 8 + header_len > size:
            raise refuse(f"a header of {header_len:,} bytes in a file of {size:,}")
        try:
            shapes, data_len = _parse_header(_read_exactly(f, header_len, path))
        except _NotSafetensors as e:
            raise refuse(str(e)) from None
        if 8 + header_len + data_len != size:
            raise refuse(
                f"the file is {size:,} bytes but its header accounts for {8 + header_len + data_len:,} "
                f"(truncated, or data appended)"
            )
        if expect is not None:
            check_state_fits(expect, shapes, str(path))
        if data_len > _memory_bytes():
            raise CheckpointError(
                f"{path}: holds {data_len / 2**30:,.1f} GiB of tensors, more than this machine's memory"
            )
        f.seek(0)
        data = _read_exactly(f, size, path)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file{hint}: {e}") from None


def check_state_fits(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``tensors`` less the keys the model's family retired, after checking names, shapes and dtypes
    match ``module``'s exactly (its values are not read: meta tensors will do).

    A dtype must match too: a float64 file holding 1e300 would pass a finiteness check and
    then overflow to inf in the model's float32, and an int or bool tensor would be cast
    silently. Keys the model's family retired (``retired_state_keys``: state an older genlab
    stored that now lives elsewhere) are dropped, so older run directories still load.
    """
    from .models.base import GenerativeModel

    retired = module.retired_state_keys if isinstance(module, GenerativeModel) else frozenset()
    tensors = {k: v for k, v in tensors.items() if k not in retired}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    wrong += [
        f"{k}: file {str(tensors[k].dtype).removeprefix('torch.')} vs model {str(v.dtype).removeprefix('torch.')}"
        for k, v in expected.items()
        if k in tensors and tensors[k].dtype != v.dtype
    ]
    if missing or unexpected or wrong:
        parts: list[str] = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape or dtype mismatch(es) (e.g. {wrong[0]})")
        raise CheckpointError(f"{where}: weights do not fit this model's architecture: {'; '.join(parts)}")
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"{where}: {len(bad)} tensor(s) hold NaN or inf (e.g. {bad[0]}); the file is damaged "
            f"(genlab never writes non-finite weights)"
        )


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy weights into ``module`` after checking names, shapes and dtypes match exactly
    (:func:`check_state_fits`) and every value is finite."""
    tensors = check_state_fits(module, tensors, where)
    check_finite(tensors, where)
    module.load_state_dict(tensors, strict=True)


# -- nested state (optimiser, RNG) <-> (tensors, JSON) ------------------------------------
def flatten_state(obj: Any, prefix: str = "", tensors: dict | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON skeleton and a flat dict of tensors.

    Tensors become ``{"__tensor__": key}`` in the skeleton; tuples become
    ``{"__tuple__": [...]}``; numpy arrays become tensors; dict keys are kept
    with their type (optimiser state is keyed by int).
    """
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = prefix or "t"
        tensors[key] = obj
        return {"__tensor__": key}, tensors
    if isinstance(obj, np.ndarray):
        return flatten_state(torch.from_numpy(obj.copy()), prefix, tensors)
    if isinstance(obj, dict):
        items = [[k, flatten_state(v, f"{prefix}.{k}", tensors)[0]] for k, v in obj.items()]
        return {"__dict__": items}, tensors
    if isinstance(obj, (list, tuple)):
        seq = [flatten_state(v, f"{prefix}.{i}", tensors)[0] for i, v in enumerate(obj)]
        return ({"__tuple__": seq} if isinstance(obj, tuple) else seq), tensors
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint state refers to a missing tensor {key!r}")
            return tensors[key]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        raise CheckpointError("checkpoint state has an unknown structure")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def rng_states() -> dict[str, Any]:
    """Every global RNG genlab or a user's code might touch."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    try:
        _set_rng_states(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint holds damaged random-number-generator states ({e})") from None


def _set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# -- resumable checkpoints ------------------------------------------------------------
_STEP_DIR = re.compile(r"step-(\d{8,})")
STATE_FORMAT = 1


def _step_folders(run_dir: Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir())


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    return [p for _, p in _step_folders(run_dir) if (p / "state.json").is_file()]


def resume_candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint folder of a run, newest first, complete or not (resuming checks each), or a
    CheckpointError saying why there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    found = [p for _, p in reversed(_step_folders(run_dir))]
    if not found:
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from (looked in {run_dir / CHECKPOINT_DIR}); "
            f"start again with --overwrite"
        )
    return found


def set_aside(path: Path) -> Path | None:
    """Rename a damaged checkpoint folder to ``.damaged-step-XXXXXXXX`` beside it (replacing an older one of
    that name), out of the way of resuming and of pruning; None if it cannot be moved."""
    target = path.with_name(f".damaged-{path.name}")
    try:
        if target.exists():
            remove_quietly(target)
        os.replace(path, target)
        fsync_dir(path.parent)
    except OSError:
        return None
    return target


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    keep: int,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoints/step-XXXXXXXX/ atomically, then delete all but the newest ``keep``.

    ``meta`` (JSON: the run's config, dataset size, ...) is stored in state.json
    so that resuming can check it continues the same run. Refuses non-finite
    weights: a checkpoint is always a state worth going back to.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / f"step-{step:08d}"
    weights = model.state_dict()
    bad = nonfinite_tensors(weights)
    if bad:
        raise DivergenceError(f"weights are NaN or inf at step {step} (e.g. {bad[0]}); no checkpoint written")
    skeleton, tensors = flatten_state(state, "state")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    except OSError as e:
        raise GenlabError(f"cannot write a checkpoint into {root}: {why(e)}") from None
    try:
        save_tensors(tmp / MODEL_FILE, weights)
        save_tensors(tmp / "state.safetensors", tensors)
        atomic_write_text(
            tmp / "state.json", json.dumps({"format": STATE_FORMAT, "step": step, **(meta or {}), "state": skeleton})
        )
        replaced = root / f".tmp-step-{step:08d}-replaced"
        if final.exists():  # renamed away, not deleted in place: a kill now leaves no half-deleted checkpoint
            remove_quietly(replaced)
            os.replace(final, replaced)
        os.replace(tmp, final)
        fsync_dir(root)
        remove_quietly(replaced)
    except OSError as e:
        remove_quietly(tmp)
        raise GenlabError(f"cannot write checkpoint {final}: {why(e)}; earlier checkpoints are unchanged") from None
    except BaseException:
        remove_quietly(tmp)
        raise
    for old in checkpoint_dirs(run_dir)[:-keep]:
        remove_quietly(old)
    for stale in root.glob(".tmp-step-*"):  # left by a crash mid-write; only one process writes checkpoints
        remove_quietly(stale)
    return final


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """state.json of a checkpoint (a regular file of at most 16 MB), checked for the keys resuming needs
    and for a step that matches the folder's name."""
    path = Path(path)
    where = path / "state.json"
    data = read_capped(where, STATE_JSON_LIMIT)
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: unreadable ({e})") from None
    if not (isinstance(meta, dict) and type(meta.get("step")) is int and meta["step"] >= 0 and "state" in meta):
        raise CheckpointError(f"{where}: not a genlab checkpoint (no step or state)")
    if path.name != f"step-{meta['step']:08d}":
        raise CheckpointError(f"{where}: records step {meta['step']}, but its folder is {path.name}")
    return meta


@dataclass
class Checkpoint:
    """A checkpoint read whole and checked, ready to load: nothing of it is read again."""

    path: Path
    meta: dict[str, Any]  # state.json: ``step`` and what the trainer stored beside it (config, ...)
    weights: dict[str, torch.Tensor]  # finite, and fitting the model it was read for
    state: dict[str, Any]  # the training state, its tensors in place, plus ``step``

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def read_checkpoint(path: Path, model: torch.nn.Module | None = None, meta: dict[str, Any] | None = None) -> Checkpoint:
    """Read and check every file of a checkpoint; any problem is a CheckpointError naming the file.

    With ``model`` (real or on the meta device) the weights must fit it; ``meta`` is its state.json,
    when the caller has read it already.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path) if meta is None else meta
    where = str(path / MODEL_FILE)
    weights = load_tensors(path / MODEL_FILE, expect=model)
    if model is not None:
        weights = check_state_fits(model, weights, where)
    check_finite(weights, where)
    tensors = load_tensors(path / "state.safetensors")
    try:
        state = unflatten_state(meta["state"], tensors)
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        raise CheckpointError(f"{path / 'state.json'}: damaged training state ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / 'state.json'}: damaged training state")
    state["step"] = meta["step"]
    return Checkpoint(path, meta, weights, state)


def load_checkpoint(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` and return the saved training state (plus ``step``)."""
    found = read_checkpoint(path, model)
    model.load_state_dict(found.weights, strict=True)
    return found.state


# -- finished runs -------------------------------------------------------------------
def load_run(run_dir: Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from its run directory: (model in eval mode, RunConfig)."""
    from .config import RunConfig
    from .models import build_model, dry_build

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    config = RunConfig.load(run_dir / CONFIG_FILE)
    weights = run_dir / MODEL_FILE
    if not os.path.lexists(weights):
        ckpts = checkpoint_dirs(run_dir)
        if not ckpts:
            raise CheckpointError(
                f"{run_dir}: no {MODEL_FILE} and no checkpoint: training never finished "
                f"a checkpoint (resume it with: genlab train --resume {run_dir})"
            )
        weights = ckpts[-1] / MODEL_FILE
    # names, shapes and dtypes checked from the file's header against the weightless model first: a
    # stranger's config cannot make genlab allocate a large model only to refuse its weights
    tensors = load_tensors(weights, expect=dry_build(config.family, config.model))
    model = build_model(config.family, config.model)
    load_state_into(model, tensors, str(weights))
    return model.to(device).eval(), config
