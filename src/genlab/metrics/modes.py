"""Mode collapse seen through a classifier's predicted classes.

A generator that drops classes (modes) can still have sharp samples; counting which
classes a trained classifier assigns to the samples makes the collapse visible.

Rules chosen here (documented because they change the numbers):

- A class is *covered* when it receives at least ``min_fraction`` of the samples; the
  default ``1 / (4 * num_classes)`` is a quarter of its fair share (2.5 % of samples for 10
  classes), so a handful of misclassified samples does not make a dropped class look covered.
- ``normalized_entropy`` = H(p_fake) / log(num_classes): 1 for a uniform histogram, 0 when
  every sample falls in one class.
- ``kl_to_real`` = KL(p_fake || p_real) = sum_c p_fake(c) log(p_fake(c) / p_real(c)), in nats.
  This direction stays finite when the model drops classes (a collapse onto m of C equally
  likely classes gives log(C / m)). ``p_real`` is the real label histogram if given, else
  uniform; empty real classes get a 1e-12 floor so the value stays finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genlab.metrics.validate import MetricInputError, _to_numpy


def _labels(x: Any, name: str, num_classes: int) -> np.ndarray:
    x = _to_numpy(x)
    a = np.asarray(x)
    if a.ndim == 2:  # probabilities or logits: take the predicted class
        if a.shape[1] != num_classes:
            raise MetricInputError(f"mode statistics: {name!r} has {a.shape[1]} columns but num_classes={num_classes}")
        if not np.isfinite(a).all():
            raise MetricInputError(f"mode statistics: {name!r} contains NaN or infinite values")
        a = a.argmax(axis=1)
    elif a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise MetricInputError(
            f"mode statistics: {name!r} must be integer labels (N,) or class scores (N, C), "
            f"got dtype {a.dtype} shape {a.shape}"
        )
    if len(a) == 0:
        raise MetricInputError(f"mode statistics needs at least 1 sample in {name!r}")
    if a.min() < 0 or a.max() >= num_classes:
        raise MetricInputError(
            f"mode statistics: {name!r} labels must lie in [0, {num_classes - 1}], found [{a.min()}, {a.max()}]"
        )
    return a


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of samples in each class, (num_classes,), summing to 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def mode_statistics(
    predictions: Any,
    *,
    num_classes: int = 10,
    real_labels: Any = None,
    min_fraction: float | None = None,
) -> dict[str, Any]:
    """Class histogram, normalised entropy, classes covered and KL to the real histogram.

    ``predictions``: predicted labels (N,) int, or class probabilities/logits (N, C) whose
    arg-max is taken. ``real_labels`` likewise (e.g. the test split's labels).
    Returns ``{"histogram", "counts", "normalized_entropy", "classes_covered",
    "num_classes", "min_fraction", "kl_to_real", "missing_classes"}``.
    """
    if num_classes < 2:
        raise MetricInputError(f"mode statistics: num_classes must be >= 2, got {num_classes}")
    if min_fraction is None:
        min_fraction = 1.0 / (4 * num_classes)
    pred = _labels(predictions, "predictions", num_classes)
    p = class_histogram(pred, num_classes)
    if real_labels is None:
        q = np.full(num_classes, 1.0 / num_classes)
    else:
        q = class_histogram(_labels(real_labels, "real_labels", num_classes), num_classes)
    q = np.maximum(q, 1e-12)
    nz = p > 0
    entropy = float(-(p[nz] * np.log(p[nz])).sum())
    covered = p >= min_fraction
    return {
        "histogram": p.tolist(),
        "counts": np.bincount(pred, minlength=num_classes).tolist(),
        "normalized_entropy": entropy / float(np.log(num_classes)),
        "classes_covered": int(covered.sum()),
        "num_classes": int(num_classes),
        "min_fraction": float(min_fraction),
        "kl_to_real": float((p[nz] * np.log(p[nz] / q[nz])).sum()),
        "missing_classes": [int(c) for c in np.flatnonzero(~covered)],
    }
