"""Inception Score from class probabilities.

Salimans et al. 2016, "Improved Techniques for Training GANs" (https://arxiv.org/abs/1606.03498)::

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x)

It ranges from 1 (every prediction identical, or all maximally uncertain) to the number of
classes (confident predictions spread evenly over the classes). It never looks at real
data, so it cannot see e.g. a model that draws perfect but wrong-looking classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genlab.metrics.validate import MetricInputError, check_features


def check_probabilities(probs: Any, *, metric: str, min_samples: int = 1) -> np.ndarray:
    """Validate an (N, C) array of rows that are probability distributions (sum 1 +- 1e-3)."""
    p = check_features(probs, "probs", metric=metric, min_samples=min_samples)
    if p.min() < 0 or p.max() > 1:
        raise MetricInputError(f"{metric}: 'probs' must be probabilities in [0, 1]; pass softmax outputs, not logits")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise MetricInputError(f"{metric}: each row of 'probs' must sum to 1 (softmax outputs)")
    return p


def inception_score(probs: Any, *, splits: int = 10) -> dict[str, float]:
    """IS of an (N, C) array of p(y|x), computed on ``splits`` consecutive equal chunks.

    Returns ``{"mean", "std"}`` over the chunks (the convention of the original code; the
    std shows the estimate's spread, not an error bar on the population value).
    """
    p = check_probabilities(probs, metric="Inception Score", min_samples=max(1, splits))
    if splits < 1:
        raise MetricInputError(f"Inception Score: splits must be >= 1, got {splits}")
    scores = []
    for chunk in np.array_split(p, splits):
        py = chunk.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0: only terms with p(y|x) > 0 contribute.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(chunk > 0, chunk * (np.log(chunk) - np.log(py)), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    scores_arr = np.asarray(scores)
    return {"mean": float(scores_arr.mean()), "std": float(scores_arr.std())}
