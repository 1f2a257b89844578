"""Evaluation: feature extractors, reference statistics, ``genlab evaluate`` / ``compare`` / ``train-classifier``.

The metric maths lives in :mod:`genlab.metrics` (pure functions on arrays); this module
supplies what the maths needs and runs it on a user's samples:

- feature extractors: genlab's shipped per-dataset CNN (``genlab/weights/<dataset>-cnn``), a
  CNN trained on an image folder (``genlab train-classifier --dataset folder:PATH``, passed
  as ``--classifier``) or, with ``--inception PATH``, pytorch-fid's Inception-v3. Every
  number names the extractor that produced it, because FIDs from different networks are not
  comparable; a folder's classifier is checked to have been trained on the very images the
  run is compared with (the folder's content key, size and channels);
- reference statistics of the real data (mean, covariance and a feature sample for
  KID/precision-recall), cached in ``$XDG_CACHE_HOME/genlab/stats`` per dataset, split,
  extractor weights and image content;
- sample loading from a run directory, a ``.npy`` array or a folder of PNGs, with one
  clear :class:`~genlab.errors.GenlabError` per kind of bad input.

``metrics.json`` and the HTML pages are written by :mod:`genlab.report`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .argtypes import bounded_int, output_path, seed
from .errors import ConfigError, DataError, GenlabError
from .folders import is_folder_dataset

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EXTRACTOR_VERSION = 1  # bump when the shipped weights change: it is part of every extractor name
MNIST_FALLBACK_TRAIN = 8000  # test images used to train a classifier when no train split exists


def shipped_classifier_path(dataset: str) -> Path:
    """Where the package keeps the classifier for ``dataset`` (safetensors; JSON beside it)."""
    return WEIGHTS_DIR / f"{dataset}-cnn.safetensors"


def file_label(dataset: str) -> str:
    """``dataset`` as a piece of a file name: ``folder:/a/my icons`` -> ``folder-my-icons``."""
    import re

    if is_folder_dataset(dataset):
        dataset = "folder-" + Path(dataset.removeprefix("folder:").rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-") or "dataset"


def folder_key(test) -> str:
    """The content key of a folder dataset's split (the name of the cache it was read from: see
    :attr:`genlab.folders.FolderData.key`)."""
    return Path(test.sources["cache"]).stem


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- training the shipped classifiers -------------------------------------------------------
def train_dataset_classifier(
    dataset: str,
    *,
    epochs: int = 3,
    data_dir: str | None = None,
    out: Path,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    max_steps: int | None = None,
    batch_size: int = 128,
    image_size: int | None = None,
    skip_bad_images: bool = False,
) -> dict[str, Any]:
    """Train genlab's CNN on ``dataset`` and save it to ``out`` (+ ``.json``); returns the metadata.

    Trains on the train split and measures accuracy on the whole test split. When the
    train split is missing (MNIST in some installations) it trains on test[0:8000] and
    measures on test[8000:10000], and the metadata says so in ``trained_on``/``accuracy_on``.
    A ``folder:PATH`` dataset goes to :func:`train_folder_classifier` (where ``image_size`` and
    ``skip_bad_images`` apply). ``max_steps`` stops training after that many batches.
    """
    if is_folder_dataset(dataset):
        return train_folder_classifier(
            dataset,
            image_size=image_size,
            skip_bad_images=skip_bad_images,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            out=out,
            seed=seed,
            device=device,
            log=log,
        )
    from .data import load_dataset
    from .metrics.classifier import save_classifier

    test = load_dataset(dataset, "test", data_dir=data_dir)
    try:
        train = load_dataset(dataset, "train", data_dir=data_dir, download=False)
        x_train, y_train = train.images, train.labels
        x_test, y_test = test.images, test.labels
        trained_on, accuracy_on = f"{dataset} train", f"{dataset} test"
    except DataError:
        k = MNIST_FALLBACK_TRAIN
        if len(test) <= k:
            raise
        log(f"no {dataset} train split found: training on test[0:{k}], measuring on test[{k}:{len(test)}]")
        x_train, y_train = test.images[:k], test.labels[:k]
        x_test, y_test = test.images[k:], test.labels[k:]
        trained_on, accuracy_on = f"{dataset} test[0:{k}]", f"{dataset} test[{k}:{len(test)}]"
    model, run = _fit_classifier(
        x_train,
        y_train,
        x_test,
        y_test,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    meta = {
        "extractor": f"genlab-cnn-{dataset}-v{EXTRACTOR_VERSION}",
        "dataset": dataset,
        "trained_on": trained_on,
        "accuracy_on": accuracy_on,
        **run,
    }
    save_classifier(model, out, meta)
    log(
        f"{meta['extractor']}: test accuracy {run['test_accuracy']:.4f} on {accuracy_on} after {epochs} epochs "
        f"({run['train_seconds']:.0f}s) -> {out}"
    )
    return meta


def _fit_classifier(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, device: str, **recipe: Any
) -> tuple[Any, dict[str, Any]]:
    """Train genlab's CNN with ``recipe`` (:func:`~genlab.metrics.classifier.train_classifier`'s
    epochs, max_steps, batch_size, seed, config) and score it: (model, what the weights' sidecar
    records of the run: accuracy, sizes, epochs, seed, time, device and torch)."""
    import torch

    from .metrics.classifier import accuracy, train_classifier

    t0 = time.perf_counter()
    model = train_classifier(x_train, y_train, device=device, log_every=100, **recipe)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, x_test, y_test, device=device)
    return model, {
        "test_accuracy": round(acc, 4),
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "epochs": int(recipe["epochs"]),
        "seed": int(recipe["seed"]),
        "train_seconds": round(seconds, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def train_folder_classifier(
    dataset: str,
    *,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    epochs: int = 3,
    max_steps: int | None = None,
    batch_size: int = 128,
    out: Path,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train genlab's CNN on a labelled image folder's train split; save it to ``out`` (+ ``.json``).

    The network takes its channels and size from the decoded images (``image_size`` as in
    ``genlab train --image-size``) and has one class per sub-folder; accuracy is measured on the
    folder's held-out split. The sidecar records what ``genlab evaluate`` checks before it uses
    the network for a run: the folder's content key (:func:`folder_key`), ``image_size``,
    ``skip_bad_images``, the class names, and (in the config) channels, height and width.
    """

    from .data import load_dataset
    from .folders import folder_classes, folder_root
    from .metrics.classifier import ClassifierConfig, save_classifier

    root = folder_root(dataset)
    classes = folder_classes(root)  # only the tree is listed: an unlabelled folder is refused before decoding
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders, so a classifier has no classes to learn: put each class's "
            f"images in a sub-folder of its own (e.g. {root.name}/cats/*.png, {root.name}/dogs/*.png), "
            "or evaluate runs of these images with --inception FILE"
        )
    train = load_dataset(dataset, "train", image_size=image_size, skip_bad_images=skip_bad_images)
    test = load_dataset(dataset, "test", image_size=image_size, skip_bad_images=skip_bad_images)
    c, h, w = (int(d) for d in train.images.shape[1:])
    try:
        config = ClassifierConfig(num_classes=len(classes), channels=c, height=h, width=w)
    except ValueError as e:
        raise ConfigError(f"{root}: genlab's classifier cannot read these images: {e}") from None
    log(f"training on {len(train)} images of {root.name} ({c}x{h}x{w}, {len(classes)} classes)")
    model, run = _fit_classifier(
        train.images.numpy(),
        train.labels.numpy(),
        test.images.numpy(),
        test.labels,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
        config=config,
    )
    meta = {
        "extractor": f"genlab-cnn-{file_label(dataset)}-v{EXTRACTOR_VERSION}",
        "dataset": f"folder:{root}",
        "folder_key": folder_key(test),
        "image_size": image_size,
        "skip_bad_images": skip_bad_images,
        "class_names": list(classes),
        "trained_on": f"{root.name} train ({len(train)} images)",
        "accuracy_on": f"{root.name} held-out ({len(test)} images)",
        **run,
        "max_steps": max_steps,
        "batch_size": int(batch_size),
    }
    save_classifier(model, out, meta)
    log(
        f"{meta['extractor']}: held-out accuracy {run['test_accuracy']:.4f} on {len(test)} images "
        f"({run['train_seconds']:.0f}s) -> {out}"
    )
    return meta


# -- feature extractors -------------------------------------------------------------------------
@dataclass
class Extractor:
    """A feature network plus the name every number it produces is reported under."""

    name: str  # e.g. "genlab-cnn-fashion-mnist-v1", "inception-v3-pt_inception-2015-12-05"
    sha256: str  # of the weights file: part of the reference-statistics cache key
    path: str
    features: Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) float32 in [0, 1] -> (N, D) float64
    probs: Callable[[np.ndarray], np.ndarray] | None = None  # -> (N, C) softmax; classifiers only
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "path": self.path,
            **{
                k: self.meta[k]
                for k in ("input_shape", "dataset", "folder_key", "trained_on", "accuracy_on", "test_accuracy")
                if k in self.meta
            },
        }


def _check_regular(path: Path, max_bytes: int, what: str) -> None:
    """Refuse at once a ``path`` that is not a regular file of at most ``max_bytes`` (missing is left to the loader)."""
    from .io import MissingFileError, open_regular

    try:
        fd, _ = open_regular(path, max_bytes, what)
    except MissingFileError:
        return
    os.close(fd)


def needs_classifier_message(dataset: str) -> str:
    """What to do when a folder dataset's run is evaluated without a feature network for its images."""
    return (
        f"genlab's shipped classifiers read 28x28 grayscale mnist and fashion-mnist images, not those of "
        f"{dataset}: train a classifier on that folder with `genlab train-classifier --dataset {dataset} "
        "[--image-size N] --out FILE.safetensors` (it needs one sub-folder per class) and pass --classifier "
        "FILE.safetensors, or pass --inception FILE (pytorch-fid's Inception-v3 weights)"
    )


def classifier_extractor(dataset: str | None, path: str | Path | None = None, *, device: str = "cpu") -> Extractor:
    """genlab's CNN for ``dataset``: the shipped weights, or ``path`` (from ``genlab train-classifier``).

    ``dataset`` None (``genlab fid`` given only ``--classifier``): ``path`` is used whatever it was
    trained on. A ``folder:PATH`` dataset needs ``path``, a classifier trained on a folder (that it
    is *this* folder is :func:`check_classifier_fits`' job, once the folder's images are loaded).
    """
    from .metrics.classifier import extract_features, load_classifier, predict_proba

    folder = dataset is not None and is_folder_dataset(dataset)
    if path is None and (dataset is None or folder):
        raise ConfigError(needs_classifier_message(dataset or "these images"))
    weights = Path(path) if path else shipped_classifier_path(str(dataset))
    for f in (weights, weights.with_suffix(".json")):
        _check_regular(f, 512 * 2**20, "classifier file")  # a FIFO or a device here must not hang evaluate
    if not weights.is_file():
        raise GenlabError(
            f"no classifier weights for {dataset} at {weights}; train them with "
            f"`genlab train-classifier --dataset {dataset} --out FILE.safetensors` "
            f"and pass --classifier FILE.safetensors"
        )
    model, meta = load_classifier(weights, device=device)
    trained_on = meta.get("dataset", dataset)
    if folder and not isinstance(meta.get("folder_key"), str):
        raise ConfigError(
            f"classifier {weights} was trained on {trained_on}, not on the images of {dataset}; "
            f"train one on them with `genlab train-classifier --dataset {dataset} [--image-size N]`"
        )
    if dataset is not None and not folder and trained_on != dataset:
        raise ConfigError(
            f"classifier {weights} was trained on {trained_on}, but the samples are "
            f"compared with {dataset}; pass --classifier for a {dataset} classifier"
        )
    sha = file_sha256(weights)
    name = meta.get("extractor") or f"genlab-cnn-{file_label(str(trained_on))}-custom"
    if isinstance(meta.get("folder_key"), str):
        name = f"{name}-{sha[:8]}"  # no shipped network to pass for: the hash tells two trainings apart
    elif path and weights.resolve() != shipped_classifier_path(str(trained_on)).resolve():
        name = f"{name}-custom-{sha[:8]}"  # a retrained network must not pass for the shipped one
    meta = {**meta, "input_shape": list(model.config.input_shape), "num_classes": model.config.num_classes}
    return Extractor(
        name=name,
        sha256=sha,
        path=str(weights),
        meta=meta,
        features=lambda x: extract_features(model, x, device=device),
        probs=lambda x: predict_proba(model, x, device=device),
    )


def inception_extractor(path: str | Path, *, device: str = "cpu") -> Extractor:
    """pytorch-fid's FID Inception-v3 (pool3, 2048-d) from its weights file."""
    from .metrics.inception import inception_features, load_fid_inception

    weights = Path(path)
    _check_regular(weights, 512 * 2**20, "Inception weights file")
    model = load_fid_inception(weights, device=device)
    stem = weights.stem
    tag = "pt_inception-2015-12-05" if stem.startswith("pt_inception-2015-12-05") else stem
    return Extractor(
        name=f"inception-v3-{tag}",
        sha256=file_sha256(weights),
        path=str(weights),
        features=lambda x: inception_features(model, x, device=device),
    )


# -- reference statistics --------------------------------------------------------------------
MAX_REFERENCE_FEATURES = 10_000  # rows kept for KID / precision-recall / KS (the whole MNIST test split)


def stats_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/genlab/stats`` (``~/.cache/genlab/stats`` when unset or relative)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "genlab" / "stats"


def reference_statistics(
    extractor: Extractor, images: np.ndarray, *, dataset: str, split: str, cache: bool = True
) -> dict[str, np.ndarray]:
    """``{"mu", "sigma", "features"}`` of real ``images`` (uint8 (N, 1, 28, 28)) in ``extractor``'s space.

    ``mu``/``sigma`` use every image; ``features`` keeps the first
    :data:`MAX_REFERENCE_FEATURES` rows (row i belongs to image i). The result is cached
    under a name made of the dataset, split, extractor name, the weights' hash and the
    images' hash, so new weights or different files never reuse stale numbers.
    """
    import torch

    from .checkpoint import load_tensors, save_tensors
    from .errors import CheckpointError
    from .metrics import feature_statistics

    content = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:12]
    label = file_label(f"{dataset}-{split}-{extractor.name}")
    path = stats_cache_dir() / f"{label}-{extractor.sha256[:12]}-{content}.safetensors"
    if cache and path.is_file():
        try:
            t = load_tensors(path)
            return {k: t[k].double().numpy() for k in ("mu", "sigma", "features")}
        except (CheckpointError, KeyError):
            pass  # damaged cache file: recompute and replace it below
    feats = extractor.features(images)
    mu, sigma = feature_statistics(feats)
    kept = feats[:MAX_REFERENCE_FEATURES]
    if cache:
        try:
            save_tensors(
                path,
                {
                    "mu": torch.from_numpy(mu),
                    "sigma": torch.from_numpy(sigma),
                    "features": torch.from_numpy(kept.astype(np.float32)),
                },
                metadata={
                    "dataset": dataset,
                    "split": split,
                    "extractor": extractor.name,
                    "extractor_sha256": extractor.sha256,
                    "n": len(images),
                },
            )
        except GenlabError:
            pass  # an unwritable cache only costs time
    return {"mu": mu, "sigma": sigma, "features": kept.astype(np.float32).astype(np.float64)}


# -- loading samples -------------------------------------------------------------------------
# Samples are a stranger's files as often as genlab's own: each is checked to be a regular file, a
# .npy header is checked against the file's size before any data is read, a PNG's size before it
# is decoded, and no more images are read than will be scored.
MAX_SAMPLE_IMAGES = 1_000_000  # images read from one .npy or folder (float32: 3.1 GB); -n reads fewer
MAX_PNG_BYTES = 2**20  # one sample PNG (a 28x28 PNG is a few hundred bytes, a 64x64 RGB one ~12 KB)
MAX_PNG_PIXELS = 2**22  # one sample PNG of any size (2048 x 2048): checked before it is decoded
GRAYSCALE_28 = (1, 28, 28)  # (C, H, W) that mnist, fashion-mnist and their classifiers read


class SampleShapeError(GenlabError):
    """Samples whose channel count or size is not the one they are scored at."""


_NPY_READ_CHUNK = 2**24  # bytes per read of a .npy's data


def load_samples(
    path: str | Path,
    n: int | None = None,
    *,
    command: str = "genlab evaluate",
    shape: tuple[int, int, int] | None = GRAYSCALE_28,
) -> np.ndarray:
    """The first ``n`` (default all) images of a ``.npy`` array or a folder of PNGs as float32 (N, C, H, W) in [0, 1].

    ``shape`` is the (C, H, W) the images must have (default 1x28x28, what mnist's classifiers
    read); None takes any size, 1 or 3 channels, the same for every image. ``.npy``: float in
    [0, 1] or uint8, shape (N, C, H, W), or (N, H, W) for grayscale; nothing is ever unpickled.
    PNGs: 8- or 16-bit, converted to grayscale (C = 1) or RGB (C = 3; alpha composited on white as
    in :mod:`genlab.folders`), in file-name order. A wrong shape raises :class:`SampleShapeError`.
    At most :data:`MAX_SAMPLE_IMAGES` images are read at once.
    """
    from .metrics import check_images

    path = Path(path)
    if path.is_dir():
        arr = _load_png_folder(path, n, shape)
    elif path.suffix.lower() == ".npy":
        arr = _load_npy(path, n, shape)
    elif path.exists():
        raise GenlabError(f"{path}: expected a run directory, a .npy file or a folder of PNG images")
    else:
        raise GenlabError(f"{path}: no such file or directory")
    if shape is None:
        return check_images(arr, path.name, metric=command, size=None, channels=(1, 3))
    return check_images(arr, path.name, metric=command, size=shape[1:], channels=shape[0])


def _shape_text(shape: tuple[int, int, int] | None) -> str:
    """How the accepted array shapes read in a message."""
    if shape is None:
        return "(N, C, H, W) with C 1 or 3, or (N, H, W) (grayscale)"
    c, h, w = shape
    return f"(N, 1, {h}, {w}) or (N, {h}, {w}) (grayscale)" if c == 1 else f"(N, {c}, {h}, {w})"


def _too_many(path: Path, count: int) -> GenlabError:
    return GenlabError(
        f"{path} holds {count:,} images, more than the {MAX_SAMPLE_IMAGES:,} genlab evaluates at once; "
        f"pass -n {MAX_SAMPLE_IMAGES} (or fewer) to use the first ones"
    )


def _load_npy(path: Path, n: int | None, want: tuple[int, int, int] | None = GRAYSCALE_28) -> np.ndarray:
    """A .npy file's first ``n`` images (uint8, or float32 from any float dtype), its header checked first."""
    import math

    from .io import MissingFileError, open_regular

    try:
        fd, size = open_regular(path, 2**62, "sample array")  # no size cap: only the images scored are read
    except MissingFileError:
        raise GenlabError(f"{path}: no such file") from None
    with os.fdopen(fd, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not one genlab reads (1.0 or 2.0)")
        except OSError as e:
            raise GenlabError(f"{path}: cannot read ({e.strerror or e})") from None
        except Exception as e:  # noqa: BLE001  numpy parses the header with tokenize and ast: a hostile
            # header raises ValueError, SyntaxError, tokenize.TokenError, RecursionError, ... all the same refusal
            raise GenlabError(f"{path}: not a readable .npy array ({' '.join(str(e).split())[:200]})") from None
        if dtype.hasobject:
            raise GenlabError(
                f"{path} holds Python objects (a pickled object array); genlab never "
                "unpickles files: save a numeric array (float32 in [0, 1] or uint8)"
            )
        if dtype.names is not None or not (dtype == np.uint8 or dtype.kind == "f"):
            raise GenlabError(f"{path} has dtype {dtype}; save float in [0, 1] or uint8 in [0, 255]")
        shape = tuple(int(d) for d in shape)
        channels = (1, 3) if want is None else (want[0],)
        if not ((len(shape) == 3 and 1 in channels) or (len(shape) == 4 and shape[1] in channels)):
            raise SampleShapeError(f"{path} has shape {shape}; it must have shape {_shape_text(want)}")
        if want is not None and shape[-2:] != want[1:]:
            raise SampleShapeError(
                f"{path} holds {shape[-2]}x{shape[-1]} images; they must be {want[1]}x{want[2]} images"
            )
        if shape[0] == 0:
            raise GenlabError(f"{path} holds no images (shape {shape})")
        declared = math.prod(shape) * dtype.itemsize
        held = size - f.tell()
        if held != declared:
            raise GenlabError(
                f"{path}: its header declares shape {shape} of {dtype}, i.e. {declared:,} bytes of data, "
                f"but the file holds {held:,}; it is {'truncated' if held < declared else 'damaged'}"
            )
        count = shape[0] if n is None else min(n, shape[0])
        if count > MAX_SAMPLE_IMAGES or (fortran and shape[0] > MAX_SAMPLE_IMAGES):
            raise _too_many(path, shape[0])
        out = np.empty((count, *shape[1:]), dtype=np.uint8 if dtype == np.uint8 else np.float32)
        try:
            if fortran:  # the images' axis varies fastest: all of them must be read to have any
                data = np.frombuffer(_read_full(f, declared, path), dtype=dtype).reshape(shape, order="F")
                out[:] = data[:count]
            else:
                per_image = declared // shape[0]
                step = max(1, _NPY_READ_CHUNK // per_image)
                for lo in range(0, count, step):
                    hi = min(count, lo + step)
                    buf = _read_full(f, (hi - lo) * per_image, path)
                    out[lo:hi] = np.frombuffer(buf, dtype=dtype).reshape(hi - lo, *shape[1:])
        except OSError as e:
            raise GenlabError(f"{path}: cannot read ({e.strerror or e})") from None
    return out


def _read_full(f, nbytes: int, path: Path) -> bytes:
    data = f.read(nbytes)
    if len(data) != nbytes:  # the file shrank while it was read
        raise GenlabError(f"{path}: the file ended early while it was read")
    return data


def _load_png_folder(folder: Path, n: int | None, want: tuple[int, int, int] | None = GRAYSCALE_28) -> np.ndarray:
    """The folder's first ``n`` PNGs by file name as float32 (N, C, H, W) in [0, 1], of shape ``want``
    (None: the first image's size; RGB when any image has colour, grayscale ones then repeated)."""
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    except OSError as e:
        raise GenlabError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    if not files:
        hint = "" if os.path.lexists(folder / "config.json") else " (and no config.json, so it is not a run directory)"
        raise GenlabError(f"{folder} contains no .png images{hint}")
    if n is not None:
        files = files[:n]
    if len(files) > MAX_SAMPLE_IMAGES:
        raise _too_many(folder, len(files))
    if want is not None:
        out = np.empty((len(files), *want), dtype=np.float32)
        for i, f in enumerate(files):
            out[i] = _read_png(f, (want[2], want[1]), want[0])
        return out
    first = _read_png(files[0], None, None)  # sets the size; each of the others must have it
    size = (first.shape[2], first.shape[1])
    images = [first] + [_read_png(f, size, None, first=files[0].name) for f in files[1:]]
    if any(im.shape[0] == 3 for im in images):
        images = [np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images]
    return np.stack(images)


_GRAY_PNG_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")


def _read_png(
    f: Path, size: tuple[int, int] | None = (28, 28), channels: int | None = 1, *, first: str = ""
) -> np.ndarray:
    """One PNG as float32 (C, H, W) in [0, 1]: 8-bit images / 255, 16-bit ones / 65535.

    ``size`` (W, H) is the size it must have (None: any, up to :data:`MAX_PNG_PIXELS`); ``channels``
    1 converts it to grayscale, 3 to RGB, None keeps grayscale images grey and makes the others RGB.
    """
    import io
    import warnings

    from PIL import Image

    from .io import MissingFileError, read_bytes_capped

    try:
        data = read_bytes_capped(f, MAX_PNG_BYTES, "sample image")
    except MissingFileError:  # deleted since the folder was listed
        raise GenlabError(f"{f}: no such file (it was removed while the folder was read)") from None
    want = size
    pixels: np.ndarray | None = None
    top = 255.0
    try:
        with warnings.catch_warnings():
            # a picture over Pillow's pixel limit warns (and at twice the limit raises): both are refusals
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                size, mode = im.size, im.mode
                # nothing is decoded before the size is known to be right
                if size == want or (want is None and size[0] * size[1] <= MAX_PNG_PIXELS):
                    grey = mode in _GRAY_PNG_MODES
                    c = channels or (1 if grey else 3)
                    if mode.startswith("I") and c == 1:  # 16-bit grayscale ("I;16", "I;16B", or "I" in older Pillow)
                        pixels = np.asarray(im).astype(np.float32)
                        top = 65535.0
                    elif c == 1:
                        pixels = np.asarray(im if mode == "L" else im.convert("L")).astype(np.float32)
                    else:
                        pixels = _rgb_on_white(im).transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
    except Exception as e:  # noqa: BLE001  Pillow raises many kinds (OSError, ValueError, SyntaxError,
        # DecompressionBombError, struct.error, ...) on damaged or hostile files; each is the same refusal
        raise GenlabError(f"{f}: not a readable PNG image ({' '.join(str(e).split())[:200]})") from None
    if pixels is None:
        if want is None:
            raise SampleShapeError(f"{f}: {size[0]}x{size[1]} is more pixels than genlab reads ({MAX_PNG_PIXELS:,})")
        like = f" (as {first} is)" if first else ""
        raise SampleShapeError(f"{f}: images must be {want[0]}x{want[1]}{like}, this one is {size[0]}x{size[1]}")
    if pixels.shape[-2:] != (size[1], size[0]) or pixels.min() < 0 or pixels.max() > top:
        raise GenlabError(f"{f}: a {mode} PNG genlab cannot read as {'grayscale' if pixels.ndim == 2 else 'RGB'}")
    out: np.ndarray = (pixels if pixels.ndim == 3 else pixels[None]) / top
    return out


def _rgb_on_white(im) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB, alpha composited on white (as :mod:`genlab.folders` does)."""
    from PIL import Image

    from .folders import BACKGROUND

    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return np.asarray(im.convert("RGB"))


# -- evaluation ------------------------------------------------------------------------------
# Every metric `genlab evaluate` knows is one @metric-decorated function below: its name (what
# --metrics takes), the fewest samples it can score, whether it runs once per feature network,
# where its rows go in the summary, and a function from an EvalContext (the inputs metrics share,
# computed once and only when asked for) to summary rows. Adding a metric touches only that function.
DEFAULT_N = 10_000

Row = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``compute(ctx, extractor)`` returns its summary rows (and fills ``ctx.details``)."""

    name: str
    compute: Callable[[EvalContext, Extractor], list[Row]]
    rank: int  # position of its rows in the summary (ascending): metrics.json keeps one stable order
    per_extractor: bool = False  # True: once per feature network (classifier, then --inception); else once
    min_samples: int = 10


METRIC_REGISTRY: dict[str, Metric] = {}  # in the order `--metrics` lists them


def metric(name: str, *, rank: int, per_extractor: bool = False, min_samples: int = 10):
    """Register the decorated ``compute(ctx, extractor) -> rows`` as the metric ``name``."""

    def register(compute: Callable[[EvalContext, Extractor], list[Row]]):
        if name in METRIC_REGISTRY:
            raise ValueError(f"metric {name!r} is registered twice")
        METRIC_REGISTRY[name] = Metric(name, compute, rank, per_extractor, min_samples)
        return compute

    return register


def _row(key: str, label: str, value: Any, better: str, extractor: str | None, explain: str, **extra: Any) -> Row:
    return {
        "key": key,
        "label": label,
        "value": value,
        "better": better,
        "extractor": extractor,
        "explain": explain,
        **extra,
    }


@dataclass
class Features:
    """Samples and real images in one extractor's space."""

    samples: np.ndarray  # (N, D) features of the evaluated samples
    reference: dict[str, np.ndarray]  # reference_statistics(): "mu", "sigma", "features" of the test split
    subset: np.ndarray  # the reference features of the EvalContext's ref_idx images: KID, PR and KS use these


class EvalContext:
    """What the metrics of one evaluation share; the costly parts are computed on first use, once.

    ``ref_idx`` (the real images KID, precision/recall and KS compare with) is drawn from
    ``rng`` up front, so the draws that follow (memorisation's held-out subset) are the same
    whichever metrics run.
    """

    def __init__(
        self,
        x: np.ndarray,
        test,
        *,
        dataset: str,
        seed: int,
        cnn: Extractor,
        train_split: str,
        data_dir: str | None,
        notes: list[str],
        say: Callable[[str], None],
        data_options: dict[str, Any] | None = None,
    ):
        self.x, self.test, self.dataset, self.seed = x, test, dataset, seed
        self.cnn, self.train_split, self.data_dir, self.notes, self.say = cnn, train_split, data_dir, notes, say
        self.data_options = dict(data_options or {})  # a folder's image_size / skip_bad_images, for its train split
        self.real_u8 = test.images.numpy()  # (R, C, H, W) uint8
        self.rng = np.random.default_rng(seed)
        n_ref = min(len(self.real_u8), MAX_REFERENCE_FEATURES)
        self.ref_idx = np.sort(self.rng.choice(n_ref, min(len(x), len(self.real_u8)), replace=False))
        self.details: dict[str, Any] = {}  # metric details for metrics.json, in the order metrics ran
        self.pairs: tuple[np.ndarray, np.ndarray] | None = None  # for the report: closest samples, training images
        self._features: dict[str, Features] = {}
        self._probs: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.x)

    def features(self, ext: Extractor) -> Features:
        """Sample and reference features in ``ext``'s space (the reference from the stats cache)."""
        if ext.name not in self._features:
            self.say(f"features: {ext.name}")
            ref = reference_statistics(ext, self.real_u8, dataset=self.dataset, split=self.test.split)
            self._features[ext.name] = Features(ext.features(self.x), ref, ref["features"][self.ref_idx])
        return self._features[ext.name]

    @property
    def probs(self) -> np.ndarray:
        """The classifier's class probabilities of the samples, (N, C)."""
        if self._probs is None:
            if self.cnn.probs is None:  # genlab's classifiers always have them; a hand-made Extractor may not
                raise GenlabError(f"{self.cnn.name} gives no class probabilities: choose other --metrics")
            self._probs = self.cnn.probs(self.x)
        return self._probs

    def suffix(self, ext: Extractor) -> str:
        """Key suffix of a row measured with ``ext``: none for the classifier, so its keys stay short."""
        return "" if ext is self.cnn else "_inception"


# -- the metrics --------------------------------------------------------------------------------
@metric("fid", rank=1, per_extractor=True)
def _fid(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import feature_statistics, frechet_distance

    feats = ctx.features(ext)
    mu, sigma = feature_statistics(feats.samples)
    value = frechet_distance(mu, sigma, feats.reference["mu"], feats.reference["sigma"])
    return [
        _row(
            "fid" + ctx.suffix(ext),
            "FID",
            value,
            "lower",
            ext.name,
            "Fréchet distance between Gaussians fitted to real and sample features; 0 when "
            "means and covariances match. Biased upwards at small n: compare at equal n.",
        )
    ]


@metric("kid", rank=2, per_extractor=True)
def _kid(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import kernel_inception_distance

    feats = ctx.features(ext)
    kid = kernel_inception_distance(feats.samples, feats.subset, n_subsets=100, subset_size=1000, seed=ctx.seed)
    ctx.details["kid" + ctx.suffix(ext)] = {**kid, "extractor": ext.name}
    # Inception KIDs are ~1e-3..1e-1, so papers print them x10^3; the CNN's unnormalised 128-d
    # features give KIDs of order 1..1000 already, which a further x10^3 would only blow up.
    scaled = ext is not ctx.cnn
    return [
        _row(
            "kid" + ctx.suffix(ext),
            "KID",
            kid["mean"],
            "lower",
            ext.name,
            "Unbiased squared MMD between real and sample features (cubic kernel), averaged "
            "over subsets; about 0 (can be slightly negative) when the distributions match."
            + (" Shown x10^3 as papers report it; metrics.json's value is the raw MMD^2." if scaled else ""),
            std=kid["std"],
            **({"display_scale": 1000, "unit": "×10³"} if scaled else {}),
        )
    ]


@metric("is", rank=4)
def _inception_score(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics.inception_score import inception_score

    score = inception_score(ctx.probs, splits=10)
    ctx.details["is"] = {**score, "extractor": ctx.cnn.name}
    return [
        _row(
            "is",
            "Inception Score",
            score["mean"],
            "higher",
            ctx.cnn.name,
            "exp(E KL(p(y|x) || p(y))) from the classifier: confident and varied class "
            "predictions; from 1 to the number of classes.",
            std=score["std"],
        )
    ]


PRDC_ROWS = (  # (key, label, better, explanation) of the four numbers `pr` reports
    (
        "precision",
        "precision",
        "higher",
        "fraction of samples that fall inside the real data's k-NN manifold: fidelity (0..1).",
    ),
    ("recall", "recall", "higher", "fraction of real images inside the samples' k-NN manifold: diversity (0..1)."),
    (
        "density",
        "density",
        "target:1",
        "how many real neighbourhoods contain each sample, "
        "normalised: about 1 for real data; far below = off-manifold, far above = crowding "
        "into dense regions.",
    ),
    (
        "coverage",
        "coverage",
        "higher",
        "fraction of real images with a sample nearby: diversity that ignores outlying samples (0..1).",
    ),
)


@metric("pr", rank=3, per_extractor=True)
def _precision_recall(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import prdc

    feats = ctx.features(ext)
    suffix = ctx.suffix(ext)
    pr = prdc(feats.subset, feats.samples, k=5)
    ctx.details["pr" + suffix] = {**pr, "extractor": ext.name, "n_real": len(feats.subset)}
    return [_row(key + suffix, label, pr[key], better, ext.name, text) for key, label, better, text in PRDC_ROWS]


@metric("ks", rank=6)
def _ks(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import ks_tests

    feats = ctx.features(ctx.cnn)
    ks = ks_tests(ctx.real_u8[ctx.ref_idx], ctx.x, real_features=feats.subset, fake_features=feats.samples)
    ctx.details["ks"] = {**ks, "extractor": ctx.cnn.name}
    return [
        _row(
            "ks_distance",
            "KS distance (mean)",
            ks["mean_ks"],
            "lower",
            ctx.cnn.name,
            f"the KS statistic D (largest gap between the real and sample CDFs, 0..1) averaged over the "
            f"{ks['n_tests']} per-image statistics: how large the differences are, which the count of "
            "significant tests below cannot say at large n.",
        ),
        _row(
            "ks_differing",
            "KS tests differing",
            ks["n_differing"],
            "lower",
            ctx.cnn.name,
            f"of {ks['n_tests']} per-image statistics (ink, centre, blur, ...; PCs of the "
            f"features), how many differ from real data (KS test, Holm-adjusted, alpha "
            f"{ks['alpha']}); 0 is best.",
            of=ks["n_tests"],
        ),
    ]


@metric("modes", rank=5)
def _modes(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import mode_statistics

    test, labels = ctx.test, ctx.test.labels.numpy()
    modes = mode_statistics(ctx.probs, num_classes=test.num_classes, real_labels=labels)
    modes["real_histogram"] = (np.bincount(labels, minlength=test.num_classes) / len(labels)).tolist()
    modes["class_names"] = list(test.class_names)
    ctx.details["modes"] = {**modes, "extractor": ctx.cnn.name}
    return [
        _row(
            "classes_covered",
            "classes covered",
            modes["classes_covered"],
            "higher",
            ctx.cnn.name,
            f"classes receiving at least {modes['min_fraction']:.1%} of the samples, of "
            f"{test.num_classes}; fewer means mode collapse.",
        ),
        _row(
            "class_kl",
            "class KL to real",
            modes["kl_to_real"],
            "lower",
            ctx.cnn.name,
            "KL(sample class histogram || real histogram) in nats; 0 when classes appear as often as in the real data.",
        ),
    ]


@metric("memo", rank=7, min_samples=2)
def _memorisation(ctx: EvalContext, ext: Extractor) -> list[Row]:
    from .metrics import check_images, memorization

    train, held, described = _memorisation_sets(ctx.test, ctx.train_split, ctx.data_dir, ctx.notes, ctx.data_options)
    held_idx = np.sort(ctx.rng.choice(len(held), min(ctx.n, len(held)), replace=False))
    ctx.say(f"memorisation: nearest of {ctx.n} samples among {len(train)} training images")
    memo = memorization(ctx.x, train, held[held_idx], quantile=0.01, n_closest=10)
    memo.update(described, n_heldout=len(held_idx))
    ctx.details["memo"] = memo
    s_idx = [c["sample_index"] for c in memo["closest"]]
    t_idx = [c["train_index"] for c in memo["closest"]]
    ctx.pairs = (ctx.x[s_idx], check_images(train[t_idx], "train", metric="report", size=None, channels=None))
    return [
        _row(
            "memo_copies",
            "likely copies",
            memo["fraction_copies"],
            f"target:{memo['quantile']}",
            "pixels",
            f"percentage of samples closer to a training image than {memo['quantile']:.0%} "
            "of unseen real images are; about that percentage for a model that generalises, far "
            "above it for one that copies (metrics.json's value is the fraction).",
            display_scale=100,
            unit="%",
        ),
        _row(
            "memo_nn_ratio",
            "NN distance ratio",
            memo["median_ratio"],
            "target:1",
            "pixels",
            "median distance from a sample to its nearest training image over the same for "
            "unseen real images; below 1 = closer than new data (copying), well above 1 = "
            "far from any training image.",
        ),
    ]


def _memorisation_sets(
    test, train_split: str, data_dir: str | None, notes: list[str], data_options: dict[str, Any] | None = None
):
    """(training images, held-out images, description) for the memorisation check."""
    from .data import load_dataset

    half = len(test) // 2
    fallback = (
        test.images[:half].numpy(),
        test.images[half:].numpy(),
        {
            "train_set": f"{test.name} test[0:{half}] (pseudo-training)",
            "heldout_set": f"{test.name} test[{half}:{len(test)}]",
        },
    )
    if train_split == "test":
        notes.append(
            f"the model was trained on the {test.name} test split, so the reference images are its "
            f"training data and every score is optimistic; memorisation compares with test[0:{half}] "
            f"against test[{half}:], which the model has also seen"
        )
        return fallback
    try:
        train = load_dataset(test.name, train_split, data_dir=data_dir, download=False, **(data_options or {}))
    except DataError:
        notes.append(
            f"no {test.name} {train_split} split found: memorisation uses test[0:{half}] as a "
            f"pseudo-training set and test[{half}:] as held-out images, which says nothing about "
            f"copying of the real training set"
        )
        return fallback
    return (
        train.images.numpy(),
        test.images.numpy(),
        {"train_set": f"{test.name} {train_split}", "heldout_set": f"{test.name} test"},
    )


METRICS = tuple(METRIC_REGISTRY)  # every registered metric, in the order `--metrics` lists them


def parse_metrics(text: str) -> list[str]:
    """``"fid, KID,fid"`` -> ``["fid", "kid"]``: registered names, lower-cased, first mention kept."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRIC_REGISTRY]
    if unknown or not names:
        raise ConfigError(
            f"unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; choose from {','.join(METRIC_REGISTRY)}"
        )
    return list(dict.fromkeys(names))


def run_metrics(ctx: EvalContext, names: list[str], extractors: list[Extractor]) -> list[Row]:
    """The summary rows of the metrics ``names``: the per-extractor ones for each extractor in
    turn (all of the classifier's rows before any Inception row), then the others, each block by rank."""
    chosen = sorted((METRIC_REGISTRY[m] for m in names), key=lambda m: m.rank)
    rows: list[Row] = []
    for ext in extractors:
        for m in chosen:
            if m.per_extractor:
                rows += m.compute(ctx, ext)
    for m in chosen:
        if not m.per_extractor:
            rows += m.compute(ctx, ctx.cnn)
    return rows


# -- reference points: what real data and clearly bad images score ----------------------------------
# A FID of 345 in genlab's classifier units means nothing alone. Beside each metric a report shows
# two reference points, scored exactly like samples (same metrics, extractors and n): unseen real
# images (the floor a perfect model would reach) and the same images blurred (a "clearly bad" mark).
BLUR_SIGMA = 1.5  # pixels: the strokes of a 28x28 digit smear into a soft blob yet stay legible
REFERENCE_POINT_SEED = 0  # fixed, so every evaluation of a dataset/extractor/n shares one cache entry
NO_BASELINE = frozenset({"memo"})  # its rows carry their own real-data yardstick (1 % and ratio 1)


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """(N, 1, H, W) images in [0, 1] (or uint8) blurred by a Gaussian of ``sigma`` pixels, float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    return np.clip(gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="constant"), 0.0, 1.0)


def _reference_point_sets(
    test, dataset: str, data_dir: str | None, n: int, data_options: dict[str, Any] | None = None
) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """(real images scored like samples, the real images they are compared with, their description).

    The train split against the test split when it exists; otherwise (MNIST here ships only its
    test split, and a 'val' reference is carved from train) one random half of the reference
    against the other, so the floor never compares images with themselves. Random, not first
    half against second: MNIST's test halves come from different writers (Census employees,
    then students) and differ measurably, which would make the floor look worse than it is.
    """
    import dataclasses

    from .data import load_dataset

    if test.split == "test":
        try:
            train = load_dataset(dataset, "train", data_dir=data_dir, download=False, **(data_options or {}))
        except DataError:
            pass
        else:
            k = min(n, len(train))
            idx = np.sort(np.random.default_rng(REFERENCE_POINT_SEED).choice(len(train), k, replace=False))
            return train.images.numpy()[idx], test, {"images": f"{dataset} train ({k} drawn)", "n": k}
    import torch

    half = len(test) // 2
    k = min(n, len(test) - half)
    perm = torch.from_numpy(np.random.default_rng(REFERENCE_POINT_SEED).permutation(len(test)))
    kept, scored = perm[:half].sort().values, perm[half : half + k].sort().values
    against = dataclasses.replace(
        test, split=f"{test.split}-half-a", images=test.images[kept], labels=test.labels[kept]
    )
    described = {
        "images": f"{k} of one random half of {dataset} {test.split}",
        "n": k,
        "against": f"the other half, {half} images",
    }
    return test.images[scored].numpy(), against, described


def reference_points(
    test,
    extractors: list[Extractor],
    metrics: Sequence[str],
    *,
    n: int,
    dataset: str,
    data_dir: str | None,
    say: Callable[[str], None] = lambda _msg: None,
    cache: bool = True,
    data_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What unseen real images and blurred ones score on ``metrics`` (all but memorisation), with ``n``
    images each, against ``test`` in ``extractors``' spaces.

    Returns ``{"real": {...}, "blurred": {...}}``, each ``{"images", "n", "values": {"key@extractor":
    value}}`` (the row ids of :func:`run_metrics`' rows), or ``{}`` when no metric has a reference point.
    Computed once per dataset, reference images, extractors, metrics and ``n``, then read from a JSON
    file in :func:`stats_cache_dir`.
    """
    import json

    from . import __version__
    from .io import atomic_write_text, read_json

    names = [m for m in metrics if m in METRIC_REGISTRY and m not in NO_BASELINE]
    if not names:
        return {}
    real, against, described = _reference_point_sets(test, dataset, data_dir, n, data_options)
    content = hashlib.sha256()
    for arr in (real, against.images.numpy()):
        content.update(np.ascontiguousarray(arr).tobytes())
    key = {
        "genlab": __version__,
        "dataset": dataset,
        "metrics": sorted(names),
        "extractors": [[e.name, e.sha256] for e in extractors],
        "images": content.hexdigest(),
        "blur_sigma": BLUR_SIGMA,
        "seed": REFERENCE_POINT_SEED,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = stats_cache_dir() / f"{file_label(dataset)}-reference-points-n{len(real)}-{digest}.json"
    against_text = described.pop("against", f"{dataset} {against.split}")
    about = {
        "real": {**described, "against": against_text},
        "blurred": {**described, "images": f"{described['images']}, Gaussian blur sigma {BLUR_SIGMA} px"}
        | {"against": against_text},
    }
    # only the numbers are cached: the descriptions are made afresh, so a reworded one never goes stale
    values: dict[str, Any] | None = None
    if cache and path.is_file():
        try:
            found = read_json(path, "reference points")
            if isinstance(found, dict) and found.get("key") == key and isinstance(found.get("values"), dict):
                values = found["values"]
        except GenlabError:
            pass  # damaged: recomputed and replaced below
    if values is not None and set(values) == set(about):
        return {name: {**about[name], "values": values[name]} for name in about}
    say(f"reference points: scoring {described['images']} and the same images blurred (once; then cached)")

    def scores(images: np.ndarray) -> dict[str, Any]:
        ctx = EvalContext(
            images,
            against,
            dataset=dataset,
            seed=REFERENCE_POINT_SEED,
            cnn=extractors[0],
            train_split="train",
            data_dir=data_dir,
            notes=[],
            say=lambda _msg: None,
            data_options=data_options,
        )
        return {f"{r['key']}@{r['extractor']}": r["value"] for r in run_metrics(ctx, names, extractors)}

    values = {"real": scores(real.astype(np.float32) / 255), "blurred": scores(blur(real))}
    if cache:
        try:
            atomic_write_text(path, json.dumps({"key": key, "values": values}, allow_nan=False) + "\n")
        except (GenlabError, OSError, ValueError):
            pass  # an unwritable cache (or a NaN score) only costs time
    return {name: {**about[name], "values": values[name]} for name in about}


def attach_reference_points(rows: list[Row], points: dict[str, Any]) -> None:
    """Give each summary row the reference points measured for it: ``row["baselines"] = {"real", "blurred"}``."""
    for row in rows:
        rid = f"{row['key']}@{row['extractor']}"
        found = {name: p["values"][rid] for name, p in points.items() if rid in p.get("values", {})}
        if found:
            row["baselines"] = found


@dataclass
class Evaluation:
    """The JSON-ready result plus the images the HTML report shows."""

    result: dict[str, Any]
    samples: np.ndarray  # (N, C, H, W) float32: the evaluated samples
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # closest samples and their training images
    class_names: tuple[str, ...] = ()
    labels: np.ndarray | None = None  # (N,) int64: the class each sample was drawn for (a conditional run)


def evaluate_samples(
    samples: np.ndarray,
    dataset: str,
    *,
    metrics: Sequence[str] = METRICS,
    data_dir: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    classifier: str | Path | None = None,
    inception: str | Path | None = None,
    train_split: str = "train",
    source: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    test: Any = None,
    extractors: list[Extractor] | None = None,
    baselines: bool = True,
    data_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Score ``samples`` (float32 (N, C, H, W) in [0, 1], the shape of the dataset's images) against
    ``dataset``'s test split (or the real images ``test`` given, e.g. the 'val' split when choosing settings).

    ``metrics`` are registered names (see :func:`metric`). ``train_split`` is the split the
    model was trained on: memorisation compares with it, falling back to halves of the test
    split when it is missing (or is the test split itself). Everything random (reference
    subsets, KID subsets) uses ``seed``. ``test`` and ``extractors`` (the classifier first): what
    :func:`prepare_reference` returned, when the caller checked its inputs before making samples.
    ``baselines``: add :func:`reference_points` to the rows (``row["baselines"]``) and the result.
    ``data_options``: a folder dataset's ``image_size`` and ``skip_bad_images`` (see :func:`prepare_reference`).
    """
    from . import __version__
    from .metrics import check_images

    t0 = time.perf_counter()
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRIC_REGISTRY]
    if unknown:
        parse_metrics(",".join(unknown))  # raises the one error that names them
    if test is None or extractors is None:
        if not is_folder_dataset(dataset):  # mnist and fashion-mnist: 1x28x28, checked before loading anything
            _check_sample_count(metrics, len(check_images(samples, "samples", metric="genlab evaluate")))
        test, extractors, data_options = prepare_reference(
            dataset, data_dir, classifier, inception, device=device, data_options=data_options
        )
    shape = tuple(int(d) for d in test.images.shape[1:])  # (C, H, W) of the real images
    x = check_images(samples, "samples", metric="genlab evaluate", size=(shape[1], shape[2]), channels=shape[0])
    _check_sample_count(metrics, len(x))
    cnn = extractors[0]
    ctx = EvalContext(
        x,
        test,
        dataset=dataset,
        seed=seed,
        cnn=cnn,
        train_split=train_split,
        data_dir=data_dir,
        notes=list(notes or []),
        say=log or (lambda _msg: None),
        data_options=data_options,
    )
    rows = run_metrics(ctx, metrics, extractors)
    points: dict[str, Any] = {}
    if baselines:
        points = reference_points(
            test,
            extractors,
            metrics,
            n=ctx.n,
            dataset=dataset,
            data_dir=data_dir,
            say=ctx.say,
            data_options=data_options,
        )
        attach_reference_points(rows, points)
    result = {
        "genlab_version": __version__,
        "dataset": dataset,
        "reference": {
            "split": test.split,
            "n": int(len(ctx.real_u8)),
            "n_subset": int(len(ctx.ref_idx)),
            "image_shape": list(shape),
        },
        "n": int(ctx.n),
        "seed": int(seed),
        "metrics_requested": metrics,
        "source": source or {},
        "extractors": {e.name: e.describe() for e in extractors},
        "summary": rows,
        "reference_points": {name: {k: v for k, v in p.items() if k != "values"} for name, p in points.items()},
        "details": ctx.details,
        "notes": ctx.notes,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return Evaluation(result=result, samples=x, pairs=ctx.pairs, class_names=tuple(test.class_names))


def cmd_train_classifier(args: argparse.Namespace) -> int:
    check_dataset_name(args.dataset, folders=True)
    folder = is_folder_dataset(args.dataset)
    if not folder and (args.image_size is not None or args.skip_bad_images):
        raise ConfigError(
            f"--image-size and --skip-bad-images apply to folder datasets (folder:PATH), not {args.dataset}"
        )
    default = f"{file_label(args.dataset).removeprefix('folder-') if folder else args.dataset}-cnn.safetensors"
    out = Path(args.out) if args.out else Path(default)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors (a JSON file is written beside it), got {out}")
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    from .device import inference_device

    train_dataset_classifier(
        args.dataset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        out=out,
        seed=args.seed,
        device=inference_device(args.device),
        image_size=args.image_size,
        skip_bad_images=args.skip_bad_images,
    )
    return 0


def check_dataset_name(dataset: str | None, *, folders: bool = False) -> None:
    """A known dataset name (None: none needed), checked before samples are read or drawn.

    ``folders``: whether a ``folder:PATH`` dataset is accepted (``genlab evaluate`` and ``fid``, which
    take a classifier trained on it); the commands whose classifier is genlab's 28x28 grayscale one
    of mnist or fashion-mnist (CAS, augment) refuse it.
    """
    from .data import DATASETS

    if dataset is not None and is_folder_dataset(dataset):
        if folders:
            return
        raise DataError(
            f"this needs genlab's 28x28 grayscale classifier of mnist or fashion-mnist, which does not read the "
            f"images of {dataset}; `genlab evaluate RUN --classifier FILE` scores folder runs with a classifier "
            f"from `genlab train-classifier --dataset {dataset}`"
        )
    if dataset is not None and dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)} or folder:PATH")


def check_classifier_fits(extractor: Extractor, dataset: str, test) -> None:
    """Refuse a classifier that was not trained on the images of the folder dataset ``dataset``, whose
    split ``test`` is loaded (with the run's, or the classifier's, ``--image-size``): it must read images
    of their shape and have been trained on the same files with the same settings (the content key)."""
    meta = extractor.meta
    shape = tuple(int(d) for d in test.images.shape[1:])
    reads = tuple(meta.get("input_shape", (1, 28, 28)))
    recorded = meta.get("folder_key")
    redo = f"`genlab train-classifier --dataset {dataset}" + (
        f" --image-size {shape[1]}`" if shape[1] == shape[2] else "`"
    )
    if reads != shape:
        raise ConfigError(
            f"classifier {extractor.path} reads {'x'.join(map(str, reads))} images, but {dataset} gives "
            f"{'x'.join(map(str, shape))} images; train one on them with {redo}"
        )
    if recorded != folder_key(test):
        raise ConfigError(
            f"classifier {extractor.path} was trained on other images than {dataset} gives now (content key "
            f"{str(recorded)[:12]}, now {folder_key(test)[:12]}: files were added, removed or changed, or "
            f"--image-size or --skip-bad-images differ); train it again with {redo}"
        )
    if meta.get("num_classes") != test.num_classes:  # the key covers the labels: a damaged sidecar
        raise ConfigError(
            f"classifier {extractor.path} has {meta.get('num_classes')} classes, {dataset} {test.num_classes}"
        )


def prepare_reference(
    dataset: str,
    data_dir: str | None,
    classifier: str | Path | None,
    inception: str | Path | None,
    *,
    device: str = "cpu",
    data_options: dict[str, Any] | None = None,
) -> tuple[Any, list[Extractor], dict[str, Any]]:
    """(the dataset's test split, [classifier, Inception if asked], the options it was loaded with):
    every input an evaluation needs besides the samples, loaded and checked, so a bad one is refused
    before any sample is drawn.

    A ``folder:PATH`` dataset needs ``classifier`` (one trained on that folder, checked by
    :func:`check_classifier_fits`) or ``inception`` alone. ``data_options`` (``image_size``,
    ``skip_bad_images``) are a run's; None takes those the classifier was trained with.
    """
    from .data import load_dataset

    check_dataset_name(dataset, folders=True)
    if not is_folder_dataset(dataset):
        test = load_dataset(dataset, "test", data_dir=data_dir)
        cnn = classifier_extractor(dataset, classifier, device=device)
        return test, [cnn] + ([inception_extractor(inception, device=device)] if inception else []), {}
    if classifier is None and inception is None:
        raise ConfigError(needs_classifier_message(dataset))
    extractors = [classifier_extractor(dataset, classifier, device=device)] if classifier else []
    if data_options is None:
        meta = extractors[0].meta if extractors else {}
        data_options = {
            "image_size": meta.get("image_size"),
            "skip_bad_images": bool(meta.get("skip_bad_images", False)),
        }
    test = load_dataset(dataset, "test", data_dir=data_dir, **data_options)
    if extractors:
        check_classifier_fits(extractors[0], dataset, test)
    if inception:
        extractors.append(inception_extractor(inception, device=device))
    return test, extractors, dict(data_options)


def scored_weights(run_dir: Path) -> dict[str, Any]:
    """Which weights of a run an evaluation scores, as ``checkpoint.load_run`` chooses them (the final
    weights, else the newest checkpoint's): ``{"weights_file", "weights_sha256", "step"}``.

    The hash is what tells a metrics.json from before a ``train --resume`` apart from a current one;
    ``step`` (None when unknown) is for people reading the report.
    """
    from .checkpoint import checkpoint_dirs, read_checkpoint_meta
    from .runs import MODEL_FILE, finished_steps

    weights, step = run_dir / MODEL_FILE, None
    if os.path.lexists(weights):
        step = finished_steps(run_dir)
    else:
        ckpts = checkpoint_dirs(run_dir)
        if not ckpts:
            return {}
        weights = ckpts[-1] / MODEL_FILE
        try:
            step = int(read_checkpoint_meta(ckpts[-1])["step"])
        except (GenlabError, KeyError, TypeError, ValueError):
            step = None
    _check_regular(weights, 2**62, "weights file")  # hashing a FIFO would never end
    if not weights.is_file():
        return {}
    return {
        "weights_file": str(weights.relative_to(run_dir)),
        "weights_sha256": file_sha256(weights),
        "step": step,
    }


def stale_metrics(run_dir: Path, result: Any, metrics_path: Path | None = None) -> str | None:
    """Why ``result`` (a run's parsed metrics.json) no longer describes the run's weights, or None.

    The weights' hash recorded by :func:`evaluate_path` is compared with the weights there now
    (e.g. after ``train --resume``). A metrics.json of an older genlab records no hash: it is
    stale when the weights file is newer than it.
    """
    source = result.get("source") if isinstance(result, dict) else None
    if not isinstance(source, dict) or source.get("kind") != "run":
        return None
    now = scored_weights(run_dir)
    if not now:
        return None
    recorded = source.get("weights_sha256")
    if isinstance(recorded, str):
        if recorded == now["weights_sha256"]:
            return None
        was = f"step {source.get('step')}" if source.get("step") is not None else "earlier weights"
        is_ = f"step {now['step']}" if now["step"] is not None else "other weights"
        return (
            f"it scored {was} (weights sha256 {recorded[:12]}), but {now['weights_file']} now holds {is_} "
            f"(sha256 {now['weights_sha256'][:12]})"
        )
    path = metrics_path or run_dir / "metrics.json"
    try:
        newer = (run_dir / now["weights_file"]).stat().st_mtime > path.stat().st_mtime
    except OSError:
        return None
    if newer:
        return f"it records no weights hash (an older genlab) and {now['weights_file']} was written after it"
    return None


def describe_sampling(settings: Mapping[str, Any]) -> str:
    """A model's sampling settings as words: "ddim, 20 steps, eta 0, guidance 2"."""
    parts: list[str] = []
    for option, value in settings.items():
        if option == "sampler":
            parts.insert(0, str(value))
        elif option == "steps":
            parts.append(f"{value} steps")
        else:
            parts.append(f"{option} {value:g}" if isinstance(value, float) else f"{option} {value}")
    return ", ".join(parts)


def evaluate_path(
    target: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    n: int | None = None,
    metrics: Sequence[str] = METRICS,
    seed: int = 0,
    device: str = "cpu",
    classifier: str | None = None,
    inception: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    image_size: int | None = None,
    sampling: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate a run directory (sampling ``n``, default 10,000), a ``.npy`` file or a PNG folder.

    A run of a ``folder:PATH`` dataset is scored with ``classifier`` (trained on that folder by
    ``genlab train-classifier``) and/or ``inception``; without a classifier the metrics that need
    class probabilities (IS, classes covered) are left out with a note. Samples from files compared
    with a folder dataset are read at ``image_size``, or the size the classifier was trained at.

    Every input (metric names, sample count, dataset and its files, extractor weights) is checked
    before any sample is drawn or read. A run's result records the weights it scored
    (``source.step``, ``source.weights_sha256``: see :func:`stale_metrics`). ``progress`` shows
    the sampling's progress on stderr (:mod:`genlab.progress`). ``sampling``: options of a run whose model
    takes them (a diffusion model's sampler, steps, eta, guidance; ``genlab sample``'s flags), recorded
    in ``source.sampling`` with the values the samples were drawn with.
    """
    import torch

    from .checkpoint import load_run
    from .models import configure_sampling, sampling_flag_names, sampling_settings
    from .sample import generate

    target = Path(target)
    say = log or (lambda _msg: None)
    notes: list[str] = []
    metrics = parse_metrics(",".join(metrics)) if metrics else parse_metrics("")
    if sampling and not is_run_dir(target):
        raise ConfigError(
            f"{', '.join(sampling_flag_names(sampling))}: how a run's model draws; {target} holds samples "
            "already (they were drawn however they were drawn)"
        )
    if is_run_dir(target):  # a config.json that is not a regular file is refused by load_run, not skipped
        model, run = load_run(target, device=device)
        configure_sampling(model, dict(sampling or {}), f"{target} ({run.family}/{run.preset})")
        weights = scored_weights(target)
        if dataset and dataset != run.data.dataset:
            notes.append(f"the run was trained on {run.data.dataset} but is compared with {dataset} (--dataset)")
        if image_size is not None:
            raise ConfigError("--image-size is for samples in files; a run directory records its own image size")
        dataset = dataset or run.data.dataset
        data_dir = data_dir if data_dir is not None else run.data.data_dir
        n = DEFAULT_N if n is None else n
        if n < 1:
            raise ConfigError(f"-n must be >= 1, got {n}")
        metrics = _without_class_metrics(metrics, dataset, classifier, notes)
        _check_sample_count(metrics, n)
        options = run.data.load_options() if is_folder_dataset(dataset) and dataset == run.data.dataset else None
        test, extractors, data_options = prepare_reference(
            dataset, data_dir, classifier, inception, device=device, data_options=options
        )
        how = sampling_settings(model)
        drawn_with = f"; {describe_sampling(how)}" if how else ""
        say(f"sampling {n} images from {target} ({run.family}/{run.preset}{drawn_with})")
        gen = torch.Generator(device=model.device).manual_seed(seed)
        labels = model.sampling_labels(n)  # a conditional model: 0, 1, ..., C-1, 0, ... (class-balanced)
        t_sampling = time.perf_counter()
        samples = generate(model, n, generator=gen, labels=labels, progress=progress).numpy()
        sampling_seconds: float | None = round(time.perf_counter() - t_sampling, 1)
        drawn_for = labels.cpu().numpy() if labels is not None else None
        source = {
            "kind": "run",
            "path": str(target),
            "name": target.name,
            "family": run.family,
            "preset": run.preset,
            "trained_on": f"{run.data.dataset} {run.data.split}",
            **weights,
            **({"sampling": how} if how else {}),
        }
        train_split = run.data.split if run.data.dataset == dataset else "train"
    else:
        if dataset is None:
            raise ConfigError(
                f"say which dataset {target} should be compared with: --dataset mnist|fashion-mnist|folder:PATH"
            )
        if n is not None and n < 1:
            raise ConfigError(f"-n must be >= 1, got {n}")
        check_dataset_name(dataset, folders=True)
        if not is_folder_dataset(dataset):
            if image_size is not None:
                raise ConfigError(f"--image-size applies to folder datasets (folder:PATH), not {dataset}")
            samples = load_samples(target, n)  # the first n images only: no more is read than is scored
            _check_sample_count(metrics, len(samples))
            test, extractors, data_options = prepare_reference(dataset, data_dir, classifier, inception, device=device)
        else:  # the classifier says what shape the samples must have: it is loaded first
            metrics = _without_class_metrics(metrics, dataset, classifier, notes)
            options = None if image_size is None else {"image_size": image_size, "skip_bad_images": False}
            test, extractors, data_options = prepare_reference(
                dataset, data_dir, classifier, inception, device=device, data_options=options
            )
            shape = tuple(int(d) for d in test.images.shape[1:])
            samples = load_samples(target, n, shape=(shape[0], shape[1], shape[2]))
            _check_sample_count(metrics, len(samples))
        if n is not None:
            if n > len(samples):
                notes.append(f"-n {n} asked for, but {target} holds only {len(samples)} images: all are used")
        source = {"kind": "npy" if target.is_file() else "png-folder", "path": str(target), "name": target.name}
        train_split = "train"
        drawn_for, sampling_seconds = None, None
    evaluation = evaluate_samples(
        samples,
        dataset,
        metrics=metrics,
        data_dir=data_dir,
        seed=seed,
        device=device,
        classifier=classifier,
        inception=inception,
        train_split=train_split,
        source=source,
        notes=notes,
        log=say,
        test=test,
        extractors=extractors,
        data_options=data_options,
    )
    evaluation.labels = drawn_for
    if sampling_seconds is not None:  # what the n samples cost to draw (a diffusion model: most of the wait)
        evaluation.result["source"]["sampling_seconds"] = sampling_seconds
    return evaluation


CLASS_METRICS = ("is", "modes")  # need a classifier's class probabilities


def _without_class_metrics(metrics: list[str], dataset: str, classifier: str | None, notes: list[str]) -> list[str]:
    """``metrics`` less IS and classes covered when a folder dataset is scored without a classifier
    (Inception's features alone have no classes of the folder), said in a note."""
    if not is_folder_dataset(dataset) or classifier is not None:
        return metrics
    left = [m for m in metrics if m not in CLASS_METRICS]
    dropped = [m for m in metrics if m in CLASS_METRICS]
    if dropped:
        notes.append(
            f"{', '.join(dropped)} left out: they need a classifier of {dataset}'s classes "
            f"(`genlab train-classifier --dataset {dataset}`, then --classifier FILE)"
        )
    if not left:
        raise ConfigError(f"{', '.join(dropped)} need --classifier FILE for {dataset}; choose other --metrics")
    return left


def _check_sample_count(metrics: Sequence[str], n: int) -> None:
    """Refuse ``n`` samples when a chosen metric needs more."""
    short = [m for m in metrics if n < METRIC_REGISTRY[m].min_samples]
    if short:
        need = max(METRIC_REGISTRY[m].min_samples for m in short)
        raise GenlabError(
            f"{', '.join(short)} need at least {need} samples, got {n}; give more samples or choose other --metrics"
        )


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` entry (of any kind: loading checks it)."""
    from .runs import CONFIG_FILE

    return path.is_dir() and os.path.lexists(path / CONFIG_FILE)


def default_outputs(target: Path, out: str | None) -> tuple[Path, Path]:
    """(metrics.json, report.html): into --out, a run directory, a PNG folder, or beside a .npy."""
    if out:
        folder = Path(out)
        return folder / "metrics.json", folder / "report.html"
    if target.is_dir():
        return target / "metrics.json", target / "report.html"
    return target.with_name(f"{target.stem}-metrics.json"), target.with_name(f"{target.stem}-report.html")


def require_likelihood_model(run_dir: Path, device: str) -> None:
    """Refuse ``--nll`` early, before any sampling, when the run's model has no likelihood bound."""
    from .checkpoint import load_run
    from .models.base import LikelihoodModel

    model, run = load_run(run_dir, device=device)
    if not isinstance(model, LikelihoodModel):
        raise ConfigError(
            f"--nll needs a model with a likelihood bound (a LikelihoodModel); {run_dir} is a "
            f"{run.family}/{run.preset} run"
        )


def add_nll(
    evaluation: Evaluation,
    run_dir: Path,
    *,
    k: int,
    n_images: int,
    seed: int,
    device: str,
    data_dir: str | None,
    progress: bool = False,
) -> None:
    """Put :func:`genlab.nll.evaluate_likelihood`'s test log-likelihood into the evaluation."""
    import importlib
    import importlib.util

    # genlab.nll is imported by name, so an installation without it gets a sentence, not a traceback
    if importlib.util.find_spec("genlab.nll") is None:
        raise GenlabError("--nll needs genlab.nll, which this genlab installation does not have")
    nll = importlib.import_module("genlab.nll")
    if not hasattr(nll, "evaluate_likelihood"):
        raise GenlabError("--nll needs genlab.nll.evaluate_likelihood, which this genlab installation does not have")
    res = nll.evaluate_likelihood(
        run_dir,
        evaluation.result["dataset"],
        k=k,
        n_images=n_images,
        seed=seed,
        device=device,
        data_dir=data_dir,
        progress=progress,
    )
    evaluation.result["nll"] = res
    evaluation.result["summary"].append(
        _row(
            "iwae_nll",
            f"IWAE NLL (k={k})",
            res["iwae_nll_nats"],
            "lower",
            None,
            f"negative test log-likelihood in nats per image, importance-weighted bound with k={k} "
            f"({res.get('likelihood', '')}); lower is better; only comparable between models with the same "
            f"likelihood.",
            std=res.get("iwae_nll_sem"),
        )
    )


def _note_stale(run_dir: Path, metrics_path: Path, log: Callable[[str], None]) -> None:
    """Say that the metrics.json about to be replaced described other weights (e.g. before a resume)."""
    from .io import read_json

    try:
        old = read_json(metrics_path, "evaluation")
    except GenlabError:  # missing or unreadable: nothing to say about it, and it is replaced
        return
    why = stale_metrics(run_dir, old, metrics_path)
    if why:
        log(f"{metrics_path} is out of date ({why}): evaluating the current weights")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import sampling_options
    from .device import inference_device
    from .report import evaluation_html, metrics_table_text, write_metrics_json

    target = Path(args.target)
    if not target.exists():
        raise GenlabError(f"{target}: no such run directory, .npy file or PNG folder")
    metrics = parse_metrics(args.metrics)
    device = inference_device(args.device)
    sampling = sampling_options(args)
    if args.nll:
        if not is_run_dir(target):
            raise ConfigError(
                "--nll needs a run directory whose model has a likelihood bound (a LikelihoodModel): "
                "the likelihood comes from the model, not from samples"
            )
        require_likelihood_model(target, device)
    if args.cas:
        from .usefulness import require_conditional_run

        if not is_run_dir(target):
            raise ConfigError(
                "--cas needs the run directory of a class-conditional model: CAS trains on labelled samples"
            )
        require_conditional_run(target, device, args.data_dir)
    from .io import check_writable_folder

    metrics_path, html_path = default_outputs(target, args.out)
    check_writable_folder(metrics_path.parent)  # not after minutes of sampling and scoring
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if is_run_dir(target):
        _note_stale(target, metrics_path, log)
    ev = evaluate_path(
        target,
        dataset=args.dataset,
        data_dir=args.data_dir,
        n=args.n,
        metrics=metrics,
        seed=args.seed,
        device=device,
        classifier=args.classifier,
        inception=args.inception,
        log=log,
        progress=not args.quiet,
        image_size=args.image_size,
        sampling=sampling,
    )
    if args.nll:
        log(f"test log-likelihood: k={args.k} on {args.nll_images} images")
        add_nll(
            ev,
            target,
            k=args.k,
            n_images=args.nll_images,
            seed=args.seed,
            device=device,
            data_dir=args.data_dir,
            progress=not args.quiet,
        )
    if args.cas:
        from .usefulness import add_cas

        add_cas(
            ev,
            target,
            n=ev.result["n"],
            seed=args.seed,
            device=device,
            data_dir=args.data_dir,
            progress=not args.quiet,
            log=log,
            sampling=sampling,
        )
    write_metrics_json(ev.result, metrics_path)
    from .io import atomic_write_text

    atomic_write_text(html_path, evaluation_html(ev))
    if not args.quiet:
        print(f"{ev.result['dataset']}, n={ev.result['n']}, seed {ev.result['seed']}")
        for note in ev.result["notes"]:
            print(f"note: {note}")
        print(metrics_table_text(ev.result))
        print(f"wrote {metrics_path} and {html_path}")
    return 0


MAX_SAMPLES_PNG_BYTES = 16 * 2**20  # a run's samples.png (genlab's: tens of kilobytes)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def evaluation_problem(result: Any) -> str | None:
    """What makes ``result`` (a parsed metrics.json) unusable by ``compare``, or None when it is sound."""

    def number(v: Any) -> bool:  # a number a float can hold, or null (no value)
        if v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            float(v)  # an integer of 400 digits is valid JSON but no float
        except OverflowError:
            return False
        return True

    if not isinstance(result, dict):
        return "not a JSON object"
    if not isinstance(result.get("dataset"), str):
        return "no dataset name"
    n = result.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return "no sample count n"
    notes = result.get("notes", [])
    if not (isinstance(notes, list) and all(isinstance(x, str) for x in notes)):
        return "notes is not a list of sentences"
    rows = result.get("summary")
    if not isinstance(rows, list):
        return "no summary list"
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return f"summary[{i}] is not an object"
        for key in ("key", "label", "better", "explain"):
            if not isinstance(row.get(key), str):
                return f"summary[{i}].{key} is not a string"
        if "extractor" not in row or not (row["extractor"] is None or isinstance(row["extractor"], str)):
            return f"summary[{i}].extractor is not a string or null"
        if "value" not in row or not all(number(row.get(k)) for k in ("value", "std", "of")):
            return f"summary[{i}] has a value that is not a number"
        better = row["better"]
        if better.startswith("target:"):
            try:
                float(better.split(":", 1)[1])
            except ValueError:
                return f"summary[{i}].better names no target number"
    return None


def _read_compare_inputs(d: Path) -> dict[str, Any]:
    """What ``compare`` reads from one run directory, every file checked before any run is evaluated."""
    from .io import MAX_JSONL_BYTES, MissingFileError, read_bytes_capped, read_json, read_jsonl
    from .runs import CONFIG_FILE, METRICS_FILE

    if not d.is_dir():
        raise GenlabError(f"{d}: no such run directory")
    try:
        config = read_json(d / CONFIG_FILE, "run config")
    except MissingFileError:
        raise GenlabError(f"{d}: not a genlab run directory (no {CONFIG_FILE})") from None
    if not isinstance(config, dict):
        raise GenlabError(f"{d / CONFIG_FILE}: not a genlab run config (expected a JSON object)")
    result = None
    try:
        result = read_json(d / "metrics.json", "evaluation")
    except MissingFileError:
        pass  # evaluated on the fly
    else:
        problem = evaluation_problem(result)
        if problem:  # refused, not re-evaluated: a damaged file is worth knowing about, and evaluating costs
            raise GenlabError(
                f"{d / 'metrics.json'} is not a genlab evaluation ({problem}); run `genlab evaluate {d}` "
                f"again, or delete it to have compare evaluate the run on the fly"
            )
    stale = stale_metrics(d, result) if result is not None else None
    try:
        png: bytes | None = read_bytes_capped(d / "samples.png", MAX_SAMPLES_PNG_BYTES, "sample grid")
    except MissingFileError:
        png = None
    if png is not None and not png.startswith(_PNG_SIGNATURE):
        png = None  # not a PNG: the page shows no samples rather than a broken picture
    family, preset = config.get("family"), config.get("preset")
    try:  # how long training took and how fast: comparable across families, unlike their losses
        summary = read_json(d / "summary.json", "training summary")
    except GenlabError:  # missing (an unfinished run) or damaged: the page shows n/a, the metrics still count
        summary = None
    return {
        "config": config,
        "summary": summary if isinstance(summary, dict) else None,
        "family": family if isinstance(family, str) else None,
        "preset": preset if isinstance(preset, str) else None,
        "result": result,
        "stale": stale,
        "samples_png": png,
        "records": read_jsonl(d / METRICS_FILE, MAX_JSONL_BYTES),
    }


def compare_runs(
    run_dirs: list[str | Path],
    *,
    n: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Each run's metrics (its metrics.json, or an on-the-fly evaluation with ``n`` samples) and looks.

    Every run's files are read and checked first, so a damaged run is refused before any run is
    evaluated. A metrics.json that is not a sound genlab evaluation is refused (one line naming
    the problem), never silently replaced by an on-the-fly evaluation. One that scored other
    weights than the run holds now (:func:`stale_metrics`, e.g. after ``train --resume``) is not
    used: the run is evaluated on the fly, and its entry's ``stale`` says why.
    """
    from .checkpoint import load_run
    from .data import load_dataset

    say = log or (lambda _msg: None)
    inputs = [(d, _read_compare_inputs(d)) for d in map(Path, run_dirs)]
    for d, found in inputs:  # the weights and test data of each run to evaluate, before any is evaluated
        if found["result"] is None or found["stale"]:
            _, run = load_run(d, device="cpu")
            if is_folder_dataset(run.data.dataset):
                raise GenlabError(
                    f"{d} has {'an out-of-date' if found['stale'] else 'no'} metrics.json, and compare cannot "
                    f"evaluate a run of {run.data.dataset} on the fly (it needs a classifier of those images): run "
                    f"`genlab evaluate {d} --classifier FILE` first"
                )
            load_dataset(
                run.data.dataset,
                "test",
                data_dir=data_dir if data_dir is not None else run.data.data_dir,
                **run.data.load_options(),
            )
    runs = []
    names: set[str] = set()
    for d, found in inputs:
        on_the_fly = found["result"] is None or found["stale"] is not None
        if found["stale"]:
            say(
                f"{d / 'metrics.json'} is out of date: {found['stale']}; evaluating the current weights now "
                f"with n={n} (`genlab evaluate {d}` refreshes the file)"
            )
        elif on_the_fly:
            say(f"{d} has no metrics.json: evaluating it now with n={n}")
        if on_the_fly:
            result = evaluate_path(d, n=n, seed=seed, device=device, data_dir=data_dir, log=say).result
        else:
            result = found["result"]
        name = d.name
        while name in names:  # two runs with the same folder name
            name += "'"
        names.add(name)
        runs.append(
            {
                "name": name,
                "dir": str(d),
                "family": found["family"],
                "preset": found["preset"],
                "result": result,
                "on_the_fly": on_the_fly,
                "stale": found["stale"],
                "samples_png": found["samples_png"],
                "records": found["records"],
                "config": found["config"],
                "summary": found["summary"],
            }
        )
    return runs


def cmd_compare(args: argparse.Namespace) -> int:
    from .device import inference_device
    from .io import atomic_write_text
    from .report import best_runs, comparability_warnings, compare_html, verdict

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out}: compare writes an HTML page; give --out FILE.html")
    inside = [r for r in args.runs if Path(r).resolve() in out.resolve().parents]
    if inside:  # a run's own files are never replaced, with or without --overwrite
        raise ConfigError(f"{out} is inside the run directory {inside[0]}; write the page elsewhere")
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    from .io import check_writable_folder

    check_writable_folder(out.parent)
    runs = compare_runs(
        args.runs, n=args.n, seed=args.seed, device=inference_device(args.device), data_dir=args.data_dir, log=log
    )
    atomic_write_text(out, compare_html(runs))
    if not args.quiet:
        for line in verdict(runs, best_runs(runs)):
            print(line)
        for warning in comparability_warnings(runs):  # the page says the same above its table
            print(f"warning: {warning}")
        print(f"wrote {out}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    from .cli import add_sampling_flags

    p = sub.add_parser(
        "train-classifier",
        help="train the CNN whose features genlab's metrics use",
        description="Train genlab's small CNN classifier (the feature extractor of "
        "`genlab evaluate`) on a dataset's train split, or on a labelled image folder's (any size, "
        "grayscale or colour); reports the accuracy on the test (held-out) split.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="mnist, fashion-mnist, or folder:PATH (a folder with one sub-folder of images per class)",
    )
    p.add_argument(
        "--image-size",
        type=bounded_int(1, 4096),
        help="folder datasets: short side resized to N and centre-cropped, as `genlab train --image-size`",
    )
    p.add_argument("--skip-bad-images", action="store_true", help="folder datasets: leave unreadable files out (named)")
    p.add_argument(
        "--epochs", type=bounded_int(1, 10**6), default=3, help="passes over the training images (default 3)"
    )
    p.add_argument("--max-steps", type=bounded_int(1, 10**9), help="stop after this many batches (default: all epochs)")
    p.add_argument("--batch-size", type=bounded_int(1, 10**6), default=128, help="images per step (default 128)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument(
        "--out", help="weights file, .safetensors (default ./DATASET-cnn.safetensors, ./FOLDERNAME-cnn.safetensors)"
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser(
        "evaluate",
        help="score samples against real data (FID, KID, IS, precision/recall, ...)",
        description="Evaluate a run directory (draws -n samples), a .npy array or a folder of "
        "PNGs against the dataset's test split (a folder dataset's held-out images). Writes metrics.json and a "
        "self-contained report.html (into the run directory, the PNG folder, beside "
        "the .npy, or into --out).",
    )
    p.add_argument(
        "target",
        help="run directory, SAMPLES.npy (float32 in [0,1] or uint8, (N,C,H,W) or (N,H,W)) or a folder of PNG images",
    )
    p.add_argument(
        "--dataset", help="mnist, fashion-mnist or folder:PATH (default: the run's dataset; required otherwise)"
    )
    p.add_argument(
        "--image-size",
        type=bounded_int(1, 4096),
        help="samples in files compared with folder:PATH: its images at this size (default: the classifier's)",
    )
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument(
        "-n",
        type=bounded_int(1, 10**7),
        default=None,
        help=f"samples to draw from a run (default {DEFAULT_N}); for files, use the first N",
    )
    p.add_argument(
        "--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)} (default all)"
    )
    p.add_argument("--out", type=output_path, help="folder for metrics.json and report.html")
    p.add_argument("--seed", type=seed, default=0, help="seed for sampling and metric subsets (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--classifier",
        help="classifier weights from `genlab train-classifier` (default: the shipped one; "
        "folder runs need one trained on their folder)",
    )
    p.add_argument(
        "--inception",
        metavar="PATH",
        help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds FID/KID/precision-recall in "
        "Inception-v3 features (slow on a CPU)",
    )
    p.add_argument(
        "--nll",
        action="store_true",
        help="runs whose model has a likelihood bound (VAEs): add the test log-likelihood (genlab.nll)",
    )
    p.add_argument(
        "--k", type=bounded_int(1, 10**6), default=5000, help="importance samples per image for --nll (default 5000)"
    )
    p.add_argument(
        "--nll-images", type=bounded_int(1, 10**6), default=1000, help="test images for --nll (default 1000)"
    )
    p.add_argument(
        "--cas",
        action="store_true",
        help="class-conditional runs: add the Classification Accuracy Score (a classifier trained on -n "
        "generated labelled samples, tested on real data) beside the same classifier trained on real images",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_sampling_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="runs side by side: metrics, samples, training curves, the best run",
        description="Compare run directories in one self-contained HTML page. Runs without "
        "metrics.json are evaluated on the fly with -n samples (default 2000).",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", type=output_path, default=Path("compare.html"), help="HTML file (default compare.html)")
    p.add_argument(
        "-n", type=bounded_int(1, 10**7), default=2000, help="samples for runs evaluated on the fly (default 2000)"
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)
