"""Typed configuration: data, training, and the run that ties them to a model.

A run directory's ``config.json`` is :func:`RunConfig.to_dict` of the run: every
setting resolved, so the directory alone rebuilds its model. Loading refuses
unknown keys and out-of-range values with a message that names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError
from .models.base import config_from_dict, require


@dataclass
class DataConfig:
    dataset: str = "mnist"  # "mnist" | "fashion-mnist"
    split: str = "train"  # MNIST's train split is not on every machine: --split test trains on t10k
    data_dir: str | None = None  # where to look first (else GENLAB_DATA_DIR, cache, /usr/share/datasets)
    sources: dict = field(default_factory=dict)  # filled at run time: file role -> path actually read

    def validate(self) -> None:
        require(self.split in ("train", "test"), f"data.split must be 'train' or 'test', got {self.split!r}")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # per optimiser step, over all processes (the global batch)
    lr: float = 1e-3
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

    def validate(self) -> None:
        require(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        require(math.isfinite(self.lr) and self.lr > 0, f"train.lr must be a positive number, got {self.lr}")
        require(self.seed >= 0, f"train.seed must be >= 0, got {self.seed}")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                f"train.device must be auto, cpu or cuda, got {self.device!r}")
        require(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        require(self.checkpoint_every >= 0, "train.checkpoint_every must be >= 0")
        require(self.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
        require(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip must be > 0")
        require(self.on_nonfinite in ("stop", "skip"), "train.on_nonfinite must be 'stop' or 'skip'")
        require(self.sample_every >= 0, "train.sample_every must be >= 0")
        require(self.max_steps is None or self.max_steps >= 1, "train.max_steps must be >= 1")
        require(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes must be > 0")


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
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "RunConfig":
        from .models import get_family  # late: models import config helpers

        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        unknown = sorted(set(d) - {"genlab_version", "family", "preset", "model", "data", "train"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("family", "model", "data", "train"):
            if key not in d:
                raise ConfigError(f"{where}: missing key {key!r}")
        family = get_family(d["family"])
        run = cls(
            family=d["family"],
            preset=d.get("preset", "custom"),
            model=config_from_dict(family.config_class, d["model"], f"{where}: model"),
            data=config_from_dict(DataConfig, d["data"], f"{where}: data"),
            train=config_from_dict(TrainConfig, d["train"], f"{where}: train"),
            genlab_version=d.get("genlab_version", "unknown"),
        )
        run.validate()
        return run

    def save(self, path: Path) -> None:
        from .checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (is this a genlab run directory?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d, where=str(path))
