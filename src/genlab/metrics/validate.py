"""Input checks shared by every metric.

Each metric calls these first so that a user mistake (wrong shape, NaN, ints, too few
samples) surfaces as one :class:`~genlab.errors.GenlabError` naming the argument and the
metric, instead of a numpy broadcasting error three calls deep.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genlab.errors import GenlabError


class MetricInputError(GenlabError):
    """Images, features or probabilities given to a metric are unusable."""


def _to_numpy(x: Any) -> Any:
    # Accept torch tensors (e.g. genlab.data's uint8 images) without importing torch here.
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        return x.detach().cpu().numpy()
    return x


def require_samples(n: int, minimum: int, *, metric: str, name: str) -> None:
    """Raise unless ``n >= minimum``; the message names the metric and the minimum."""
    if n < minimum:
        raise MetricInputError(f"{metric} needs at least {minimum} samples in {name!r}, got {n}")


def check_images(
    x: Any,
    name: str = "images",
    *,
    metric: str = "this metric",
    min_samples: int = 1,
    size: tuple[int, int] | None = (28, 28),
    channels: int | tuple[int, ...] | None = 1,
) -> np.ndarray:
    """Validate a batch of images and return it as float32 ``(N, C, H, W)`` in [0, 1].

    Accepted: a numpy array (or torch tensor) of shape ``(N, C, H, W)``, or ``(N, H, W)`` for
    grayscale; floating point with finite values in [0, 1], or ``uint8`` (divided by 255). Any
    other integer or boolean dtype is refused rather than guessed at. ``channels`` is the channel
    count required (an int, a tuple of allowed counts, or None for any); the default 1 is
    genlab's 28x28 grayscale classifiers. ``size=None`` skips the ``(H, W)`` check (pixel-space
    metrics work at any size).
    """
    x = _to_numpy(x)
    if not isinstance(x, np.ndarray):
        raise MetricInputError(f"{metric}: {name!r} must be a numpy array, got {type(x).__name__}")
    allowed = (channels,) if isinstance(channels, int) else channels
    if x.ndim == 3 and (allowed is None or 1 in allowed):
        x = x[:, None]
    if allowed == (1,) and (x.ndim != 4 or x.shape[1] != 1):
        raise MetricInputError(
            f"{metric}: {name!r} must have shape (N, 1, H, W) or (N, H, W) (grayscale), got {tuple(x.shape)}"
        )
    if x.ndim != 4 or (allowed is not None and x.shape[1] not in allowed):
        which = "C" if allowed is None else f"C in {{{', '.join(map(str, allowed))}}}"
        raise MetricInputError(f"{metric}: {name!r} must have shape (N, C, H, W) with {which}, got {tuple(x.shape)}")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise MetricInputError(f"{metric}: {name!r} must be {size[0]}x{size[1]} images, got {x.shape[2]}x{x.shape[3]}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise MetricInputError(f"{metric}: {name!r} contains NaN or infinite values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise MetricInputError(
                f"{metric}: {name!r} values must lie in [0, 1], found range "
                f"[{lo:.4g}, {hi:.4g}]; rescale first (e.g. (x + 1) / 2 for tanh outputs)"
            )
    else:
        raise MetricInputError(f"{metric}: {name!r} has dtype {x.dtype}; use float in [0, 1] or uint8 in [0, 255]")
    require_samples(x.shape[0], min_samples, metric=metric, name=name)
    return x


def check_features(f: Any, name: str = "features", *, metric: str = "this metric", min_samples: int = 1) -> np.ndarray:
    """Validate a 2-D ``(N, D)`` array of finite real features; return it as float64."""
    f = _to_numpy(f)
    if not isinstance(f, np.ndarray):
        raise MetricInputError(f"{metric}: {name!r} must be a numpy array, got {type(f).__name__}")
    if f.ndim != 2:
        raise MetricInputError(f"{metric}: {name!r} must be a 2-D (N, D) feature array, got shape {tuple(f.shape)}")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
        raise MetricInputError(f"{metric}: {name!r} has non-numeric dtype {f.dtype}")
    f = f.astype(np.float64, copy=False)
    if not np.isfinite(f).all():
        raise MetricInputError(f"{metric}: {name!r} contains NaN or infinite values")
    require_samples(f.shape[0], min_samples, metric=metric, name=name)
    return f


def check_same_dim(a: np.ndarray, b: np.ndarray, *, metric: str, names: tuple[str, str]) -> None:
    """Raise unless two feature arrays have the same feature dimension."""
    if a.shape[1] != b.shape[1]:
        raise MetricInputError(
            f"{metric}: {names[0]!r} has {a.shape[1]} features per sample but "
            f"{names[1]!r} has {b.shape[1]}; both must come from the same extractor"
        )
