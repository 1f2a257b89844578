"""Precision/recall and density/coverage from k-nearest-neighbour balls in feature space.

- Precision and recall: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models" (https://arxiv.org/abs/1904.06991). Precision is the fraction
  of generated samples inside the union of real k-NN balls (fidelity); recall the fraction of
  real samples inside the union of generated k-NN balls (diversity).
- Density and coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models" (https://arxiv.org/abs/2002.09797)::

      density  = 1/(k M) sum_j sum_i 1[y_j in B(x_i, NND_k(x_i))]
      coverage = 1/N sum_i 1[exists j: y_j in B(x_i, NND_k(x_i))]

  with N real x_i, M generated y_j. Density is not capped at 1 (about 1 when the
  distributions match); coverage ignores outlying fakes, so it is robust where recall is not.

A ball is closed (distance <= radius), following Kynkäänniemi et al.; Naeem's reference code
uses "<", which only differs on exact ties such as duplicated images. Distances are
computed with ``torch.cdist`` in float64 over row chunks, so 10k x 10k needs
``chunk_size * max(N, M) * 8`` bytes at a time instead of the full matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genlab.metrics.validate import MetricInputError, check_features, check_same_dim


def kth_nn_distances(features: Any, k: int, *, chunk_size: int = 1024) -> np.ndarray:
    """Distance from each row to its k-th nearest *other* row, (N, D) -> (N,)."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(0, len(x), chunk_size):
        d = torch.cdist(x[i : i + chunk_size], x)  # (chunk, N)
        # k + 1 smallest includes the point itself at distance 0.
        out[i : i + chunk_size] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out.numpy()


def prdc(
    real_features: Any,
    fake_features: Any,
    *,
    k: int = 5,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake_features`` against ``real_features``.

    Both are (N, D) arrays from the same extractor; each needs more than ``k`` rows.
    Returns ``{"precision", "recall", "density", "coverage", "k"}``.
    """
    if k < 1:
        raise MetricInputError(f"precision/recall: k must be >= 1, got {k}")
    metric = f"precision/recall/density/coverage with k={k}"
    real = check_features(real_features, "real_features", metric=metric, min_samples=k + 1)
    fake = check_features(fake_features, "fake_features", metric=metric, min_samples=k + 1)
    check_same_dim(real, fake, metric=metric, names=("real_features", "fake_features"))

    r_real = torch.from_numpy(kth_nn_distances(real, k, chunk_size=chunk_size))  # (N,)
    r_fake = torch.from_numpy(kth_nn_distances(fake, k, chunk_size=chunk_size))  # (M,)
    xr, xf = torch.from_numpy(real), torch.from_numpy(fake)

    fake_in_real_balls = torch.zeros(len(fake), dtype=torch.bool)  # precision
    fake_ball_counts = torch.zeros(len(fake), dtype=torch.float64)  # density
    real_in_fake_balls = torch.zeros(len(real), dtype=torch.bool)  # recall
    real_covered = torch.zeros(len(real), dtype=torch.bool)  # coverage
    for i in range(0, len(real), chunk_size):
        d = torch.cdist(xr[i : i + chunk_size], xf)  # (chunk, M)
        inside_real = d <= r_real[i : i + chunk_size, None]
        fake_in_real_balls |= inside_real.any(dim=0)
        fake_ball_counts += inside_real.sum(dim=0)
        real_in_fake_balls[i : i + chunk_size] = (d <= r_fake[None, :]).any(dim=1)
        real_covered[i : i + chunk_size] = inside_real.any(dim=1)

    return {
        "precision": float(fake_in_real_balls.double().mean()),
        "recall": float(real_in_fake_balls.double().mean()),
        "density": float(fake_ball_counts.mean() / k),
        "coverage": float(real_covered.double().mean()),
        "k": int(k),
    }
