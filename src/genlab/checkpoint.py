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
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CheckpointError, DivergenceError, GenlabError
from .io import atomic_write_bytes, atomic_write_text, fsync_dir, remove_quietly, why
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


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is refused."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file is missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        hint = (
            " (it looks like a pickle file: genlab never loads those)"
            if data[:1] == b"\x80" or data[:2] == b"PK"
            else ""
        )
        raise CheckpointError(f"{path}: not a valid safetensors file{hint}: {e}") from None


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy weights into ``module`` after checking names, shapes and dtypes match exactly.

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
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(
            f"{where}: {len(bad)} tensor(s) hold NaN or inf (e.g. {bad[0]}); the file is damaged "
            f"(genlab never writes non-finite weights)"
        )
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


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir() and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint folder of a run, or a CheckpointError saying why there is none."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    found = checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from (looked in {run_dir / CHECKPOINT_DIR}); "
            f"start again with --overwrite"
        )
    return found[-1]


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
        if final.exists():
            remove_quietly(final)
        os.replace(tmp, final)
        fsync_dir(root)
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
    """state.json of a checkpoint, checked for the keys resuming needs."""
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path / 'state.json'}: unreadable ({e})") from None
    if not (isinstance(meta, dict) and type(meta.get("step")) is int and meta["step"] >= 0 and "state" in meta):
        raise CheckpointError(f"{path / 'state.json'}: not a genlab checkpoint (no step or state)")
    return meta


def load_checkpoint(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` and return the saved training state (plus ``step``)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    load_state_into(model, load_tensors(path / MODEL_FILE), str(path / MODEL_FILE))
    tensors = load_tensors(path / "state.safetensors")
    try:
        state = unflatten_state(meta["state"], tensors)
    except (TypeError, ValueError, KeyError, RecursionError) as e:
        raise CheckpointError(f"{path / 'state.json'}: damaged training state ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / 'state.json'}: damaged training state")
    state["step"] = meta["step"]
    return state


# -- finished runs -------------------------------------------------------------------
def load_run(run_dir: Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from its run directory: (model in eval mode, RunConfig)."""
    from .config import RunConfig
    from .models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    config = RunConfig.load(run_dir / CONFIG_FILE)
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        ckpts = checkpoint_dirs(run_dir)
        if not ckpts:
            raise CheckpointError(
                f"{run_dir}: no {MODEL_FILE} and no checkpoint: training never finished "
                f"a checkpoint (resume it with: genlab train --resume {run_dir})"
            )
        weights = ckpts[-1] / MODEL_FILE
    model = build_model(config.family, config.model)
    load_state_into(model, load_tensors(weights), str(weights))
    return model.to(device).eval(), config
