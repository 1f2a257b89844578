"""The decoder's likelihood p(x|z), one small object per ``config.likelihood``, chosen by :func:`make_likelihood`.

The decoder outputs logits l (..., P) for P pixels; its mean image is sigmoid(l). Each likelihood gives

- ``pixel_loss(x, l)``: the training loss per pixel, (..., P);
- ``training_nll(x, l)``: that loss reduced over pixels as ``recon_reduction`` says, (B,);
- ``log_prob(x, l)``: the proper log-density log p(x|z) summed over pixels, (...,), which the IWAE
  bound and ``genlab nll`` use whatever the reduction;
- ``pixel_variance``, ``words``, ``data``: what the likelihood is, for nll.json and the reports.

These objects hold no tensors: a learned scale stays a parameter of the VAE (state_dict key
``log_scale``, so checkpoints of existing runs load), which the likelihood reads through a getter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import VAEConfig


class Likelihood:
    """p(x|z) from the decoder's logits; subclasses give the per-pixel loss."""

    data = "continuous"  # a density on [0, 1] pixels; "binary": a probability of binarised images
    pixel_variance: float | None = None
    words: str

    def __init__(self, reduction: str):
        self.reduction = reduction  # "sum" over pixels (the ELBO) or "mean" (the tutorial listing)

    def pixel_loss(self, x: Tensor, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def training_nll(self, x: Tensor, logits: Tensor) -> Tensor:
        """The reconstruction term of the loss per image (B,) for flat x and logits (B, P)."""
        per_pixel = self.pixel_loss(x, logits)
        return per_pixel.mean(1) if self.reduction == "mean" else per_pixel.sum(1)

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        """log p(x|z) summed over pixels: minus the per-pixel loss where that loss is the exact NLL."""
        return -self.pixel_loss(x, logits).sum(-1)


class Bernoulli(Likelihood):
    """-log p(x|z) = sum_i BCE(x_i, sigmoid(l_i)) = sum_i softplus(l_i) - x_i l_i, from the logits (stable)."""

    data = "binary"
    words = "bernoulli"

    def pixel_loss(self, x: Tensor, logits: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")


class FixedGaussian(Likelihood):
    """``mse``: the loss is the squared error (sigmoid(l_i) - x_i)^2, summed or averaged over P pixels.

    Both are Gaussian NLLs with a fixed variance, up to a constant:

        sum of squares  = -log N(x; sigmoid(l), sigma^2 I) - P/2 log(2 pi sigma^2)   with sigma^2 = 1/2,
        mean of squares = sum of squares / P                                           with sigma^2 = P/2,

    so the tutorial's "mean" loss (sigma^2 = 392 for 28x28) is the ELBO of a decoder with pixel noise
    sigma ~ 20 on [0, 1] pixels. ``log_prob`` is that Gaussian's log-density, constant included.
    """

    def __init__(self, reduction: str, n_pixels: int):
        super().__init__(reduction)
        self.n_pixels = n_pixels
        self.variance = 0.5 * (n_pixels if reduction == "mean" else 1)
        self.pixel_variance = self.variance
        self.words = (
            f"gaussian (fixed variance {self.variance:g} implied by the {reduction} of "
            f"squared errors; density on continuous pixels)"
        )

    def pixel_loss(self, x: Tensor, logits: Tensor) -> Tensor:
        """The squared error, without the Gaussian's constant (the tutorial's loss)."""
        return (torch.sigmoid(logits) - x).pow(2)

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        """-(sum_i (sigmoid(l_i) - x_i)^2 / (2 sigma^2) + P/2 log(2 pi sigma^2))."""
        var = self.variance
        return -(
            (torch.sigmoid(logits) - x).pow(2).sum(-1) / (2 * var) + 0.5 * self.n_pixels * math.log(2 * math.pi * var)
        )


class LearnedGaussian(Likelihood):
    """``gaussian``: a learned log-scale s_i per pixel,

    -log p(x|z) = sum_i 1/2 log(2 pi) + s_i + 1/2 ((x_i - sigmoid(l_i)) / exp(s_i))^2.
    """

    words = "gaussian (learned per-pixel scale; density on continuous pixels)"

    def __init__(self, reduction: str, log_scale: Callable[[], Tensor]):
        super().__init__(reduction)
        # A getter, not the tensor: the parameter belongs to the VAE and is looked up at each call, so
        # .to(), load_state_dict and torch.func.functional_call all see the one the VAE holds now.
        self.log_scale = log_scale

    def pixel_loss(self, x: Tensor, logits: Tensor) -> Tensor:
        mean = torch.sigmoid(logits)
        log_scale = self.log_scale()
        return 0.5 * math.log(2 * math.pi) + log_scale + 0.5 * ((x - mean) / log_scale.exp()).pow(2)


def make_likelihood(config: VAEConfig, n_pixels: int, log_scale: Callable[[], Tensor]) -> Likelihood:
    """The likelihood ``config.likelihood`` names; ``log_scale`` gets the learned scale (``gaussian`` only)."""
    if config.likelihood == "bernoulli":
        return Bernoulli(config.recon_reduction)
    if config.likelihood == "mse":
        return FixedGaussian(config.recon_reduction, n_pixels)
    return LearnedGaussian(config.recon_reduction, log_scale)
