"""Evaluation: feature extractors, reference statistics, ``genlab evaluate`` / ``compare`` / ``train-classifier``.

The metric maths lives in :mod:`genlab.metrics` (pure functions on arrays); this module
supplies what the maths needs and runs it on a user's samples:

- feature extractors: genlab's shipped per-dataset CNN (``genlab/weights/<dataset>-cnn``)
  or, with ``--inception PATH``, pytorch-fid's Inception-v3. Every number names the
  extractor that produced it, because FIDs from different networks are not comparable;
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
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, DataError, GenlabError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EXTRACTOR_VERSION = 1  # bump when the shipped weights change: it is part of every extractor name
MNIST_FALLBACK_TRAIN = 8000  # test images used to train a classifier when no train split exists


def shipped_classifier_path(dataset: str) -> Path:
    """Where the package keeps the classifier for ``dataset`` (safetensors; JSON beside it)."""
    return WEIGHTS_DIR / f"{dataset}-cnn.safetensors"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- training the shipped classifiers -------------------------------------------------------
def train_dataset_classifier(dataset: str, *, epochs: int = 3, data_dir: str | None = None,
                             out: Path, seed: int = 0, device: str = "cpu",
                             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train genlab's CNN on ``dataset`` and save it to ``out`` (+ ``.json``); returns the metadata.

    Trains on the train split and measures accuracy on the whole test split. When the
    train split is missing (MNIST in some installations) it trains on test[0:8000] and
    measures on test[8000:10000], and the metadata says so in ``trained_on``/``accuracy_on``.
    """
    from .data import load_dataset
    from .metrics.classifier import accuracy, save_classifier, train_classifier

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
    t0 = time.perf_counter()
    model = train_classifier(x_train, y_train, epochs=epochs, seed=seed, device=device, log_every=100)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, x_test, y_test, device=device)
    import torch

    meta = {
        "extractor": f"genlab-cnn-{dataset}-v{EXTRACTOR_VERSION}",
        "dataset": dataset,
        "trained_on": trained_on,
        "accuracy_on": accuracy_on,
        "test_accuracy": round(acc, 4),
        "n_train": int(len(x_train)),
        "n_test": int(len(x_test)),
        "epochs": int(epochs),
        "seed": int(seed),
        "train_seconds": round(seconds, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    save_classifier(model, out, meta)
    log(f"{meta['extractor']}: test accuracy {acc:.4f} on {accuracy_on} after {epochs} epochs "
        f"({seconds:.0f}s) -> {out}")
    return meta



# -- feature extractors -------------------------------------------------------------------------
@dataclass
class Extractor:
    """A feature network plus the name every number it produces is reported under."""

    name: str  # e.g. "genlab-cnn-fashion-mnist-v1", "inception-v3-pt_inception-2015-12-05"
    sha256: str  # of the weights file: part of the reference-statistics cache key
    path: str
    features: Callable[[np.ndarray], np.ndarray]  # (N, 1, 28, 28) float32 in [0, 1] -> (N, D) float64
    probs: Callable[[np.ndarray], np.ndarray] | None = None  # -> (N, C) softmax; classifiers only
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "path": self.path,
                **{k: self.meta[k] for k in ("trained_on", "accuracy_on", "test_accuracy") if k in self.meta}}


def classifier_extractor(dataset: str, path: str | Path | None = None, *, device: str = "cpu") -> Extractor:
    """genlab's CNN for ``dataset``: the shipped weights, or ``path`` (from ``genlab train-classifier``)."""
    from .metrics.classifier import extract_features, load_classifier, predict_proba

    weights = Path(path) if path else shipped_classifier_path(dataset)
    if not weights.is_file():
        raise GenlabError(f"no classifier weights for {dataset} at {weights}; train them with "
                          f"`genlab train-classifier --dataset {dataset} --out FILE.safetensors` "
                          f"and pass --classifier FILE.safetensors")
    model, meta = load_classifier(weights, device=device)
    if meta.get("dataset", dataset) != dataset:
        raise ConfigError(f"classifier {weights} was trained on {meta.get('dataset')}, but the samples are "
                          f"compared with {dataset}; pass --classifier for a {dataset} classifier")
    sha = file_sha256(weights)
    name = meta.get("extractor") or f"genlab-cnn-{dataset}-custom"
    if path and weights.resolve() != shipped_classifier_path(dataset).resolve():
        name = f"{name}-custom-{sha[:8]}"  # a retrained network must not pass for the shipped one
    return Extractor(
        name=name, sha256=sha, path=str(weights), meta=meta,
        features=lambda x: extract_features(model, x, device=device),
        probs=lambda x: predict_proba(model, x, device=device),
    )


def inception_extractor(path: str | Path, *, device: str = "cpu") -> Extractor:
    """pytorch-fid's FID Inception-v3 (pool3, 2048-d) from its weights file."""
    from .metrics.inception import inception_features, load_fid_inception

    weights = Path(path)
    model = load_fid_inception(weights, device=device)
    stem = weights.stem
    tag = "pt_inception-2015-12-05" if stem.startswith("pt_inception-2015-12-05") else stem
    return Extractor(name=f"inception-v3-{tag}", sha256=file_sha256(weights), path=str(weights),
                     features=lambda x: inception_features(model, x, device=device))


# -- reference statistics --------------------------------------------------------------------
MAX_REFERENCE_FEATURES = 10_000  # rows kept for KID / precision-recall / KS (the whole MNIST test split)


def stats_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/genlab/stats`` (``~/.cache/genlab/stats`` when unset or relative)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "genlab" / "stats"


def reference_statistics(extractor: Extractor, images: np.ndarray, *, dataset: str, split: str,
                         cache: bool = True) -> dict[str, np.ndarray]:
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
    path = stats_cache_dir() / f"{dataset}-{split}-{extractor.name}-{extractor.sha256[:12]}-{content}.safetensors"
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
            save_tensors(path, {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma),
                                "features": torch.from_numpy(kept.astype(np.float32))},
                         metadata={"dataset": dataset, "split": split, "extractor": extractor.name,
                                   "extractor_sha256": extractor.sha256, "n": len(images)})
        except GenlabError:
            pass  # an unwritable cache only costs time
    return {"mu": mu, "sigma": sigma, "features": kept.astype(np.float32).astype(np.float64)}


# -- loading samples -------------------------------------------------------------------------
def load_samples(path: str | Path) -> np.ndarray:
    """Images from a ``.npy`` array or a folder of PNGs as float32 (N, 1, 28, 28) in [0, 1].

    ``.npy``: float in [0, 1] or uint8, shape (N, 1, 28, 28) or (N, 28, 28), read with
    ``allow_pickle=False``. PNGs: 28x28, converted to grayscale, in file-name order.
    """
    from .metrics import check_images

    path = Path(path)
    if path.is_dir():
        arr = _load_png_folder(path)
    elif path.suffix.lower() == ".npy":
        if not path.is_file():
            raise GenlabError(f"{path}: no such file")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e):
                raise GenlabError(f"{path} holds Python objects (a pickled object array); genlab never "
                                  "unpickles files: save a numeric array (float32 in [0, 1] or uint8)") from None
            raise GenlabError(f"{path}: not a readable .npy array ({e})") from None
        except OSError as e:
            raise GenlabError(f"{path}: cannot read ({e})") from None
        if not isinstance(arr, np.ndarray):
            raise GenlabError(f"{path}: expected one array, found an archive of several")
        if arr.dtype == object:
            raise GenlabError(f"{path} holds Python objects; save a numeric array")
    elif path.exists():
        raise GenlabError(f"{path}: expected a run directory, a .npy file or a folder of PNG images")
    else:
        raise GenlabError(f"{path}: no such file or directory")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise GenlabError(f"{path} holds no images (shape {arr.shape})")
    return check_images(arr, path.name, metric="genlab evaluate")


def _load_png_folder(folder: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        hint = "" if (folder / "config.json").exists() else " (and no config.json, so it is not a run directory)"
        raise GenlabError(f"{folder} contains no .png images{hint}")
    out = np.empty((len(files), 28, 28), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                if im.size != (28, 28):
                    raise GenlabError(f"{f}: images must be 28x28, this one is {im.size[0]}x{im.size[1]}")
                out[i] = np.asarray(im.convert("L"))
        except (UnidentifiedImageError, OSError) as e:
            raise GenlabError(f"{f}: not a readable PNG image ({e})") from None
    return out


# -- evaluation ------------------------------------------------------------------------------
METRICS = ("fid", "kid", "is", "pr", "ks", "modes", "memo")
MIN_SAMPLES = {"fid": 10, "kid": 10, "is": 10, "pr": 10, "ks": 10, "modes": 10, "memo": 2}
DEFAULT_N = 10_000


def parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


def _row(key: str, label: str, value: Any, better: str, extractor: str | None, explain: str,
         **extra: Any) -> dict[str, Any]:
    return {"key": key, "label": label, "value": value, "better": better, "extractor": extractor,
            "explain": explain, **extra}


@dataclass
class Evaluation:
    """The JSON-ready result plus the images the HTML report shows."""

    result: dict[str, Any]
    samples: np.ndarray  # (N, 1, 28, 28) float32: the evaluated samples
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # closest samples and their training images
    class_names: tuple[str, ...] = ()


def evaluate_samples(samples: np.ndarray, dataset: str, *, metrics: list[str] | tuple[str, ...] = METRICS,
                     data_dir: str | None = None, seed: int = 0, device: str = "cpu",
                     classifier: str | Path | None = None, inception: str | Path | None = None,
                     train_split: str = "train", source: dict[str, Any] | None = None,
                     notes: list[str] | None = None, log: Callable[[str], None] | None = None) -> Evaluation:
    """Score ``samples`` (float32 (N, 1, 28, 28) in [0, 1]) against ``dataset``'s test split.

    ``train_split`` is the split the model was trained on: memorisation compares with it,
    falling back to halves of the test split when it is missing (or is the test split
    itself). Everything random (reference subsets, KID subsets) uses ``seed``.
    """
    from .data import load_dataset
    from .metrics import (check_images, feature_statistics, frechet_distance, kernel_inception_distance,
                          ks_tests, memorization, mode_statistics, prdc)
    from .metrics.inception_score import inception_score

    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    metrics = list(metrics)
    notes = list(notes or [])
    x = check_images(samples, "samples", metric="genlab evaluate")
    n = len(x)
    short = [m for m in metrics if n < MIN_SAMPLES[m]]
    if short:
        need = max(MIN_SAMPLES[m] for m in short)
        raise GenlabError(f"{', '.join(short)} need at least {need} samples, got {n}; give more samples "
                          f"or choose other --metrics")
    test = load_dataset(dataset, "test", data_dir=data_dir)
    real_u8 = test.images.numpy()  # (R, 1, 28, 28) uint8
    real_labels = test.labels.numpy()
    rng = np.random.default_rng(seed)

    cnn = classifier_extractor(dataset, classifier, device=device)
    extractors = [cnn]
    if inception:
        extractors.append(inception_extractor(inception, device=device))
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    ref_idx = np.sort(rng.choice(min(len(real_u8), MAX_REFERENCE_FEATURES), min(n, len(real_u8)), replace=False))
    fake_cnn_features = cnn_ref_features = None
    for ext in extractors:
        if not {"fid", "kid", "pr", "ks"} & set(metrics) or (ext is not cnn and not {"fid", "kid", "pr"} & set(metrics)):
            continue
        say(f"features: {ext.name}")
        ref = reference_statistics(ext, real_u8, dataset=dataset, split="test")
        fake = ext.features(x)
        if ext is cnn:
            fake_cnn_features, cnn_ref_features = fake, ref["features"][ref_idx]
        ref_sub = ref["features"][ref_idx]
        suffix = "" if ext is cnn else "_inception"
        if "fid" in metrics:
            mu, sigma = feature_statistics(fake)
            value = frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
            rows.append(_row("fid" + suffix, "FID", value, "lower", ext.name,
                             "Fréchet distance between Gaussians fitted to real and sample features; 0 when "
                             "means and covariances match. Biased upwards at small n: compare at equal n."))
        if "kid" in metrics:
            kid = kernel_inception_distance(fake, ref_sub, n_subsets=100, subset_size=1000, seed=seed)
            details["kid" + suffix] = {**kid, "extractor": ext.name}
            rows.append(_row("kid" + suffix, "KID", kid["mean"], "lower", ext.name,
                             "Unbiased squared MMD between real and sample features (cubic kernel), averaged "
                             "over subsets; about 0 (can be slightly negative) when the distributions match.",
                             std=kid["std"]))
        if "pr" in metrics:
            pr = prdc(ref_sub, fake, k=5)
            details["pr" + suffix] = {**pr, "extractor": ext.name, "n_real": len(ref_sub)}
            for key, label, better, text in (
                ("precision", "precision", "higher", "fraction of samples that fall inside the real data's "
                 "k-NN manifold: fidelity (0..1)."),
                ("recall", "recall", "higher", "fraction of real images inside the samples' k-NN manifold: "
                 "diversity (0..1)."),
                ("density", "density", "target:1", "how many real neighbourhoods contain each sample, "
                 "normalised: about 1 for real data; far below = off-manifold, far above = crowding "
                 "into dense regions."),
                ("coverage", "coverage", "higher", "fraction of real images with a sample nearby: "
                 "diversity that ignores outlying samples (0..1)."),
            ):
                rows.append(_row(key + suffix, label, pr[key], better, ext.name, text))
    probs = None
    if {"is", "modes"} & set(metrics):
        probs = cnn.probs(x)
    if "is" in metrics:
        score = inception_score(probs, splits=10)
        details["is"] = {**score, "extractor": cnn.name}
        rows.append(_row("is", "Inception Score", score["mean"], "higher", cnn.name,
                         "exp(E KL(p(y|x) || p(y))) from the classifier: confident and varied class "
                         "predictions; from 1 to the number of classes.", std=score["std"]))
    if "modes" in metrics:
        modes = mode_statistics(probs, num_classes=test.num_classes, real_labels=real_labels)
        modes["real_histogram"] = (np.bincount(real_labels, minlength=test.num_classes) / len(real_labels)).tolist()
        modes["class_names"] = list(test.class_names)
        details["modes"] = {**modes, "extractor": cnn.name}
        rows.append(_row("classes_covered", "classes covered", modes["classes_covered"], "higher", cnn.name,
                         f"classes receiving at least {modes['min_fraction']:.1%} of the samples, of "
                         f"{test.num_classes}; fewer means mode collapse."))
        rows.append(_row("class_kl", "class KL to real", modes["kl_to_real"], "lower", cnn.name,
                         "KL(sample class histogram || real histogram) in nats; 0 when classes appear as "
                         "often as in the real data."))
    if "ks" in metrics:
        ks = ks_tests(real_u8[ref_idx], x, real_features=cnn_ref_features, fake_features=fake_cnn_features)
        details["ks"] = {**ks, "extractor": cnn.name}
        rows.append(_row("ks_differing", "KS tests differing", ks["n_differing"], "lower", cnn.name,
                         f"of {ks['n_tests']} per-image statistics (ink, centre, blur, ...; PCs of the "
                         f"features), how many differ from real data (KS test, Holm-adjusted, alpha "
                         f"{ks['alpha']}); 0 is best.", of=ks["n_tests"]))
    pairs = None
    if "memo" in metrics:
        memo_train, memo_held, memo_desc = _memorisation_sets(test, train_split, data_dir, notes)
        held_idx = np.sort(rng.choice(len(memo_held), min(n, len(memo_held)), replace=False))
        say(f"memorisation: nearest of {n} samples among {len(memo_train)} training images")
        memo = memorization(x, memo_train, memo_held[held_idx], quantile=0.01, n_closest=10)
        memo.update(memo_desc, n_heldout=len(held_idx))
        details["memo"] = memo
        rows.append(_row("memo_copies", "likely copies", memo["fraction_copies"], f"target:{memo['quantile']}",
                         "pixels", f"fraction of samples closer to a training image than {memo['quantile']:.0%} "
                         "of unseen real images are; about that fraction for a model that generalises, far "
                         "above it for one that copies."))
        rows.append(_row("memo_nn_ratio", "NN distance ratio", memo["median_ratio"], "target:1", "pixels",
                         "median distance from a sample to its nearest training image over the same for "
                         "unseen real images; below 1 = closer than new data (copying), well above 1 = "
                         "far from any training image."))
        s_idx = [c["sample_index"] for c in memo["closest"]]
        t_idx = [c["train_index"] for c in memo["closest"]]
        pairs = (x[s_idx], check_images(memo_train[t_idx], "train", metric="report"))
    from . import __version__

    result = {
        "genlab_version": __version__,
        "dataset": dataset,
        "reference": {"split": "test", "n": int(len(real_u8)), "n_subset": int(len(ref_idx))},
        "n": int(n),
        "seed": int(seed),
        "metrics_requested": metrics,
        "source": source or {},
        "extractors": {e.name: e.describe() for e in extractors},
        "summary": rows,
        "details": details,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return Evaluation(result=result, samples=x, pairs=pairs, class_names=tuple(test.class_names))


def _memorisation_sets(test, train_split: str, data_dir: str | None, notes: list[str]):
    """(training images, held-out images, description) for the memorisation check."""
    from .data import load_dataset

    half = len(test) // 2
    fallback = (test.images[:half].numpy(), test.images[half:].numpy(),
                {"train_set": f"{test.name} test[0:{half}] (pseudo-training)",
                 "heldout_set": f"{test.name} test[{half}:{len(test)}]"})
    if train_split == "test":
        notes.append(f"the model was trained on the {test.name} test split, so the reference images are its "
                     f"training data and every score is optimistic; memorisation compares with test[0:{half}] "
                     f"against test[{half}:], which the model has also seen")
        return fallback
    try:
        train = load_dataset(test.name, train_split, data_dir=data_dir, download=False)
    except DataError:
        notes.append(f"no {test.name} {train_split} split found: memorisation uses test[0:{half}] as a "
                     f"pseudo-training set and test[{half}:] as held-out images, which says nothing about "
                     f"copying of the real training set")
        return fallback
    return (train.images.numpy(), test.images.numpy(),
            {"train_set": f"{test.name} {train_split}", "heldout_set": f"{test.name} test"})


def cmd_train_classifier(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(f"{args.dataset}-cnn.safetensors")
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors (a JSON file is written beside it), got {out}")
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    train_dataset_classifier(args.dataset, epochs=args.epochs, data_dir=args.data_dir, out=out,
                             seed=args.seed, device=_device(args.device))
    return 0


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU")
    return name


def evaluate_path(target: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                  n: int | None = None, metrics: list[str] | tuple[str, ...] = METRICS, seed: int = 0,
                  device: str = "cpu", classifier: str | None = None, inception: str | None = None,
                  log: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluate a run directory (sampling ``n``, default 10,000), a ``.npy`` file or a PNG folder."""
    import torch

    from .checkpoint import CONFIG_FILE, load_run
    from .sample import generate

    target = Path(target)
    say = log or (lambda _msg: None)
    notes: list[str] = []
    if target.is_dir() and (target / CONFIG_FILE).is_file():
        model, run = load_run(target, device=device)
        if dataset and dataset != run.data.dataset:
            notes.append(f"the run was trained on {run.data.dataset} but is compared with {dataset} (--dataset)")
        dataset = dataset or run.data.dataset
        data_dir = data_dir if data_dir is not None else run.data.data_dir
        n = DEFAULT_N if n is None else n
        if n < 1:
            raise ConfigError(f"-n must be >= 1, got {n}")
        say(f"sampling {n} images from {target} ({run.family}/{run.preset})")
        gen = torch.Generator(device=model.device).manual_seed(seed)
        samples = generate(model, n, generator=gen).numpy()
        source = {"kind": "run", "path": str(target), "name": target.name, "family": run.family,
                  "preset": run.preset, "trained_on": f"{run.data.dataset} {run.data.split}"}
        train_split = run.data.split if run.data.dataset == dataset else "train"
    else:
        if dataset is None:
            raise ConfigError(f"say which dataset {target} should be compared with: --dataset mnist|fashion-mnist")
        samples = load_samples(target)
        if n is not None:
            if n < 1:
                raise ConfigError(f"-n must be >= 1, got {n}")
            if n < len(samples):
                samples = samples[:n]
            elif n > len(samples):
                notes.append(f"-n {n} asked for, but {target} holds only {len(samples)} images: all are used")
        source = {"kind": "npy" if target.is_file() else "png-folder", "path": str(target),
                  "name": target.name}
        train_split = "train"
    from .data import DATASETS

    if dataset not in DATASETS:  # one clear error before any work
        raise DataError(f"unknown dataset {dataset!r}; valid names: {', '.join(DATASETS)}")
    return evaluate_samples(samples, dataset, metrics=metrics, data_dir=data_dir, seed=seed, device=device,
                            classifier=classifier, inception=inception, train_split=train_split,
                            source=source, notes=notes, log=say)


def default_outputs(target: Path, out: str | None) -> tuple[Path, Path]:
    """(metrics.json, report.html): into --out, a run directory, a PNG folder, or beside a .npy."""
    if out:
        folder = Path(out)
        return folder / "metrics.json", folder / "report.html"
    if target.is_dir():
        return target / "metrics.json", target / "report.html"
    return target.with_name(f"{target.stem}-metrics.json"), target.with_name(f"{target.stem}-report.html")


def add_nll(evaluation: Evaluation, run_dir: Path, *, k: int, n_images: int, seed: int, device: str,
            data_dir: str | None) -> None:
    """Put :func:`genlab.nll.evaluate_vae`'s test log-likelihood into the evaluation."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("genlab.nll") is None:
        raise GenlabError("--nll needs genlab.nll, which this genlab installation does not have")
    nll = importlib.import_module("genlab.nll")
    if not hasattr(nll, "evaluate_vae"):
        raise GenlabError("--nll needs genlab.nll.evaluate_vae, which this genlab installation does not have")
    res = nll.evaluate_vae(run_dir, evaluation.result["dataset"], k=k, n_images=n_images, seed=seed,
                           device=device, data_dir=data_dir)
    evaluation.result["nll"] = res
    evaluation.result["summary"].append(_row(
        "iwae_nll", f"IWAE NLL (k={k})", res["iwae_nll_nats"], "lower", None,
        f"negative test log-likelihood in nats per image, importance-weighted bound with k={k} "
        f"({res.get('likelihood', '')}); lower is better; only comparable between VAEs with the same likelihood.",
        std=res.get("iwae_nll_sem")))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .report import evaluation_html, metrics_table_text, write_metrics_json

    target = Path(args.target)
    if not target.exists():
        raise GenlabError(f"{target}: no such run directory, .npy file or PNG folder")
    metrics = parse_metrics(args.metrics)
    device = _device(args.device)
    is_run = target.is_dir() and (target / "config.json").is_file()
    if args.nll and not is_run:
        raise ConfigError("--nll needs a VAE run directory (the likelihood comes from the model, not samples)")
    if args.nll:
        try:
            family = json.loads((target / "config.json").read_text()).get("family")
        except (OSError, ValueError, AttributeError) as e:
            raise GenlabError(f"{target / 'config.json'}: unreadable ({e})") from None
        if family != "vae":
            raise ConfigError(f"--nll works on VAE runs; {target} is a {family} run")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    ev = evaluate_path(target, dataset=args.dataset, data_dir=args.data_dir, n=args.n, metrics=metrics,
                       seed=args.seed, device=device, classifier=args.classifier, inception=args.inception, log=log)
    if args.nll:
        log(f"test log-likelihood: k={args.k} on {args.nll_images} images")
        add_nll(ev, target, k=args.k, n_images=args.nll_images, seed=args.seed, device=device,
                data_dir=args.data_dir)
    metrics_path, html_path = default_outputs(target, args.out)
    write_metrics_json(ev.result, metrics_path)
    from .checkpoint import atomic_write_text

    atomic_write_text(html_path, evaluation_html(ev))
    if not args.quiet:
        print(f"{ev.result['dataset']}, n={ev.result['n']}, seed {ev.result['seed']}")
        for note in ev.result["notes"]:
            print(f"note: {note}")
        print(metrics_table_text(ev.result))
        print(f"wrote {metrics_path} and {html_path}")
    return 0


def compare_runs(run_dirs: list[str | Path], *, n: int = 2000, seed: int = 0, device: str = "cpu",
                 data_dir: str | None = None, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Each run's metrics (its metrics.json, or an on-the-fly evaluation with ``n`` samples) and looks."""
    from .checkpoint import CONFIG_FILE

    say = log or (lambda _msg: None)
    runs = []
    names: set[str] = set()
    for d in map(Path, run_dirs):
        if not (d / CONFIG_FILE).is_file():
            raise GenlabError(f"{d}: not a genlab run directory (no {CONFIG_FILE})")
        try:
            config = json.loads((d / CONFIG_FILE).read_text())
        except (OSError, ValueError) as e:
            raise GenlabError(f"{d / CONFIG_FILE}: unreadable ({e})") from None
        on_the_fly = not (d / "metrics.json").is_file()
        if on_the_fly:
            say(f"{d} has no metrics.json: evaluating it now with n={n}")
            result = evaluate_path(d, n=n, seed=seed, device=device, data_dir=data_dir, log=say).result
        else:
            try:
                result = json.loads((d / "metrics.json").read_text())
                result["summary"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise GenlabError(f"{d / 'metrics.json'} is not a genlab evaluation ({e}); run "
                                  f"`genlab evaluate {d}` again") from None
        name = d.name
        while name in names:  # two runs with the same folder name
            name += "'"
        names.add(name)
        png = d / "samples.png"
        runs.append({"name": name, "dir": str(d), "family": config.get("family"), "preset": config.get("preset"),
                     "result": result, "on_the_fly": on_the_fly,
                     "samples_png": png.read_bytes() if png.is_file() else None})
    return runs


def cmd_compare(args: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_text
    from .report import best_runs, compare_html, verdict

    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    runs = compare_runs(args.runs, n=args.n, seed=args.seed, device=_device(args.device),
                        data_dir=args.data_dir, log=log)
    out = Path(args.out)
    atomic_write_text(out, compare_html(runs))
    if not args.quiet:
        for line in verdict(runs, best_runs(runs)):
            print(line)
        print(f"wrote {out}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-classifier", help="train the CNN whose features genlab's metrics use",
                       description="Train genlab's small CNN classifier (the feature extractor of "
                                   "`genlab evaluate`) on a dataset's train split.")
    p.add_argument("--dataset", required=True, choices=["mnist", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=3, help="passes over the training images (default 3)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument("--out", help="weights file, .safetensors (default ./DATASET-cnn.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("evaluate", help="score samples against real data (FID, KID, IS, precision/recall, ...)",
                       description="Evaluate a run directory (draws -n samples), a .npy array or a folder of "
                                   "28x28 PNGs against the dataset's test split. Writes metrics.json and a "
                                   "self-contained report.html (into the run directory, the PNG folder, beside "
                                   "the .npy, or into --out).")
    p.add_argument("target", help="run directory, SAMPLES.npy (float32 in [0,1] or uint8, (N,1,28,28) or "
                                  "(N,28,28)) or a folder of PNG images")
    p.add_argument("--dataset", help="mnist or fashion-mnist (default: the run's dataset; required otherwise)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument("-n", type=int, default=None,
                   help=f"samples to draw from a run (default {DEFAULT_N}); for files, use the first N")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated subset of {','.join(METRICS)} (default all)")
    p.add_argument("--out", help="folder for metrics.json and report.html")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and metric subsets (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--classifier", help="classifier weights from `genlab train-classifier` (default: shipped)")
    p.add_argument("--inception", metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds FID/KID/precision-recall in "
                        "Inception-v3 features (slow on a CPU)")
    p.add_argument("--nll", action="store_true", help="VAE runs: add the IWAE test log-likelihood (genlab.nll)")
    p.add_argument("--k", type=int, default=5000, help="importance samples per image for --nll (default 5000)")
    p.add_argument("--nll-images", type=int, default=1000, help="test images for --nll (default 1000)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="runs side by side: metrics, samples, training curves, the best run",
                       description="Compare run directories in one self-contained HTML page. Runs without "
                                   "metrics.json are evaluated on the fly with -n samples (default 2000).")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="compare.html", help="HTML file (default compare.html)")
    p.add_argument("-n", type=int, default=2000, help="samples for runs evaluated on the fly (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)
