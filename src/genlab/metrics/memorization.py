"""Memorisation: are generated samples closer to training images than new real images are?

The yardstick is held-out real data: the distance from each held-out image to its nearest
training image shows how close an *unseen* sample of the true distribution typically gets.
A model that copies its training set puts samples much closer than that.

Rule (documented because it sets the numbers): with ``quantile`` q (default 0.01), the
threshold t is the q-quantile of the held-out nearest-neighbour distances; a sample with
nearest-training distance <= t is a *likely copy*. A model that generalises like fresh data
has ``fraction_copies`` close to q; a copying model far above it. Pixel-space distance
catches literal copies; feature-space distance also catches near-copies (shifted,
re-noised), at the cost of calling two different images of the same look "copies".

Inputs are either all images (N, C, H, W) / (N, H, W), compared in pixel space (flattened,
Euclidean), or all 2-D (N, D) feature arrays from the same extractor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genlab.metrics.validate import MetricInputError, _to_numpy, check_features, check_images


def nearest_neighbours(
    queries: np.ndarray, reference: np.ndarray, *, chunk_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance (N,) and index (N,) of each query's nearest reference row."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float64))
    r = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float64))
    dist = torch.empty(len(q), dtype=torch.float64)
    idx = torch.empty(len(q), dtype=torch.int64)
    for i in range(0, len(q), chunk_size):
        d = torch.cdist(q[i : i + chunk_size], r)  # (chunk, R)
        dist[i : i + chunk_size], idx[i : i + chunk_size] = d.min(dim=1)
    return dist.numpy(), idx.numpy()


def _as_vectors(arrays: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    ndims = {k: np.asarray(_to_numpy(v)).ndim for k, v in arrays.items()}
    if all(n == 2 for n in ndims.values()):
        out = {k: check_features(v, k, metric="memorization", min_samples=1) for k, v in arrays.items()}
        space = "features"
    elif all(n in (3, 4) for n in ndims.values()):
        out = {
            k: check_images(v, k, metric="memorization", size=None, channels=(1, 3)).reshape(len(v), -1)
            for k, v in arrays.items()
        }
        space = "pixel"
    else:
        raise MetricInputError(
            "memorization: pass all three of samples/train/heldout as images (N, 1, H, W) "
            f"or all as (N, D) features; got ndims {ndims}"
        )
    dims = {k: v.shape[1] for k, v in out.items()}
    if len(set(dims.values())) != 1:
        raise MetricInputError(f"memorization: inputs differ in size per sample: {dims}")
    return out, space


def memorization(
    samples: Any,
    train: Any,
    heldout: Any,
    *,
    quantile: float = 0.01,
    n_closest: int = 10,
    chunk_size: int = 512,
) -> dict[str, Any]:
    """Compare samples' nearest-training distances with held-out real images' (see module doc).

    Returns ``{"space", "quantile", "threshold", "fraction_copies", "n_copies",
    "expected_fraction", "sample_nn_median", "heldout_nn_median", "median_ratio",
    "closest": [{"sample_index", "train_index", "distance"}, ...]}``; ``closest`` lists the
    ``n_closest`` sample/training pairs with the smallest distances, nearest first, for
    showing side by side in a report. ``median_ratio`` < 1 means samples sit closer to the
    training set than fresh data does.
    """
    if not 0 < quantile < 1:
        raise MetricInputError(f"memorization: quantile must be in (0, 1), got {quantile}")
    v, space = _as_vectors({"samples": samples, "train": train, "heldout": heldout})
    if len(v["heldout"]) < 2:
        raise MetricInputError(f"memorization needs at least 2 held-out images, got {len(v['heldout'])}")
    d_s, i_s = nearest_neighbours(v["samples"], v["train"], chunk_size=chunk_size)
    d_h, _ = nearest_neighbours(v["heldout"], v["train"], chunk_size=chunk_size)
    threshold = float(np.quantile(d_h, quantile))
    copies = d_s <= threshold
    order = np.argsort(d_s, kind="stable")[:n_closest]
    med_s, med_h = float(np.median(d_s)), float(np.median(d_h))
    return {
        "space": space,
        "quantile": float(quantile),
        "threshold": threshold,
        "fraction_copies": float(copies.mean()),
        "n_copies": int(copies.sum()),
        "expected_fraction": float(quantile),
        "sample_nn_median": med_s,
        "heldout_nn_median": med_h,
        "median_ratio": med_s / med_h if med_h > 0 else None,  # None: held-out copies exist
        "closest": [{"sample_index": int(j), "train_index": int(i_s[j]), "distance": float(d_s[j])} for j in order],
    }
