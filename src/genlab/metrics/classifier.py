"""A small CNN classifier for images of any size and channel count: the feature space for genlab's metrics.

Inception-v3 features (FID as in Heusel et al. 2017) are trained on ImageNet photos and say
little about MNIST-like digits or clothes, so genlab also ships a domain classifier. Its
128-d penultimate layer is the feature space for FID/KID/precision-recall/KS projections,
and its logits give class predictions for Inception Score and mode counting.

Architecture (about 0.43 M parameters; one Fashion-MNIST epoch takes about a minute on 2 CPU
cores, and 2 epochs reach about 90.6 % test accuracy)::

    (N, C, H, W) in [0, 1] -> normalise to [-1, 1]               # shipped: C = 1, H = W = 28
    conv3x3(32)-BN-ReLU -> conv3x3(32)-BN-ReLU -> maxpool2      # (N, 32, H/2, W/2)
    conv3x3(64)-BN-ReLU -> maxpool2                             # (N, 64, H/4, W/4)
    adaptive average pool to 7x7 -> flatten                     # (N, 3136); the identity at 28x28
    linear(3136, 128)-ReLU                                      # features: (N, 128)
    dropout(0.3) -> linear(128, num_classes)                    # logits:   (N, num_classes)

C, H and W come from the data the network is trained on (``genlab train-classifier --dataset
folder:PATH``) and are recorded in the sidecar; the adaptive pool is parameter-free, so the
layout of the weights is the same at every size, and at 28x28 (7x7 after two pools) it averages
single cells, so the shipped MNIST and Fashion-MNIST weights give exactly the features they
always did.

Weights are stored as safetensors plus a JSON sidecar (never pickle), so a downloaded
extractor can be loaded without running code from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import CheckpointError
from genlab.metrics.validate import MetricInputError, check_images

FORMAT_VERSION = 2  # 2: the config records channels, height and width (version 1 files are 1x28x28)
ARCHITECTURE = "genlab-cnn"
_ARCHITECTURES = (ARCHITECTURE, "genlab-cnn28")  # "genlab-cnn28": the same network, written before sizes varied
POOLED = 7  # side of the map the adaptive pool gives: what two 2x pools leave of a 28x28 image
MIN_SIDE = 4  # two 2x max pools need at least 4 pixels to leave one


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int = 10  # MNIST and Fashion-MNIST both have 10 classes
    feature_dim: int = 128  # small enough that a 2-sample covariance (FID) is well estimated
    dropout: float = 0.3  # only before the last layer, so features are unaffected at eval
    channels: int = 1  # input channels; the shipped classifiers read grayscale (their sidecars omit it)
    height: int = 28  # input size the network was trained at; inputs of another size are refused
    width: int = 28

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if min(self.height, self.width) < MIN_SIDE:
            raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE}, got {self.height}x{self.width}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the network reads."""
        return (self.channels, self.height, self.width)


class _PoolTo(nn.Module):
    """Adaptive average pool to ``side`` x ``side``, then flatten: parameter-free, so the weights'
    names and shapes do not depend on the input size."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.side, self.side):  # at 28x28 inputs nothing is averaged
            x = F.adaptive_avg_pool2d(x, self.side)
        return x.flatten(1)


class CNNClassifier(nn.Module):
    """conv-conv-pool-conv-pool-adaptive pool -> 128-d features -> logits. Inputs are [0, 1] images."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        c = self.config
        self.body = nn.Sequential(
            nn.Conv2d(c.channels, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, 32, H/2, W/2)
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, 64, H/4, W/4)
            _PoolTo(POOLED),  # (N, 64 * 7 * 7); same index as the Flatten it replaced, so weight names stay
            nn.Linear(64 * POOLED * POOLED, c.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.feature_dim, c.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations, (N, C, H, W) in [0, 1] -> (N, feature_dim)."""
        return self.body(x * 2.0 - 1.0)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits, (N, C, H, W) in [0, 1] -> (N, num_classes)."""
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)


def _as_float_images(images: Any, name: str, metric: str, shape: tuple[int, int, int] | None) -> Tensor:
    """``images`` checked to be (N, C, H, W) of ``shape`` (None: 1 or 3 channels, any size), as a float tensor."""
    if shape is None:
        x = check_images(images, name, metric=metric, size=None, channels=(1, 3))
    else:
        x = check_images(images, name, metric=metric, size=shape[1:], channels=shape[0])
    return torch.from_numpy(x if x.flags.writeable else x.copy())


@torch.no_grad()
def extract_features(model: CNNClassifier, images: Any, *, batch_size: int = 500, device: str = "cpu") -> np.ndarray:
    """Penultimate features of ``images`` (N, C, H, W) of the model's input shape as a float64 (N, D) array."""
    x = _as_float_images(images, "images", "extract_features", model.config.input_shape)
    return _batched(lambda xb: model.features(xb).double(), model, x, batch_size, device)


@torch.no_grad()
def predict_proba(model: CNNClassifier, images: Any, *, batch_size: int = 500, device: str = "cpu") -> np.ndarray:
    """Softmax class probabilities of ``images`` as a float64 (N, num_classes) array."""
    x = _as_float_images(images, "images", "predict_proba", model.config.input_shape)
    return _batched(lambda xb: F.softmax(model.logits(xb).double(), dim=1), model, x, batch_size, device)


def _batched(fn, model: CNNClassifier, x: Tensor, batch_size: int, device: str) -> np.ndarray:
    """``fn`` over ``x`` in batches on ``device``, concatenated on the CPU (memory stays bounded)."""
    model.to(device).eval()
    return torch.cat([fn(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]).numpy()


def accuracy(model: CNNClassifier, images: Any, labels: Any, *, device: str = "cpu") -> float:
    """Fraction of ``images`` whose arg-max prediction equals ``labels``."""
    pred = predict_proba(model, images, device=device).argmax(axis=1)
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    return float((pred == labels).mean())


def train_classifier(
    images_uint8: Any,
    labels: Any,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    config: ClassifierConfig | None = None,
    log_every: int = 0,
    max_steps: int | None = None,
) -> CNNClassifier:
    """Train a :class:`CNNClassifier` with Adam on in-memory images; returns it in eval mode.

    ``images_uint8`` is (N, C, H, W) uint8 (or float in [0, 1]), C 1 or 3; ``labels`` int (N,).
    Without ``config`` the network takes its channels and size from the images and has 10
    classes; a ``config`` must match the images' shape. Batches are drawn by a seeded
    permutation of indices each epoch, so a run is reproducible on one device. Training stops
    after ``epochs`` passes or ``max_steps`` batches, whichever comes first. ``log_every`` > 0
    prints the running loss every that many steps.
    """
    x = _as_float_images(images_uint8, "images_uint8", "train_classifier", config.input_shape if config else None)
    y = torch.from_numpy(np.array(labels.cpu() if isinstance(labels, Tensor) else labels))
    if y.ndim != 1 or len(y) != len(x):
        raise MetricInputError(
            f"train_classifier: labels must be a 1-D array with one label per image "
            f"({len(x)}), got shape {tuple(y.shape)}"
        )
    y = y.long()
    config = config or ClassifierConfig(channels=x.shape[1], height=x.shape[2], width=x.shape[3])
    if int(y.min()) < 0 or int(y.max()) >= config.num_classes:
        raise MetricInputError(
            f"train_classifier: labels must lie in [0, {config.num_classes - 1}], "
            f"found [{int(y.min())}, {int(y.max())}]"
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CNNClassifier(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = x.to(device), y.to(device)
    step = 0
    model.train()
    for _ in range(epochs):
        if max_steps is not None and step >= max_steps:
            break
        perm = torch.randperm(len(x), generator=gen).to(device)
        for i in range(0, len(x), batch_size):
            if max_steps is not None and step >= max_steps:
                break
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if log_every and step % log_every == 0:
                print(f"step {step} loss {loss.item():.4f}", flush=True)
    return model.eval()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_classifier(model: CNNClassifier, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``path`` (safetensors weights) and ``path`` with suffix ``.json`` (config + meta).

    ``meta`` should hold e.g. ``{"extractor": "genlab-cnn-fashion-mnist-v1",
    "dataset": "fashion-mnist", "test_accuracy": 0.91}``; it must be JSON-serialisable.
    """
    from safetensors.torch import save_file

    from genlab import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sidecar = {
        "format_version": FORMAT_VERSION,
        "genlab_version": __version__,
        "architecture": ARCHITECTURE,
        "config": asdict(model.config),
        "meta": meta,
    }
    text = json.dumps(sidecar, indent=2, sort_keys=True)  # fails early if meta is not JSON
    save_file(state, str(path))
    _sidecar(path).write_text(text + "\n")


def load_classifier(path: str | Path, *, device: str = "cpu") -> tuple[CNNClassifier, dict[str, Any]]:
    """Load weights written by :func:`save_classifier`; returns ``(model in eval mode, meta)``.

    Only safetensors and JSON are read, so nothing in the files can execute code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    side = _sidecar(path)
    for p in (path, side):
        if not p.is_file():
            raise CheckpointError(f"classifier file not found: {p}")
    try:
        info = json.loads(side.read_text())
        config = ClassifierConfig(**info["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"classifier sidecar {side} is not a genlab classifier description: {e}") from e
    if info.get("architecture") not in _ARCHITECTURES:
        raise CheckpointError(f"{side}: unknown classifier architecture {info.get('architecture')!r}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read classifier weights {path}: {e}") from e
    model = CNNClassifier(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not match the classifier layout: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), dict(info.get("meta", {}))


def _benchmark() -> None:  # pragma: no cover - a one-off measurement, see the report
    import gzip
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")

    def idx(name: str, offset: int) -> np.ndarray:
        with gzip.open(root / name, "rb") as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=offset)

    xtr = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    ytr = idx("train-labels-idx1-ubyte.gz", 8)
    xte = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    yte = idx("t10k-labels-idx1-ubyte.gz", 8)
    print("threads", torch.get_num_threads())
    for epochs in (1, 2):
        t0 = time.perf_counter()
        model = train_classifier(xtr, ytr, epochs=epochs, seed=0)
        dt = time.perf_counter() - t0
        print(f"epochs={epochs} train_time={dt:.1f}s test_acc={accuracy(model, xte, yte):.4f}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    _benchmark()
