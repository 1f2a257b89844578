"""Diagonal-Gaussian algebra for VAEs: KL, reparameterisation, log-densities, importance weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z = mu + sigma * eps with sigma = exp(log_var / 2) (Kingma & Welling 2014)."""
    return mu + torch.exp(0.5 * log_var) * eps


def log_importance_weights(
    model, x: Tensor, y: Tensor | None, mu: Tensor | None, log_var: Tensor | None, eps: Tensor
) -> tuple[Tensor, Tensor]:
    """log w = log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, with eps (S, B, D).

    Returns (log w, log p(x|z)), each (S, B). ``model`` needs only ``log_likelihood(x, z, y)``.
    The Gaussians' 2*pi constants cancel; (z - mu) / sigma = eps exactly. A two-layer VAE draws
    its own (z1, z2) from eps and ignores ``mu`` and ``log_var``; so does one with an IAF posterior.
    """
    if getattr(model, "structured_posterior", False):
        z, log_ratio = model.sample_posterior(x, y, eps)
        log_px_z = model.log_likelihood(x, z, y)
        return log_px_z + log_ratio, log_px_z
    assert mu is not None and log_var is not None  # a diagonal posterior's statistics
    z = reparameterize(mu, log_var, eps)
    log_px_z = model.log_likelihood(x, z, y)
    return log_px_z + log_prior_over_posterior(model, z, eps, log_var), log_px_z


def log_prior_over_posterior(model, z: Tensor, eps: Tensor, log_var: Tensor) -> Tensor:
    """log p(z) - log q(z|x), summed over latent dimensions; p is N(0, I) unless ``model`` has a learned prior."""
    if getattr(model, "prior_is_standard_normal", True):
        return 0.5 * (eps.pow(2) - z.pow(2) + log_var).sum(-1)  # the 2*pi constants cancel
    return model.log_prior(z) - log_standard_draw(eps, log_var)


def log_standard_draw(eps: Tensor, log_var: Tensor) -> Tensor:
    """log q(z|x) at z = mu + sigma * eps, summed over the last dimension; float32 under bf16 autocast too."""
    return -0.5 * (eps.float().pow(2) + log_var.float() + LOG_2PI).sum(-1)


def log_normal_diag(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).pow(2) * torch.exp(-log_var)).sum(-1)


def one_hot(y: Tensor | None, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Labels (B,) as one-hot rows (B, num_classes) of ``dtype``; a conditional model without labels is a bug."""
    if y is None:
        raise ValueError("a conditional VAE needs labels")
    return F.one_hot(y, num_classes).to(dtype)


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Burda et al. (2016): unit j is active when Cov_x(E_q[z_j | x]) > threshold.

    ``mu`` holds posterior means (N, D). Returns (count, per-unit variance).
    """
    var = mu.double().var(dim=0)
    return int((var > threshold).sum()), var.float()
