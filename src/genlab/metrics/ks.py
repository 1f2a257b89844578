"""Two-sample Kolmogorov-Smirnov tests on interpretable per-image statistics.

FID says *that* samples differ from real data; these tests say *how*: too much ink, strokes
off-centre, too blurry (low edge energy), or a shift along a principal direction of the
classifier's feature space. Each statistic gets a two-sample KS test
(``scipy.stats.ks_2samp``) and the p-values are Holm-Bonferroni adjusted (Holm 1979,
"A Simple Sequentially Rejective Multiple Test Procedure"), so ``differs`` controls the
family-wise error rate at ``alpha``. With thousands of samples KS detects even small
shifts; read the ``ks`` statistic (max CDF gap, 0..1) for the size of a difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from genlab.metrics.validate import MetricInputError, check_features, check_images, check_same_dim

STATISTICS = (
    "mean_intensity",  # average pixel value
    "ink_area",  # fraction of pixels > 0.5
    "intensity_std",  # contrast within the image
    "center_x",  # intensity-weighted centre of mass, pixels from the left
    "center_y",  # ... from the top
    "spread",  # radius of gyration around the centre of mass, in pixels
    "edge_energy",  # mean squared finite-difference gradient: low = blurry
)


def image_statistics(images: Any) -> dict[str, np.ndarray]:
    """Per-image statistics of (N, C, H, W) images in [0, 1]; each value is an (N,) array.

    Colour images (C = 3) are measured on their channel mean (the grey level). A blank image has
    its centre of mass put at the image centre and a spread of 0.
    """
    x = check_images(images, "images", metric="image_statistics", size=None, channels=(1, 3))
    x = (x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)).astype(np.float64)
    n, h, w = x.shape
    flat = x.reshape(n, -1)
    mass = flat.sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    cx = np.where(mass > 0, (x.sum(axis=1) * xs).sum(axis=1) / safe, (w - 1) / 2)
    cy = np.where(mass > 0, (x.sum(axis=2) * ys).sum(axis=1) / safe, (h - 1) / 2)
    r2 = (xs[None, None, :] - cx[:, None, None]) ** 2 + (ys[None, :, None] - cy[:, None, None]) ** 2
    spread = np.sqrt((x * r2).reshape(n, -1).sum(axis=1) / safe)
    gx = np.diff(x, axis=2)
    gy = np.diff(x, axis=1)
    edge = (gx**2).mean(axis=(1, 2)) + (gy**2).mean(axis=(1, 2))
    return {
        "mean_intensity": flat.mean(axis=1),
        "ink_area": (flat > 0.5).mean(axis=1),
        "intensity_std": flat.std(axis=1),
        "center_x": cx,
        "center_y": cy,
        "spread": spread,
        "edge_energy": edge,
    }


def pca_projections(
    real_features: np.ndarray, fake_features: np.ndarray, n_components: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Project both sets on the top ``n_components`` principal axes of the *real* features.

    Returns ``{"pc1": (real_proj, fake_proj), ...}``; the axes come from the real data
    only, so the generated set cannot move them.
    """
    mean = real_features.mean(axis=0)
    _, _, vt = np.linalg.svd(real_features - mean, full_matrices=False)
    axes = vt[:n_components]  # (n_components, D)
    pr = (real_features - mean) @ axes.T
    pf = (fake_features - mean) @ axes.T
    return {f"pc{i + 1}": (pr[:, i], pf[:, i]) for i in range(axes.shape[0])}


def standardized_difference(real: np.ndarray, fake: np.ndarray) -> float | None:
    """(mean(fake) - mean(real)) / sd(real): how far the samples' average moved, in the real spread.

    An effect size to read beside the KS p-value: at n = 10,000 almost any shift is significant,
    so the p-value alone cannot rank models; this says by how much. 0 when the real values are
    constant and the means agree; None (no finite size; metrics.json has no inf) when they are
    constant and the means differ.
    """
    diff, sd = float(np.mean(fake) - np.mean(real)), float(np.std(real))
    if sd > 0:
        return diff / sd
    return 0.0 if diff == 0 else None


def holm_bonferroni(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    Sort p ascending; adjusted p_(i) = max_{j <= i} min(1, (m - j) p_(j)) (0-based j).
    Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def ks_tests(
    real_images: Any,
    fake_images: Any,
    *,
    real_features: Any = None,
    fake_features: Any = None,
    n_components: int = 3,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """KS-test each of :data:`STATISTICS` (and optional feature PCA projections) real vs fake.

    Returns ``{"tests": [{"statistic", "ks", "p", "p_adjusted", "differs", "real_mean",
    "fake_mean", "real_std", "effect"}, ...], "n_tests", "n_differing", "fraction_differing",
    "mean_ks", "alpha"}``: ``ks`` (the largest CDF gap, 0..1) and ``effect``
    (:func:`standardized_difference`) are effect sizes, ``mean_ks`` their average over the tests.
    Pass ``real_features``/``fake_features`` (same extractor) to add ``pc1..pcK`` rows.
    """
    metric = "KS tests"
    real = check_images(real_images, "real_images", metric=metric, min_samples=2, size=None, channels=(1, 3))
    fake = check_images(fake_images, "fake_images", metric=metric, min_samples=2, size=None, channels=(1, 3))
    if real.shape[1:] != fake.shape[1:]:
        raise MetricInputError(
            f"{metric}: real and fake images differ in shape (C, H, W): {real.shape[1:]} vs {fake.shape[1:]}"
        )
    if not 0 < alpha < 1:
        raise MetricInputError(f"{metric}: alpha must be in (0, 1), got {alpha}")
    sr, sf = image_statistics(real), image_statistics(fake)
    pairs = {name: (sr[name], sf[name]) for name in STATISTICS}
    if (real_features is None) != (fake_features is None):
        raise MetricInputError(f"{metric}: pass both real_features and fake_features, or neither")
    if real_features is not None:
        fr = check_features(real_features, "real_features", metric=metric, min_samples=2)
        ff = check_features(fake_features, "fake_features", metric=metric, min_samples=2)
        check_same_dim(fr, ff, metric=metric, names=("real_features", "fake_features"))
        if len(fr) != len(real) or len(ff) != len(fake):
            raise MetricInputError(f"{metric}: features must have one row per image")
        pairs.update(pca_projections(fr, ff, n_components))

    rows = []
    for name, (a, b) in pairs.items():
        res = stats.ks_2samp(a, b)
        rows.append(
            {
                "statistic": name,
                "ks": float(res.statistic),
                "p": float(res.pvalue),
                "real_mean": float(np.mean(a)),
                "fake_mean": float(np.mean(b)),
                "real_std": float(np.std(a)),
                "effect": standardized_difference(a, b),
            }
        )
    adjusted = holm_bonferroni([r["p"] for r in rows])
    for r, pa in zip(rows, adjusted):
        r["p_adjusted"] = float(pa)
        r["differs"] = bool(pa <= alpha)
    n_diff = sum(bool(r["differs"]) for r in rows)
    return {
        "tests": rows,
        "n_tests": len(rows),
        "n_differing": int(n_diff),
        "fraction_differing": n_diff / len(rows),
        "mean_ks": float(np.mean([r["ks"] for r in rows])),
        "alpha": float(alpha),
    }
