"""Typed configuration: data, training, and the run that ties them to a model.

A run directory's ``config.json`` is :func:`RunConfig.to_dict` of the run: every
setting resolved, so the directory alone rebuilds its model. Loading refuses
unknown keys and out-of-range values with a message that names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, GenlabError

_BRIEF = reprlib.Repr()  # (keyword arguments to Repr need Python 3.12)
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong, _BRIEF.maxlevel = 80, 80, 40, 3


def brief(value: Any) -> str:
    """``repr(value)``, cut short: a message names a bad value, it does not reprint a stranger's megabytes."""
    return _BRIEF.repr(value)


def config_from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(values) - set(fields)))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    converted = {k: _coerce(v, fields[k], where) for k, v in values.items()}
    return cls(**converted)


def _coerce(value: Any, field: dataclasses.Field, where: str) -> Any:
    """JSON gives lists where the dataclass wants tuples; ints where it wants floats."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(value, bool) and not isinstance(default, bool) and default is not None:
        raise ConfigError(f"{where}.{field.name} must be {type(default).__name__}, got {brief(value)}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if default is not None and value is not None and not isinstance(value, type(default)):
        if not (isinstance(default, float) and isinstance(value, int)):
            raise ConfigError(f"{where}.{field.name} must be {type(default).__name__}, got {brief(value)}")
    return value


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds (config validation)."""
    if not condition:
        raise ConfigError(message)


_INT = (int,)
_NUM = (int, float)


def _check_types(obj: Any, types: dict[str, tuple[type, ...]], optional: set[str], section: str) -> None:
    """Refuse values of the wrong JSON type before range checks compare them.

    ``bool`` is an ``int`` to Python but never a count or a rate to a user, so it is refused too.
    """
    for name, allowed in types.items():
        value = getattr(obj, name)
        if value is None and name in optional:
            continue
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            kinds = " or ".join(t.__name__ for t in allowed) + (" or null" if name in optional else "")
            raise ConfigError(f"{section}.{name} must be {kinds}, got {brief(value)}")


@dataclass
class DataConfig:
    dataset: str = "mnist"  # "mnist" | "fashion-mnist" | "folder:/absolute/path" (genlab.folders)
    split: str = "train"  # MNIST's train split is not on every machine: --split test trains on t10k
    data_dir: str | None = None  # where to look first (else GENLAB_DATA_DIR, cache, /usr/share/datasets)
    sources: dict = field(default_factory=dict)  # filled at run time: file role -> path actually read
    image_size: int | None = None  # folders: short side resized to this, centre-cropped square; None: as stored
    skip_bad_images: bool = False  # folders: leave unreadable files out (named in a warning) instead of refusing

    def validate(self) -> None:
        from .data import DATASETS
        from .folders import is_folder_dataset

        _check_types(
            self,
            {
                "dataset": (str,),
                "split": (str,),
                "data_dir": (str,),
                "sources": (dict,),
                "image_size": _INT,
                "skip_bad_images": (bool,),
            },
            {"data_dir", "image_size"},
            "data",
        )
        folder = is_folder_dataset(self.dataset)
        require(
            folder or self.dataset in DATASETS,
            f"data.dataset: unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS)}, folder:PATH",
        )
        require(
            folder or (self.image_size is None and not self.skip_bad_images),
            "data.image_size and data.skip_bad_images apply to folder datasets (folder:PATH) only",
        )
        require(
            self.image_size is None or 1 <= self.image_size <= 4096,
            f"data.image_size must be in 1..4096, got {self.image_size}",
        )
        from .data import split_names

        splits = ("train", "test") if folder else split_names()
        require(
            self.split in splits,
            f"data.split must be one of {', '.join(splits)}, got {self.split!r}",
        )

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`genlab.data.load_dataset` that only folders use."""
        return {"image_size": self.image_size, "skip_bad_images": self.skip_bad_images}
        require(
            all(isinstance(k, str) and isinstance(v, str) for k, v in self.sources.items()),
            "data.sources must map file roles to paths (strings)",
        )


LR_SCHEDULES = ("constant", "cosine", "linear")
LR_CLOCKS = ("steps", "time")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # per optimiser step, over all processes (the global batch)
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "cosine" | "linear": decay to 0 over the run's planned steps
    warmup_steps: int = 0  # the rate rises linearly to lr over these first steps
    lr_clock: str = "steps"  # "time": the schedule spans max_minutes of training time, not the planned steps
    seed: int = 0  # one seed for weights, data order and noise: same seed => same weights
    device: str = "auto"  # "auto" picks cuda when available
    log_every: int = 100  # steps between metrics.jsonl lines (plus one at each epoch's end)
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = at each epoch's end
    keep_checkpoints: int = 2  # older checkpoints are deleted, the newest N kept
    grad_clip: float | None = None  # clip the global gradient norm to this value
    on_nonfinite: str = "stop"  # "stop": error naming the step; "skip": drop that step's update
    sample_every: int = 0  # steps between progress grids of a fixed z batch; 0 = per family default
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs, benchmarks)
    max_minutes: float | None = None  # stop after this wall-clock budget, at a step boundary
    compile: bool = False  # torch.compile the networks (pays a start-up cost)
    precision: str = "fp32"  # "bf16": autocast matrix work to bfloat16 (weights stay fp32); "auto": bf16
    # where the hardware has bf16 arithmetic (recent GPUs, CPUs with avx512_bf16 / amx_bf16), else fp32

    def validate(self) -> None:
        _check_types(
            self,
            {
                "epochs": _INT,
                "batch_size": _INT,
                "lr": _NUM,
                "lr_schedule": (str,),
                "warmup_steps": _INT,
                "lr_clock": (str,),
                "seed": _INT,
                "device": (str,),
                "log_every": _INT,
                "checkpoint_every": _INT,
                "keep_checkpoints": _INT,
                "grad_clip": _NUM,
                "on_nonfinite": (str,),
                "sample_every": _INT,
                "max_steps": _INT,
                "max_minutes": _NUM,
                "compile": (bool,),
                "precision": (str,),
            },
            {"grad_clip", "max_steps", "max_minutes"},
            "train",
        )
        require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        require(math.isfinite(self.lr) and self.lr > 0, f"train.lr must be a positive number, got {self.lr}")
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.lr_clock in LR_CLOCKS, f"train.lr_clock must be steps or time, got {self.lr_clock!r}")
        require(
            self.lr_clock != "time" or self.max_minutes is not None,
            "train.lr_clock=time needs a time budget to decay over: set --max-minutes",
        )
        require(0 <= self.seed < 2**63, f"train.seed must be in 0..2^63-1, got {self.seed}")
        require(
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
            f"train.device must be auto, cpu or cuda, got {self.device!r}",
        )
        require(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        require(self.checkpoint_every >= 0, "train.checkpoint_every must be >= 0")
        require(self.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
        require(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip must be > 0, got {self.grad_clip}")
        require(
            self.on_nonfinite in ("stop", "skip"),
            f"train.on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}",
        )
        require(self.sample_every >= 0, "train.sample_every must be >= 0")
        require(self.max_steps is None or self.max_steps >= 1, "train.max_steps must be >= 1")
        require(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes must be > 0")
        require(
            self.precision in ("fp32", "bf16", "auto"),
            f"train.precision must be fp32, bf16 or auto, got {self.precision!r}",
        )


def _name(key: Any) -> str:
    """A key as a message shows it: plain when it is a plain word, else quoted (no newlines)."""
    return key if isinstance(key, str) and key.isidentifier() and len(key) <= 80 else brief(key)


def _one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")


# Settings that only say when to stop, log or save, or where to run: a resumed run
# may change them without leaving the path the original run was on.
RESUME_MAY_CHANGE = frozenset(
    {
        "genlab_version",
        "data.sources",
        "data.data_dir",
        "train.epochs",
        "train.max_steps",
        "train.max_minutes",
        "train.device",
        "train.log_every",
        "train.sample_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.compile",
    }
)


def resume_may_change(key: str) -> bool:
    """Whether a resumed run may change the setting ``key`` (dotted, e.g. ``train.epochs``).

    The one resume policy: the CLI asks it which flags ``--resume`` accepts, and
    :func:`config_differences` which differences between a checkpoint and the config to refuse.
    """
    return any(key == f or key.startswith(f + ".") for f in RESUME_MAY_CHANGE)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: list(d) if isinstance(d, tuple) else d}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings (dotted names) in which two ``RunConfig.to_dict()`` differ in a way resuming cannot allow."""
    a = {k: v for k, v in _flat(saved).items() if not resume_may_change(k)}
    b = {k: v for k, v in _flat(current).items() if not resume_may_change(k)}
    return [
        f"{k} ({a.get(k, 'unset')!r} -> {b.get(k, 'unset')!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


@dataclass
class RunConfig:
    family: str
    preset: str
    model: Any  # the family's config dataclass
    data: DataConfig
    train: TrainConfig
    genlab_version: str = __version__

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()
        self.model.validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "genlab_version": self.genlab_version,
            "family": self.family,
            "preset": self.preset,
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "config") -> RunConfig:
        """Build and validate a run config; any problem is a :class:`ConfigError` naming the key."""
        from .models import get_family  # late: models import config helpers

        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        keys = {"genlab_version", "family", "preset", "model", "data", "train"}
        unknown = sorted(_name(k) for k in set(d) - keys)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("family", "model", "data", "train"):
            if key not in d:
                raise ConfigError(f"{where}: missing key {key!r}")
        for key in ("family", "preset", "genlab_version"):
            if key in d and not isinstance(d[key], str):
                raise ConfigError(f"{where}: {key} must be a string, got {brief(d[key])}")
        for key in ("model", "data", "train"):
            if not isinstance(d[key], dict) or not all(isinstance(k, str) for k in d[key]):
                raise ConfigError(f"{where}: {key} must be a JSON object of settings")
        try:
            family = get_family(d["family"])
            run = cls(
                family=d["family"],
                preset=d.get("preset", "custom"),
                model=config_from_dict(family.config_class, d["model"], f"{where}: model"),
                data=config_from_dict(DataConfig, d["data"], f"{where}: data"),
                train=config_from_dict(TrainConfig, d["train"], f"{where}: train"),
                genlab_version=d.get("genlab_version", "unknown"),
            )
            run.data.validate()
            run.train.validate()
            run.model.validate()
        except ConfigError as e:
            msg = _one_line(str(e))[:1000]
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        except (TypeError, ValueError, OverflowError, RecursionError) as e:
            # A model config's range checks met a value of the wrong type (e.g. a string in a list of widths).
            raise ConfigError(
                f"{where}: a model setting has a value of the wrong type ({_one_line(str(e))[:200]})"
            ) from None
        return run

    def save(self, path: Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """Read and validate ``config.json``: a regular file of at most :data:`~genlab.io.MAX_JSON_BYTES`."""
        from .io import MissingFileError, read_json

        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigError(f"{path.parent}: no such run directory")
        try:
            d = read_json(path, "run config")
        except MissingFileError:
            raise ConfigError(f"{path}: no such file (is this a genlab run directory?)") from None
        except GenlabError as e:  # not a regular file, too large, not JSON: still a bad config
            raise ConfigError(str(e)) from None
        return cls.from_dict(d, where=str(path))
