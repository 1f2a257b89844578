"""Samplers: from x_T ~ N(0, I) to an image, given a denoiser ``predict(x_t, t) -> (x0_hat, eps_hat)``.

They know nothing of networks: ``predict`` is any function of (x_t (B, ...), t (B,) long) returning
the denoised estimate and the noise estimate (the tests pass the exact denoiser of a Gaussian).
Every sampler visits a decreasing sequence of time indices from T-1 (:func:`timesteps`) and ends
at the clean data (abar = 1):

- ``ddpm``: ancestral sampling (Ho et al. 2020, Algorithm 2) with the posterior variance
  beta~_t; with S < T steps, on the respaced chain whose betas are 1 - abar_t / abar_prev
  (Nichol & Dhariwal 2021, sec. 4);
- ``ddim``: Song et al. 2021, eq. 12: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps
  + sigma z, sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev);
  eta = 0 is deterministic (the probability-flow ODE's Euler steps in their variables), eta = 1 the
  DDPM posterior;
- ``dpm-solver++``: DPM-Solver++(2M), Lu et al. 2022, Algorithm 2: a second-order multistep
  solver of the same ODE in log-SNR time using the data prediction, first order at the first and
  last steps (the last goes to sigma = 0, where only first order is defined).

``clip`` clamps x0_hat to the data range [-1, 1] at every step (then recomputes eps from it),
as Ho et al.'s and DDIM's reference samplers do; inversion does not clip.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .schedule import Schedule, eps_from_x0

Predict = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def timesteps(T: int, steps: int) -> list[int]:
    """``steps`` distinct time indices from T-1 down to 0, evenly spaced ("trailing": the first
    step starts from the noisiest index, Lin et al. 2024 show that starting lower leaves noise)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    if steps == 1:
        return [T - 1]
    return [round(T - 1 - i * (T - 1) / (steps - 1)) for i in range(steps)]


def _abar(sched: Schedule, t: int) -> Tensor:
    return sched.abar[t] if t >= 0 else sched.abar.new_ones(())


def _denoise(predict: Predict, sched: Schedule, x: Tensor, t: int, clip: bool) -> tuple[Tensor, Tensor]:
    x0, eps = predict(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        a, s = sched.scales(t, x.dim())
        eps = eps_from_x0(x0, x, a, s)
    return x0, eps


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def ddim(
    predict: Predict,
    sched: Schedule,
    x: Tensor,
    steps: int,
    *,
    eta: float = 0.0,
    clip: bool = True,
    generator: torch.Generator | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """DDIM from x = x_T; ``trajectory`` (if given) collects x_T and each x_prev."""
    ts = timesteps(sched.T, steps)
    if trajectory is not None:
        trajectory.append(x)
    for t, prev in zip(ts, [*ts[1:], -1]):
        x0, eps = _denoise(predict, sched, x, t, clip)
        ab, ab_prev = _abar(sched, t), _abar(sched, prev)
        sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and prev >= 0:
            x = x + sigma * _noise(x, generator)
        if trajectory is not None:
            trajectory.append(x)
    return x


def ddpm(
    predict: Predict,
    sched: Schedule,
    x: Tensor,
    steps: int,
    *,
    clip: bool = True,
    generator: torch.Generator | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Ancestral sampling: x_prev ~ N(c0 x0_hat + ct x_t, beta~) on the chain respaced to ``steps``."""
    ts = timesteps(sched.T, steps)
    if trajectory is not None:
        trajectory.append(x)
    for t, prev in zip(ts, [*ts[1:], -1]):
        x0, _ = _denoise(predict, sched, x, t, clip)
        ab, ab_prev = _abar(sched, t), _abar(sched, prev)
        beta = 1 - ab / ab_prev  # of the respaced step t -> prev (the schedule's beta_t when prev = t - 1)
        mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)) * x
        x = mean
        if prev >= 0:
            x = x + (beta * (1 - ab_prev) / (1 - ab)).sqrt() * _noise(x, generator)
        if trajectory is not None:
            trajectory.append(x)
    return x


def dpm_solver_pp(
    predict: Predict,
    sched: Schedule,
    x: Tensor,
    steps: int,
    *,
    clip: bool = True,
    generator: torch.Generator | None = None,
    trajectory: list[Tensor] | None = None,
    spacing: str = "log-snr",
) -> Tensor:
    """DPM-Solver++(2M): with lambda = log(alpha / sigma), h = lambda_prev - lambda_t, r = h_last / h,

    x_prev = (sigma_prev / sigma_t) x_t - alpha_prev (e^{-h} - 1) D,
    D = (1 + 1 / (2r)) x0(t) - 1 / (2r) x0(t_last)    (D = x0(t) at first order),

    on time indices evenly spaced in log-SNR (``spacing="log-snr"``, :func:`log_snr_timesteps`) or in t.
    """
    ts = log_snr_timesteps(sched, steps) if spacing == "log-snr" else timesteps(sched.T, steps)
    if trajectory is not None:
        trajectory.append(x)
    x0_last: Tensor | None = None
    h_last: Tensor | None = None
    for i, (t, prev) in enumerate(zip(ts, [*ts[1:], -1])):
        x0, _ = _denoise(predict, sched, x, t, clip)
        if prev < 0:  # sigma_prev = 0: the solution is the data prediction itself
            x = x0
        else:
            ab, ab_prev = _abar(sched, t), _abar(sched, prev)
            lam, lam_prev = sched.log_snr[t] / 2, sched.log_snr[prev] / 2
            h = lam_prev - lam
            alpha_prev, sigma_prev, sigma = ab_prev.sqrt(), (1 - ab_prev).sqrt(), (1 - ab).sqrt()
            d = x0
            if x0_last is not None and h_last is not None and i + 1 < len(ts):
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
            x = (sigma_prev / sigma) * x - alpha_prev * torch.expm1(-h) * d
            h_last = h
        x0_last = x0
        if trajectory is not None:
            trajectory.append(x)
    return x


SAMPLERS = {"ddim": ddim, "ddpm": ddpm, "dpm-solver++": dpm_solver_pp}


def sample(
    name: str,
    predict: Predict,
    sched: Schedule,
    x: Tensor,
    steps: int,
    *,
    eta: float = 0.0,
    clip: bool = True,
    generator: torch.Generator | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Run sampler ``name`` from x = x_T; see the module docstring."""
    if name == "ddim":
        return ddim(predict, sched, x, steps, eta=eta, clip=clip, generator=generator, trajectory=trajectory)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name](predict, sched, x, steps, clip=clip, generator=generator, trajectory=trajectory)


def ddim_invert(predict: Predict, sched: Schedule, x0: Tensor, steps: int) -> Tensor:
    """Deterministic DDIM run backwards, x_0 -> x_T (Song et al. 2021, sec. 4.3; Dhariwal & Nichol 2021, app. F):
    each step re-noises the current denoised estimate with the current noise estimate,

        x_next = sqrt(abar_next) x0_hat(x_t, t) + sqrt(1 - abar_next) eps_hat(x_t, t),

    on the same time indices :func:`ddim` visits, so ``ddim(invert(x))`` returns close to x (exactly
    as the number of steps grows, for a smooth denoiser). No clipping: it would break the inverse.
    """
    ts = list(reversed(timesteps(sched.T, steps)))  # 0 ... T-1
    x = x0
    # the first step goes from the data (abar = 1) to the first index, where the denoiser is first defined;
    # its estimate there is taken at that index (x_0 itself is the best estimate of x_0)
    a, s = sched.scales(ts[0], x.dim())
    x = a * x0 + s * predict(a * x0, torch.full((x.shape[0],), ts[0], dtype=torch.long, device=x.device))[1]
    for t, nxt in zip(ts[:-1], ts[1:]):
        x0_hat, eps = predict(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        a_n, s_n = sched.scales(nxt, x.dim())
        x = a_n * x0_hat + s_n * eps
    return x


def log_snr_timesteps(sched: Schedule, steps: int) -> list[int]:
    """``steps`` distinct time indices from T-1 to 0 whose log-SNR is (nearly) evenly spaced: the spacing
    the DPM-Solver authors recommend for low-resolution pixel-space models (Lu et al. 2022; their code's
    ``skip_type="logSNR"``). A multistep solver extrapolates with the ratio of successive log-SNR steps,
    which evenly spaced t makes large near t = 0 (measured on a Gaussian: 20 steps 26% off in the std,
    2% with this spacing). Where rounding to integer indices would repeat one, the next index down is taken."""
    if not 1 <= steps <= sched.T:
        raise ValueError(f"steps must be in 1..{sched.T}, got {steps}")
    lam = sched.log_snr.double().cpu()
    targets = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    idx: list[int] = []
    for i, v in enumerate(targets):
        nearest = int((lam - v).abs().argmin())
        upper = sched.T - 1 if not idx else idx[-1] - 1  # strictly decreasing ...
        lower = steps - 1 - i  # ... with room left for the remaining indices
        idx.append(max(lower, min(upper, nearest)))
    idx[0], idx[-1] = sched.T - 1, 0
    return idx
