"""Evaluation metrics for generated 28x28 grayscale images.

Pure functions first: every metric takes numpy arrays (images (N, 1, 28, 28) float in [0, 1]
or uint8; or (N, D) features; or (N, C) class probabilities) and returns a float or a
JSON-ready dict of floats, lists and bools. Feature extractors live apart
(:mod:`genlab.metrics.classifier`, :mod:`genlab.metrics.inception`) and are imported lazily
by their own modules, so the maths can be used on any features.

Bad input raises :class:`~genlab.metrics.validate.MetricInputError` (a ``GenlabError``).
"""

from genlab.metrics.frechet import feature_statistics, fid_from_features, frechet_distance
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from genlab.metrics.ks import holm_bonferroni, image_statistics, ks_tests
from genlab.metrics.memorization import memorization, nearest_neighbours
from genlab.metrics.modes import class_histogram, mode_statistics
from genlab.metrics.prdc import kth_nn_distances, prdc
from genlab.metrics.validate import MetricInputError, check_features, check_images

__all__ = [
    "MetricInputError",
    "check_features",
    "check_images",
    "class_histogram",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "holm_bonferroni",
    "image_statistics",
    "inception_score",
    "kernel_inception_distance",
    "ks_tests",
    "kth_nn_distances",
    "memorization",
    "mmd2_unbiased",
    "mode_statistics",
    "nearest_neighbours",
    "polynomial_kernel",
    "prdc",
]
