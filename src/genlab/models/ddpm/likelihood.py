"""The variational bound on log p(x) of a diffusion model, per image, in nats (Ho et al. 2020, eq. 5).

For 8-bit images x_0 (pixel k in 0..255 maps to 2k/255 - 1) and time indices 0..T-1,

    log p(x_0) >= -L_prior - sum_{t=1}^{T-1} L_t - L_0   where
    L_prior = KL(q(x_{T-1} | x_0) || N(0, I))                                (closed form)
    L_t     = E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))              (two Gaussians, closed form given x_t)
    L_0     = -E_q log p(x_0 | x_0-index noisy image)                        (discretised Gaussian decoder)

p(x_{t-1} | x_t) = N(c0 x0_hat + ct x_t, beta~_t) shares the posterior's variance, so L_t is
(c0_t^2 / (2 beta~_t)) ||x_0 - x0_hat||^2. The decoder integrates N(x0_hat, beta_0) over each pixel's
bin of width 2/255 (the edge bins reach to -inf and +inf), Ho et al. sec. 3.3: the bound is on the
*probability* of the 8-bit image, the figure in bits/dim papers report (equivalently on the density
of uniformly dequantised data scaled to [0, 256)).

The sum over t is exact when every index is evaluated (``k >= T - 1``: one draw of x_t each) and
otherwise an unbiased stratified estimate from ``k`` indices, one drawn in each of k equal strata
for each image on its own (so images' errors are independent and the standard error over images
holds) and weighted by its stratum's size. The terms are largest at small t, so a small k is noisy.
Each term's expectation over x_t is one Monte Carlo draw, as in every published DDPM likelihood.
The denoiser is any function ``predict(x_t, t) -> (x0_hat, eps_hat)`` with t one index per image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .samplers import Predict
from .schedule import Schedule

BIN = 1.0 / 255.0  # half the width of one 8-bit level on the [-1, 1] scale


def to_levels(x: Tensor) -> Tensor:
    """Images in [0, 1] (whatever their dtype) as the nearest 8-bit level on [-1, 1], float64."""
    return (x.double().clamp(0, 1) * 255).round() * (2 / 255) - 1


def log_bin_probability(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log of the N(mean, std^2) mass of each pixel's 8-bit bin, elementwise, float64.

    log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - Phi(a) / Phi(b)), computed on the side of the mean
    where the smaller tail is, so neither a far tail nor a narrow bin loses digits.
    """
    x, mean, std = x.double(), mean.double(), std.double()
    upper = torch.where(x > 1 - BIN, torch.full_like(x, math.inf), (x + BIN - mean) / std)
    lower = torch.where(x < -1 + BIN, torch.full_like(x, -math.inf), (x - BIN - mean) / std)
    right = lower > 0  # the bin lies right of the mean: use the mirror image, Phi(-a) - Phi(-b)
    hi = torch.where(right, -lower, upper)
    lo = torch.where(right, -upper, lower)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def prior_kl(x0: Tensor, sched: Schedule) -> Tensor:
    """KL(N(sqrt(abar) x0, 1 - abar) || N(0, 1)) summed over pixels, (B,), at the last index."""
    ab = sched.abar[-1].double()
    per = 0.5 * (ab * x0.double() ** 2 + (1 - ab) - 1 - torch.log1p(-ab))
    return per.flatten(1).sum(1)


@torch.inference_mode()
def variational_bound(
    predict: Predict,
    sched: Schedule,
    x: Tensor,
    *,
    k: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Per image (B,), float64 on the CPU: ``bound`` (the lower bound on log P(x), nats) and its three parts
    as positive costs ``prior_kl``, ``diffusion_kl`` (the sum of L_t) and ``decoder_nll`` (L_0).

    ``x`` (B, C, H, W) are images in [0, 1] (rounded to 8-bit levels); ``k`` indices of the sum are
    evaluated (all when k >= T - 1); draws come from ``generator`` (default: a CPU generator seeded 0).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    T, b, dev = sched.T, x.shape[0], sched.abar.device
    x0 = to_levels(x).to(dev)  # float64
    x0f = x0.to(sched.abar.dtype)

    def x0_hat(t: Tensor) -> Tensor:  # t (B,): one time index per image
        eps = torch.randn(x.shape, generator=gen, device=gen.device, dtype=x0f.dtype).to(dev)
        a, s = sched.scales(t, x.dim())
        return predict(a * x0f + s * eps, t)[0].double()

    # L_0: the decoder at index 0, N(x0_hat, beta_0) over the bins
    std0 = sched.betas[0].double().sqrt()
    decoder = -log_bin_probability(x0, x0_hat(torch.zeros(b, dtype=torch.long, device=dev)), std0).flatten(1).sum(1)
    # sum_t L_t: all indices, or one per stratum, drawn for each image on its own
    diffusion = torch.zeros(b, dtype=torch.float64, device=dev)
    n_terms = T - 1
    if n_terms > 0:
        edges = list(range(1, T + 1)) if k >= n_terms else [1 + round(j * n_terms / k) for j in range(k + 1)]
        for lo, hi in zip(edges[:-1], edges[1:]):
            u = torch.rand(b, generator=gen, device=gen.device, dtype=torch.float64).to(dev)
            t = (lo + (u * (hi - lo)).long().clamp(max=hi - lo - 1)).to(dev)  # (B,)
            c0, var = sched.c0[t].double(), sched.posterior_var[t].double()
            err = (x0 - x0_hat(t)).flatten(1).pow(2).sum(1)
            diffusion += (hi - lo) * (c0**2 / (2 * var)) * err
    prior = prior_kl(x0, sched)
    total = prior + diffusion + decoder
    return {
        "bound": (-total).cpu(),
        "prior_kl": prior.cpu(),
        "diffusion_kl": diffusion.cpu(),
        "decoder_nll": decoder.cpu(),
    }
