"""The forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), its schedules and targets.

Time is an index t in 0..T-1: the network at index t sees x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
and abar_t = prod_{s <= t} (1 - beta_s) (Ho et al. 2020's step t + 1). The schedules are pure functions
of T returning betas in float64; :class:`Schedule` precomputes what the loss and the samplers read.

The three things a network may predict (``target``) are linear in each other given x_t, with
a = sqrt(abar_t), s = sqrt(1 - abar_t) and a^2 + s^2 = 1:

    x_t = a x_0 + s eps,    v = a eps - s x_0   (Salimans & Ho 2022),
    x_0 = a x_t - s v,      eps = s x_t + a v,   x_0 = (x_t - s eps) / a,   eps = (x_t - a x_0) / s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("linear", "cosine", "sigmoid")
TARGETS = ("eps", "x0", "v")
MAX_BETA = 0.999  # Nichol & Dhariwal clip betas here: a beta of 1 would end the chain with abar = 0 exactly


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """Ho et al. 2020: betas rising linearly from 1e-4 to 0.02, rescaled so that any T has the same
    total noise as their T = 1000 (the rescaling is Nichol & Dhariwal's, improved-diffusion)."""
    scale = 1000.0 / T
    return torch.linspace(scale * beta_1, min(scale * beta_T, MAX_BETA), T, dtype=torch.float64)


def _betas_from_abar(abar: Tensor) -> Tensor:
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1.0 - abar / prev).clamp(max=MAX_BETA)


def cosine_betas(T: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2);
    noise is added slowly at both ends, so fewer steps are wasted on pure noise than with the linear schedule."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return _betas_from_abar((f / f[0])[1:])


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Jabri et al. 2022 / Chen 2023 ("On the importance of noise scheduling", Algorithm 1); v(u) = sigmoid(u / tau):
    abar(t) = (v(end) - v((end - start) t + start)) / (v(end) - v(start)); start = -3, end = 3, tau = 1."""
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    abar = (v_end - torch.sigmoid(((end - start) * t + start) / tau)) / (v_end - v_start)
    return _betas_from_abar(abar.clamp(min=1e-9))


def make_betas(kind: str, T: int) -> Tensor:
    if kind == "linear":
        return linear_betas(T)
    if kind == "cosine":
        return cosine_betas(T)
    if kind == "sigmoid":
        return sigmoid_betas(T)
    raise ValueError(f"unknown beta schedule {kind!r}; choose from {', '.join(SCHEDULES)}")


class Schedule:
    """abar_t and the coefficients derived from it, on one device; float32 by default (float64 for tests).

    Tensors are indexed by the time index t (0..T-1); ``abar_prev`` is abar_{t-1} with abar_{-1} = 1.
    """

    def __init__(self, betas: Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        betas = betas.double()
        abar = torch.cumprod(1.0 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        # computed in float64 and stored in ``dtype``: cumprod over 1,000 steps loses digits in float32
        self.T = int(betas.shape[0])
        self.betas = betas.to(device, dtype)
        self.abar = abar.to(device, dtype)
        self.abar_prev = abar_prev.to(device, dtype)
        self.log_snr = (abar.log() - (-abar).log1p()).to(device, dtype)  # lambda_t = log(abar / (1 - abar))
        # q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, posterior_var): Ho et al. eq. 7
        self.posterior_var = (betas * (1.0 - abar_prev) / (1.0 - abar)).to(device, dtype)
        self.c0 = (abar_prev.sqrt() * betas / (1.0 - abar)).to(device, dtype)
        self.ct = ((1.0 - betas).sqrt() * (1.0 - abar_prev) / (1.0 - abar)).to(device, dtype)

    @classmethod
    def named(cls, kind: str, T: int, dtype: torch.dtype = torch.float32) -> Schedule:
        return cls(make_betas(kind, T), dtype)

    def to(self, device: torch.device | str) -> Schedule:
        out = object.__new__(Schedule)
        out.T = self.T
        for name in ("betas", "abar", "abar_prev", "log_snr", "posterior_var", "c0", "ct"):
            setattr(out, name, getattr(self, name).to(device))
        return out

    def snr(self, t: Tensor) -> Tensor:
        """abar_t / (1 - abar_t) per index."""
        return self.log_snr[t].exp()

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t of shape (B,)."""
        a, s = self.scales(t, x0.dim())
        return a * x0 + s * eps

    def scales(self, t: Tensor | int, ndim: int) -> tuple[Tensor, Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) shaped to broadcast over (B, ...) tensors of ``ndim`` dims."""
        ab = self.abar[t]
        shape = (-1, *([1] * (ndim - 1))) if ab.dim() else ()
        return ab.sqrt().reshape(shape), (1.0 - ab).sqrt().reshape(shape)


# -- conversions between the three targets (linear in each other given x_t) ---------------------
def target_of(kind: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """What a network of target ``kind`` should output for x_t = a x0 + s eps."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return a * eps - s * x0
    raise ValueError(f"unknown target {kind!r}; choose from {', '.join(TARGETS)}")


def to_x0_eps(kind: str, out: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """(x_0, eps) implied by a network output ``out`` of target ``kind`` at x_t."""
    if kind == "eps":
        return (x_t - s * out) / a, out
    if kind == "x0":
        return out, (x_t - a * out) / s
    if kind == "v":
        return a * x_t - s * out, s * x_t + a * out
    raise ValueError(f"unknown target {kind!r}; choose from {', '.join(TARGETS)}")


def eps_from_x0(x0: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> Tensor:
    return (x_t - a * x0) / s
