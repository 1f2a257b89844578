"""Fréchet distance between Gaussians fitted to features (FID when the features are Inception's).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium" (https://arxiv.org/abs/1706.08500). The numerics follow pytorch-fid's
``calculate_frechet_distance`` so that numbers are comparable.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import linalg

from genlab.metrics.validate import MetricInputError, check_features, check_same_dim


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)::

        d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    Computed in float64. If the matrix square root of ``sigma1 @ sigma2`` is not finite
    (near-singular covariances, e.g. fewer samples than dimensions) ``eps * I`` is added to
    both covariances and it is retried. Round-off can make the square root complex: the
    imaginary part is dropped if the diagonal's is below 1e-3, otherwise this raises.

    d^2 >= 0 exactly, but for (nearly) identical Gaussians the three traces cancel and
    round-off leaves a tiny negative: such a value, within 1e-9 of the traces' scale, is
    returned as 0. A larger negative one is numerical trouble, not a distance, and raises.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise MetricInputError(f"frechet_distance: means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricInputError(
            f"frechet_distance: covariances must be ({d}, {d}) to match the means, "
            f"got {sigma1.shape} and {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise MetricInputError(f"frechet_distance: {name} contains NaN or infinite values")

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Singular products are expected (e.g. dead ReLU features) and handled just below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = float(np.max(np.abs(covmean.imag)))
            raise MetricInputError(
                f"frechet_distance: the covariance product's square root has an imaginary "
                f"component of {m:.3g}; the covariances are probably not positive semi-definite"
            )
        covmean = covmean.real
    traces = float(np.trace(sigma1) + np.trace(sigma2))
    value = float(diff @ diff + traces - 2.0 * np.trace(covmean))
    if value < 0:
        if value < -1e-9 * max(traces, 1.0):
            raise MetricInputError(
                f"frechet_distance: got {value:.3g} < 0 (covariance traces {traces:.3g}); the matrix "
                f"square root is inaccurate, probably because the covariances are near-singular"
            )
        value = 0.0  # round-off of an exact 0 (identical Gaussians)
    return value


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of an (N, D) feature array, N >= 2, in float64."""
    f = check_features(features, "features", metric="feature_statistics (FID)", min_samples=2)
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid_from_features(features1: Any, features2: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature arrays.

    With Inception pool3 features this is FID; with genlab's classifier features it is
    "FID in the classifier's space" and must only be compared with numbers from the same
    extractor. The estimate is biased upwards for small N; compare at equal sample counts.
    """
    f1 = check_features(features1, "features1", metric="FID", min_samples=2)
    f2 = check_features(features2, "features2", metric="FID", min_samples=2)
    check_same_dim(f1, f2, metric="FID", names=("features1", "features2"))
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)
