"""genlab's Python API: train a model, load a run, save one, in a few calls.

    import genlab

    result = genlab.train("vae", preset="seed", split="test", epochs=1, data_dir="shared/datasets/mnist")
    model = genlab.load(result.run_dir)            # the trained model, in eval mode
    images = model.sample(16)                      # (16, 1, 28, 28) floats in [0, 1]
    z = genlab.encode(model, images)               # models with an encoder (VAE)
    genlab.save(model, "runs/my-copy")             # config.json + model.safetensors, as training writes

The functions are re-exported lazily by ``genlab/__init__.py``: ``import genlab`` stays light (no
torch) and this module imports torch only when a function runs. ``train`` takes the settings the
``genlab train`` command takes and builds its config with the same code (:func:`run_config`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, GenlabError

if TYPE_CHECKING:
    from torch import Tensor

    from .config import RunConfig
    from .models.base import GenerativeModel
    from .training import TrainResult

__all__ = ["decode", "encode", "load", "read_config", "run_config", "save", "train"]


def load(run_dir: str | os.PathLike[str], device: str | None = None) -> GenerativeModel:
    """The trained model of a run directory (``config.json`` + ``model.safetensors``), in eval mode.

    ``run_dir`` may be ``"latest"``: the run ``runs/latest`` points to. ``device``: ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, or ``None``/``"auto"`` (CUDA when present). Without final weights (a
    training that was stopped) the newest checkpoint's weights are used. The run's settings are on
    ``model.run_config`` (a :class:`~genlab.config.RunConfig`), which :func:`save` writes back.

    Every model has ``model.sample(n, labels=None, generator=None)``: ``(n, C, H, W)`` images in
    [0, 1]. What else it can do is declared by the capability protocols of
    :mod:`genlab.models.base`: a ``LatentModel`` (VAE, GAN) has ``sample_latent(n, generator)``
    and ``decode(z, labels=None)``; an ``EncoderModel`` (VAE) also ``encode_latent(x, labels=None)``
    (the posterior mean). :func:`encode` and :func:`decode` call them and say which is missing.
    """
    from .checkpoint import load_run
    from .device import inference_device
    from .runs import resolve_run_dir

    model, run = load_run(resolve_run_dir(run_dir), device=inference_device(device))
    model.run_config = run  # what save() writes back as config.json
    return model


def save(
    model: GenerativeModel,
    run_dir: str | os.PathLike[str],
    *,
    config: RunConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a run directory :func:`load` reads: ``config.json`` and ``model.safetensors``.

    The files are the ones training writes (the same bytes for the same weights). ``config``: the
    run's settings; by default ``model.run_config`` (set by :func:`load`), else the model's own
    config with default data and training settings (preset ``"custom"``). A folder that already
    holds files is refused unless ``overwrite`` (which replaces only genlab runs). Returns the folder.
    """
    from .checkpoint import save_tensors
    from .config import DataConfig, RunConfig, TrainConfig
    from .runs import CONFIG_FILE, MODEL_FILE, claim_run_dir

    run = config if config is not None else getattr(model, "run_config", None)
    if run is None:
        run = RunConfig(model.family, "custom", model.config, DataConfig(), TrainConfig())
    if run.family != model.family or dataclasses.asdict(run.model) != dataclasses.asdict(model.config):
        raise ConfigError(f"save: the config is of another model than the one given ({run.family}/{run.preset})")
    run_dir = Path(run_dir)
    lock = claim_run_dir(run_dir, overwrite)
    try:
        run.save(run_dir / CONFIG_FILE)
        save_tensors(run_dir / MODEL_FILE, model.state_dict(), metadata={"family": run.family, "preset": run.preset})
    except BaseException:
        lock.roll_back()
        raise
    else:
        lock.commit()
    finally:
        lock.release()
    return run_dir


def encode(model: GenerativeModel, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Latent codes ``(B, D)`` of images ``x`` ``(B, C, H, W)`` in [0, 1]: the model's ``encode_latent``.

    Needs an ``EncoderModel`` (a VAE: the posterior mean); a model without an encoder is a
    :class:`~genlab.errors.GenlabError` that says so. Runs without gradients, on the model's device.
    """
    import torch

    from .models.base import EncoderModel

    if not isinstance(model, EncoderModel):
        raise GenlabError(f"a {model.family} model has no encoder (EncoderModel.encode_latent); a VAE has one")
    with torch.inference_mode():
        return model.encode_latent(x.to(model.device), None if labels is None else labels.to(model.device))


def decode(model: GenerativeModel, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Images ``(B, C, H, W)`` in [0, 1] from latent codes ``z`` ``(B, D)``: the model's ``decode``.

    Needs a ``LatentModel`` (VAE, GAN); draw codes with ``model.sample_latent(n, generator)``.
    Runs without gradients, on the model's device.
    """
    import torch

    from .models.base import LatentModel

    if not isinstance(model, LatentModel):
        raise GenlabError(f"a {model.family} model has no latent space to decode (LatentModel.decode)")
    with torch.inference_mode():
        return model.decode(z.to(model.device), None if labels is None else labels.to(model.device))


def read_config(path: str | os.PathLike[str]) -> RunConfig:
    """A run config from a JSON file (a run's own ``config.json`` or one written by hand), checked strictly.

    Any problem (no such file, not JSON, unknown keys, wrong types, out-of-range values) is one
    :class:`~genlab.errors.ConfigError` naming the file and the key.
    """
    from .config import RunConfig
    from .io import MissingFileError, read_json

    try:
        d = read_json(Path(path), "config file")
    except MissingFileError:
        raise ConfigError(f"{path}: no such config file") from None
    except GenlabError as e:  # a folder, a FIFO, too large, not JSON
        raise ConfigError(e.message) from None
    return RunConfig.from_dict(d, where=str(path))


def run_config(
    family: str | None = None,
    *,
    config: RunConfig | str | os.PathLike[str] | None = None,
    preset: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    model: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    skip_bad_images: bool | None = None,
) -> RunConfig:
    """The settings of a new run, resolved as ``genlab train`` resolves them.

    The base is ``config`` (a :class:`~genlab.config.RunConfig` or a JSON file, e.g. a run's own
    ``config.json``) or else the ``preset`` of ``family`` (default ``"seed"``). Then whatever is
    given here overrides it: ``dataset``, ``split``, ``data_dir``, ``model`` fields and ``train``
    fields (:class:`~genlab.config.TrainConfig`). ``data_dir`` is made absolute from the current
    directory, so the run can be resumed from anywhere. The config of a family other than
    ``family``, or a ``preset`` with a ``config``, is a :class:`~genlab.errors.ConfigError`.

    A ``folder:PATH`` dataset (stored with PATH absolute) is decoded here (``image_size``,
    ``skip_bad_images``: :mod:`genlab.folders`), and the model takes its ``image_shape`` and, when
    the folder has class sub-folders, its ``num_classes`` from the images, unless ``model`` sets them.
    """
    from .config import DataConfig, RunConfig, TrainConfig, config_from_dict
    from .models import get_family, get_preset

    if config is not None:
        base = config if isinstance(config, RunConfig) else read_config(config)
        if family is not None and family != base.family:
            raise ConfigError(
                f"the config is of a {base.family} model, not {family}: drop {family} or use another config"
            )
        if preset is not None:
            raise ConfigError("--preset cannot be combined with --config: the config already holds every setting")
        family, preset = base.family, base.preset
        model_cfg, train_cfg = dataclasses.asdict(base.model), dataclasses.asdict(base.train)
        data: dict[str, Any] = {"dataset": base.data.dataset, "split": base.data.split, "data_dir": base.data.data_dir}
        data |= base.data.load_options()
    elif family is None:
        raise ConfigError(
            "say which model to train: genlab train FAMILY [--preset NAME] (see `genlab presets`), "
            "--config FILE, or --resume RUN_DIR"
        )
    else:
        preset = preset or "seed"
        p = get_preset(family, preset)
        model_cfg = dataclasses.asdict(p.model)
        train_cfg = {**dataclasses.asdict(TrainConfig()), **p.train}
        data = {"dataset": "mnist", "split": "train", "data_dir": None}
    model_cfg.update(model or {})
    train_cfg.update(train or {})
    given: dict[str, Any] = {"dataset": dataset, "split": split, "image_size": image_size}
    given |= {"data_dir": None if data_dir is None else os.fspath(data_dir), "skip_bad_images": skip_bad_images}
    if dataset is not None and not dataset.startswith("folder:"):  # a base config's folder settings do not carry over
        data |= {"image_size": None, "skip_bad_images": False}
    data.update({k: v for k, v in given.items() if v is not None})
    if isinstance(data["data_dir"], str):
        # Relative to where the command runs, now: a README's `--data-dir ../shared/...` must not
        # mean another folder when the run is resumed from elsewhere.
        data["data_dir"] = os.path.abspath(os.path.expanduser(data["data_dir"]))
    if isinstance(data["dataset"], str) and data["dataset"].startswith("folder:"):
        _shape_model_to_folder(family, data, model_cfg, explicit=set(model or {}))
    return RunConfig(
        family=family,
        preset=preset,
        model=config_from_dict(get_family(family).config_class, model_cfg, "model"),
        data=config_from_dict(DataConfig, data, "data"),
        train=config_from_dict(TrainConfig, train_cfg, "train"),
    )


def _shape_model_to_folder(family: str, data: dict[str, Any], model_cfg: dict[str, Any], explicit: set[str]) -> None:
    """Store the folder's path absolute and fit the model to its images (shape; classes when labelled)."""
    from .config import DataConfig, config_from_dict
    from .data import load_dataset
    from .folders import FOLDER_PREFIX, folder_root
    from .models import get_family

    data["dataset"] = FOLDER_PREFIX + str(folder_root(data["dataset"]))
    cfg = config_from_dict(DataConfig, data, "data")
    cfg.validate()
    images = load_dataset(cfg.dataset, cfg.split, **cfg.load_options())
    labelled = images.num_classes > 1  # a folder's classes are its sub-folders, and one alone is refused
    if "image_shape" not in explicit:
        model_cfg["image_shape"] = list(images.images.shape[1:])
    if model_cfg.get("conditional") and not labelled:
        raise ConfigError(
            f"the {family} model is conditional (labels) but {folder_root(cfg.dataset)} has no class sub-folders: "
            "put each class's images in a sub-folder of its own, or choose an unconditional preset"
        )
    if labelled and "num_classes" in model_cfg and "num_classes" not in explicit:
        model_cfg["num_classes"] = images.num_classes
    try:
        config_from_dict(get_family(family).config_class, model_cfg, "model").validate()
    except ConfigError as e:  # a size the networks cannot take: say where the size came from
        c, h, w = images.images.shape[1:]
        raise ConfigError(
            f"{e.message} (the images of {folder_root(cfg.dataset)} are {h}x{w} with {c} channel(s); "
            "--image-size N resizes them)"
        ) from None


def train(
    family: str | None = None,
    *,
    preset: str | None = None,
    config: RunConfig | str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    model: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    skip_bad_images: bool | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a model as ``genlab train`` does; returns the :class:`~genlab.training.TrainResult`.

    A new run: ``family`` (``"vae"``, ``"gan"``, ...) with ``preset`` (default ``"seed"``; see
    ``genlab presets``), or a ``config`` file/RunConfig, then ``dataset``, ``split``, ``data_dir``
    and ``out`` (default ``runs/FAMILY-PRESET-DATASET-TIME``) as the flags of the same names.
    ``settings`` are fields of :class:`~genlab.config.TrainConfig` (``epochs``, ``lr``,
    ``batch_size``, ``max_steps``, ``max_minutes``, ``seed``, ``device``, ...) or of the family's
    model config (``latent_dim``, ...); ``model={...}`` sets model fields explicitly.

    ``resume=RUN_DIR`` (or ``"latest"``) continues a run from its newest checkpoint; then only the
    settings the resume policy allows (``epochs``, ``max_steps``, ``max_minutes``, ``device``,
    logging and checkpoint intervals, ``compile``) may be given.
    """
    from .config import RunConfig, TrainConfig, resume_may_change
    from .models import get_family
    from .runs import CONFIG_FILE, resolve_run_dir
    from .training import train as train_run

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if resume is not None:
        given: dict[str, Any] = {"family": family, "preset": preset, "config": config, "dataset": dataset}
        given["split"] = split
        given |= {"data_dir": data_dir, "out": out, "model": model, "overwrite": overwrite or None}
        given |= {"image_size": image_size, "skip_bad_images": skip_bad_images}
        fixed = sorted(k for k, v in given.items() if v is not None)
        fixed += sorted(k for k in settings if k not in train_fields or not resume_may_change(f"train.{k}"))
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change a run being resumed (or start a new run)")
        run_dir = resolve_run_dir(resume)
        run = RunConfig.load(run_dir / CONFIG_FILE)
        run.train = dataclasses.replace(run.train, **settings)
        return train_run(run, run_dir, resume=True, quiet=quiet)

    # Model fields may be given flat, as the CLI's model flags are; a name of both kinds must be said.
    if config is not None and not isinstance(config, RunConfig):
        config = read_config(config)
    model_overrides = dict(model or {})
    train_overrides = {}
    if settings:
        base_family = family or (config.family if config is not None else None)
        if base_family is None:
            raise ConfigError("say which model to train: genlab.train(FAMILY, ...) or genlab.train(config=FILE)")
        model_fields = {f.name for f in dataclasses.fields(get_family(base_family).config_class)}
        for key, value in settings.items():
            if key in train_fields and key in model_fields:
                raise ConfigError(
                    f"{key} is a training and a model setting: pass model={{{key!r}: ...}} for the model's"
                )
            if key in model_fields:
                model_overrides[key] = value
            elif key in train_fields:
                train_overrides[key] = value
            else:
                raise ConfigError(
                    f"train: unknown setting {key}; valid: the training settings {', '.join(sorted(train_fields))} "
                    f"and the {base_family} model's {', '.join(sorted(model_fields))}"
                )
    run = run_config(
        family,
        config=config,
        preset=preset,
        dataset=dataset,
        split=split,
        data_dir=data_dir,
        model=model_overrides,
        train=train_overrides,
        image_size=image_size,
        skip_bad_images=skip_bad_images,
    )
    return train_run(run, Path(out) if out is not None else None, overwrite=overwrite, quiet=quiet)
