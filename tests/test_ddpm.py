"""Tests for genlab.models.ddpm: schedules, targets, samplers, DDIM inversion, the likelihood bound,
guidance, and the CLI end to end (train, resume, sample, nll, explore, bad settings).

The maths is checked against a closed-form case: data x_0 ~ N(mu, s^2 I), whose exact denoiser is
E[x_0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + 1 - a^2) (a = sqrt(abar_t)), so the samplers
must reproduce N(mu, s^2), DDIM must invert, and the bound must sit just below the exact log P(x).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genlab.cli import main
from genlab.errors import ConfigError
from genlab.models import build_model
from genlab.models.base import (
    ChunkedSampler,
    ConfigurableSampler,
    DenoisingModel,
    EMAModel,
    EncoderModel,
    LikelihoodModel,
    NoiseLatentModel,
    StepContext,
    StepNoise,
    TrainSettings,
    config_from_dict,
)
from genlab.models.ddpm import PRESETS, SCHEDULES, TARGETS, DDPMConfig, Schedule
from genlab.models.ddpm.likelihood import log_bin_probability, variational_bound
from genlab.models.ddpm.samplers import ddim, ddim_invert, sample, timesteps
from genlab.models.ddpm.schedule import make_betas, target_of, to_x0_eps


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_denoiser(sched: Schedule, mu: torch.Tensor, s: float):
    """The exact (x0_hat, eps_hat) for data x_0 ~ N(mu, s^2 I): the posterior mean of a Gaussian."""

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, sig = sched.scales(t, x_t.dim())
        x0 = mu + a * s**2 * (x_t - a * mu) / (a**2 * s**2 + sig**2)
        return x0, (x_t - a * x0) / sig

    return predict


# -- schedules and targets --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SCHEDULES)
def test_alpha_bar_decreases_from_near_one_to_near_zero(kind: str) -> None:
    sched = Schedule.named(kind, 1000, torch.float64)
    ab = sched.abar
    assert (ab[1:] < ab[:-1]).all() and ab[0] < 1 and ab[0] > 0.99
    assert 0 < ab[-1] < 1e-3  # x_T is (nearly) pure noise
    assert (sched.betas > 0).all() and (sched.betas <= 0.999).all()
    assert sched.abar.dtype == torch.float64 and Schedule.named(kind, 10).abar.dtype == torch.float32


@pytest.mark.parametrize("kind", SCHEDULES)
def test_closed_form_q_matches_iterated_single_steps(kind: str) -> None:
    """q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t) is the composition of the single steps
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t: exactly in its moments ..."""
    T = 200
    betas = make_betas(kind, T)
    sched = Schedule(betas, torch.float64)
    coef, var = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for t in range(T):
        coef, var = (1 - betas[t]).sqrt() * coef, (1 - betas[t]) * var + betas[t]
        assert math.isclose(float(coef), float(sched.abar[t].sqrt()), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(float(var), float(1 - sched.abar[t]), rel_tol=1e-9)
    # ... and in samples: 20,000 chains of single steps against the closed form's mean and std
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20_000,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(T // 2):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    a, s = sched.scales(T // 2 - 1, 1)
    assert abs(float(x.mean()) - 0.7 * float(a)) < 4 * float(s) / math.sqrt(20_000)
    assert abs(float(x.std()) / float(s) - 1) < 0.03


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("target", TARGETS)
def test_the_three_targets_convert_into_each_other_exactly(kind: str, target: str) -> None:
    sched = Schedule.named(kind, 1000, torch.float64)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(64, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(1000, (64,), generator=g)
    t[:2] = torch.tensor([0, 999])  # both ends, where a or s is smallest
    a, s = sched.scales(t, 4)
    x_t = a * x0 + s * eps
    back_x0, back_eps = to_x0_eps(target, target_of(target, x0, eps, a, s), x_t, a, s)
    torch.testing.assert_close(back_x0, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(back_eps, eps, rtol=0, atol=1e-9)
    # and each target is reachable from every other through (x0, eps)
    for other in TARGETS:
        x0_o, eps_o = to_x0_eps(other, target_of(other, x0, eps, a, s), x_t, a, s)
        torch.testing.assert_close(
            target_of(target, x0_o, eps_o, a, s), target_of(target, x0, eps, a, s), atol=1e-9, rtol=0
        )


# -- samplers against the exact denoiser of a Gaussian --------------------------------------------------
MU = torch.tensor([-0.5, 0.0, 0.3, 0.6], dtype=torch.float64)
S = 0.2


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_every_sampler_draws_the_data_distribution(kind: str) -> None:
    """Data N(mu, 0.5^2), the exact denoiser. Ancestral sampling over all T steps is exact up to sampling
    noise; the ODE samplers map the same x_T to (nearly) the same points as a 1000-step DDIM, which
    isolates their discretisation error: DPM-Solver++ at 20 steps must do as well as DDIM at 50.

    (Ancestral steps over a respaced chain, like DDIM with eta > 0, draw too narrow a distribution at
    few steps: their fixed variance beta~ leaves out the denoiser's own uncertainty c0^2 Var[x_0 | x_t],
    large when steps are long, which is why Nichol & Dhariwal learn it. Measured: std 0.175 for 0.2 at 100.)"""
    s = 0.5
    sched = Schedule.named(kind, 1000, torch.float64)
    predict = gaussian_denoiser(sched, MU, s)
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    ancestral = sample("ddpm", predict, sched, x_T, 1000, clip=False, generator=g)
    assert (ancestral.mean(0) - MU).abs().max() < 0.025, ancestral.mean(0)  # 3 standard errors
    assert ((ancestral.std(0) / s) - 1).abs().max() < 0.04, ancestral.std(0)
    exact = sample("ddim", predict, sched, x_T, 1000, clip=False)
    assert ((exact.std(0) / s) - 1).abs().max() < 0.04 and (exact.mean(0) - MU).abs().max() < 0.025
    # measured (cosine, linear): DDIM 50 steps 2.9%, 5.3% off in the std; DPM-Solver++ 20 steps 3.2%, 1.8%;
    # DPM-Solver++ at 20 steps evenly spaced in t instead of log-SNR: 10%, 24%
    for name, steps, tol in (("ddim", 50, 0.06), ("dpm-solver++", 20, 0.04), ("dpm-solver++", 50, 0.01)):
        x = sample(name, predict, sched, x_T, steps, clip=False)
        assert ((x.std(0) / exact.std(0)) - 1).abs().max() < tol, (name, steps, x.std(0) / exact.std(0))
        assert (x.mean(0) - exact.mean(0)).abs().max() < 0.01, (name, steps)


def test_respaced_ancestral_sampling_is_ddim_with_eta_one() -> None:
    """Song et al. 2021: DDIM's eta = 1 is the DDPM posterior, on any sub-sequence of steps."""
    sched = Schedule.named("cosine", 1000, torch.float64)
    predict = gaussian_denoiser(sched, MU, S)
    x_T = torch.randn(64, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = sample("ddpm", predict, sched, x_T, 37, clip=False, generator=torch.Generator().manual_seed(7))
    b = sample("ddim", predict, sched, x_T, 37, eta=1.0, clip=False, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    c = sample("ddim", predict, sched, x_T, 37, eta=0.5, clip=False, generator=torch.Generator().manual_seed(7))
    assert (a - c).abs().max() > 1e-3


def test_timesteps_start_at_the_noisiest_index_and_reach_zero() -> None:
    assert timesteps(1000, 1) == [999]
    assert timesteps(1000, 4) == [999, 666, 333, 0]
    assert timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        timesteps(10, 11)


def test_ddim_with_eta_zero_is_deterministic_and_inverts() -> None:
    sched = Schedule.named("cosine", 1000, torch.float64)
    predict = gaussian_denoiser(sched, MU, S)
    x_T = torch.randn(256, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    one = ddim(predict, sched, x_T, 50, clip=False, generator=torch.Generator().manual_seed(1))
    two = ddim(predict, sched, x_T, 50, clip=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(one, two)  # no noise is drawn at eta = 0
    noisy = ddim(predict, sched, x_T, 50, eta=1.0, clip=False, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(one, noisy)
    # x_0 -> x_T -> x_0: inversion then sampling returns the data, up to the discretisation error of a
    # first-order method: measured mean |error| 0.020, 0.010, 0.0010 at 50, 100, 1000 steps (8-bit level: 0.008)
    x0 = MU + S * torch.randn(256, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errors = {}
    for steps in (50, 100, 1000):
        z = ddim_invert(predict, sched, x0, steps)
        errors[steps] = float((ddim(predict, sched, z, steps, clip=False) - x0).abs().mean())
    assert abs(float(z.std()) - 1) < 0.05  # the inverted latents look like N(0, I) draws
    assert errors[100] < 0.015 and errors[1000] < 0.002, errors
    assert 1.7 < errors[50] / errors[100] < 2.3, errors  # error ~ 1 / steps: the method's, not slack


# -- the likelihood bound ---------------------------------------------------------------------------------
LEVELS = torch.tensor([0, 64, 128, 191, 255], dtype=torch.float64) * 2 / 255 - 1  # 8-bit levels on [-1, 1]


def mixture_denoiser(sched: Schedule, probs: torch.Tensor):
    """The exact (x0_hat, eps_hat) for pixels drawn independently from the 5 LEVELS with probabilities
    ``probs`` (D, 5): the posterior mean over the levels given x_t."""

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = sched.scales(t, x_t.dim())
        flat, a1, s1 = x_t.flatten(1), a.flatten()[:, None, None], s.flatten()[:, None, None]
        logits = probs.log()[None] - (flat[..., None] - a1 * LEVELS) ** 2 / (2 * s1**2)  # (B, D, 5)
        x0 = (logits.softmax(-1) * LEVELS).sum(-1).view_as(x_t)
        return x0, (x_t - a * x0) / s

    return predict


def test_bound_is_below_the_exact_log_probability_by_the_decoders_known_cost() -> None:
    """8-bit images whose 16 pixels take 5 levels with known probabilities, so log P(x) is exact, and the exact
    denoiser. The bound must be below log P(x). Its parts have known sizes: the diffusion terms carry the
    information in x (they approach -log P(x) as T grows; measured 0.23 nats above at T = 1000, cosine), and the
    decoder N(x0_hat, beta_0) of Ho et al. pays -log of its mass on the pixel's bin, x +- 1/255, with x0_hat
    exact: 1.2 nats per inner pixel at beta_0 = 1e-4 (Ho et al.'s 'distortion' of ~2 bits/dim on CIFAR-10)."""
    sched = Schedule.named("cosine", 1000, torch.float64)
    g = torch.Generator().manual_seed(5)
    probs = torch.distributions.Dirichlet(torch.full((5,), 2.0, dtype=torch.float64)).sample((16,))  # (D, 5)
    idx = torch.stack([torch.multinomial(p, 200, replacement=True, generator=g) for p in probs], 1)  # (200, D)
    images = ((LEVELS[idx] + 1) / 2).view(200, 1, 4, 4)
    exact = probs.log().gather(1, idx.T).T.sum(1)  # log P(x), (200,)
    parts = variational_bound(mixture_denoiser(sched, probs), sched, images, k=1000, generator=g)
    bound = parts["bound"]
    assert set(parts) == {"bound", "prior_kl", "diffusion_kl", "decoder_nll"}
    torch.testing.assert_close(-bound, parts["prior_kl"] + parts["diffusion_kl"] + parts["decoder_nll"])
    sem = float((exact + parts["diffusion_kl"]).std()) / math.sqrt(len(bound))
    assert (bound < exact).all()
    info = float((parts["prior_kl"] + parts["diffusion_kl"] + exact).mean())
    assert -3 * sem < info < 0.4, (info, sem)
    # the decoder's known cost: the mass of N(0, beta_0) within +-1/255, to +-inf on the outer side at the edges
    z = torch.tensor(1 / 255, dtype=torch.float64) / sched.betas[0].sqrt()
    inner, edge = -torch.log(torch.special.ndtr(z) - torch.special.ndtr(-z)), -torch.special.log_ndtr(z)
    at_edge = (idx == 0) | (idx == 4)
    expected = torch.where(at_edge, edge, inner).sum(1)
    torch.testing.assert_close(parts["decoder_nll"], expected, rtol=0.01, atol=0.01)
    # a wrong denoiser (the level probabilities of another image set) costs much more
    other = torch.distributions.Dirichlet(torch.full((5,), 2.0, dtype=torch.float64)).sample((16,))
    wrong = variational_bound(mixture_denoiser(sched, other), sched, images, k=100, generator=g)["bound"]
    assert float(bound.mean() - wrong.mean()) > 3.0
    # k < T - 1: the stratified estimate of the sum is unbiased (within its noise)
    sub = variational_bound(mixture_denoiser(sched, probs), sched, images, k=50, generator=g)["bound"]
    diff = sub - bound
    assert abs(float(diff.mean())) < 3 * float(diff.std()) / math.sqrt(len(diff)), float(diff.mean())


def test_bin_probabilities_sum_to_one_and_stay_finite_in_the_tails() -> None:
    levels = (torch.arange(256, dtype=torch.float64) * 2 / 255 - 1).view(1, -1)
    for mean, std in ((0.1, 0.3), (0.99, 0.01), (-3.0, 0.02), (0.0, 1e-4)):
        logp = log_bin_probability(levels, torch.tensor(mean), torch.tensor(std))
        assert math.isclose(float(torch.logsumexp(logp, 1)), 0.0, abs_tol=1e-9), (mean, std)
        assert torch.isfinite(logp).any()
    far = log_bin_probability(torch.tensor([1.0]), torch.tensor(-1.0), torch.tensor(0.05))
    assert torch.isfinite(far) and float(far) < -700  # 40 std away: no underflow to -inf


# -- the model -------------------------------------------------------------------------------------------
def tiny(**overrides) -> DDPMConfig:
    base = dict(channels=8, channel_mult=(1, 2), timesteps=100, sample_steps=4, preview_steps=2)
    return dataclasses.replace(PRESETS["ddpm"].model, **{**base, **overrides})


def ctx(step: int, lr: float = 1e-3) -> StepContext:
    return StepContext(step, StepNoise(torch.Generator().manual_seed(100 + step)), TrainSettings(lr=lr))


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate_round_trip_and_build_on_meta(name: str) -> None:
    from genlab.models import dry_build

    cfg = PRESETS[name].model
    cfg.validate()
    assert config_from_dict(DDPMConfig, json.loads(json.dumps(dataclasses.asdict(cfg))), "model") == cfg
    model = dry_build("ddpm", cfg)
    capabilities = (EMAModel, LikelihoodModel, EncoderModel, NoiseLatentModel, ConfigurableSampler, DenoisingModel)
    for cap in (*capabilities, ChunkedSampler):
        assert isinstance(model, cap), cap
    assert model.latent_dim == 784


def test_sampling_in_chunks_draws_the_images_of_one_batch(monkeypatch) -> None:
    """Large requests go through the sampler in chunks (for speed): deterministic DDIM then gives the
    same images as one batch, and a conditional model keeps each image's label."""
    import genlab.models.ddpm.model as ddpm_model

    torch.manual_seed(0)
    model = build_model("ddpm", tiny(conditional=True)).eval()
    with torch.no_grad():  # a trained-looking network: the zero-initialised output layers would ignore the labels
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    labels = torch.arange(7) % 10
    whole = model.sample(7, labels=labels, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(ddpm_model, "SAMPLE_CHUNK", 3)
    chunked = model.sample(7, labels=labels, generator=torch.Generator().manual_seed(3))
    assert chunked.shape == (7, 1, 28, 28)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    other = model.sample(7, labels=torch.zeros(7, dtype=torch.long), generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(other, whole, atol=1e-3)  # the labels reached every chunk
    # the chunks as they come (what progress bars count) are sample()'s images
    parts = list(model.sample_chunks(7, labels=labels, generator=torch.Generator().manual_seed(3)))
    assert [len(p) for p in parts] == [3, 3, 1]
    torch.testing.assert_close(torch.cat(parts), chunked, rtol=0, atol=0)


def test_a_progress_bar_moves_chunk_by_chunk_within_a_batch(monkeypatch) -> None:
    import genlab.models.ddpm.model as ddpm_model
    import genlab.sample as sample_module

    positions: list[int] = []

    class Recorder:
        def __init__(self, *args, **kwargs) -> None: ...
        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None: ...
        def update(self, n: int) -> None:
            positions.append(n)

    monkeypatch.setattr("genlab.progress.Progress", Recorder)
    monkeypatch.setattr(ddpm_model, "SAMPLE_CHUNK", 4)
    model = build_model("ddpm", tiny()).eval()
    images = sample_module.generate(model, 10, generator=torch.Generator().manual_seed(0), batch_size=6)
    assert images.shape == (10, 1, 28, 28)
    assert positions == [4, 6, 6, 10, 10]  # batch 1: chunks of 4 and 2; batch 2: chunk of 4


def test_a_step_changes_the_weights_and_the_ema_and_sampling_changes_nothing() -> None:
    from genlab.training.callbacks import ema_decay_at, ema_update

    torch.manual_seed(0)
    model = build_model("ddpm", tiny(conditional=True, dropout=0.1))
    opts = model.configure_optimizers(TrainSettings(lr=1e-3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    for step in range(3):  # zero-initialised layers (output, each block's conv2) pass no gradient back until moved
        out = model.train_step(model.networks(), opts, x, y, ctx(step))
        for avg, src in model.ema_pairs():
            ema_update(avg, src, ema_decay_at(model.ema_decay, step))
    after = model.state_dict()
    moved = [f"{net}.{k}" for net in ("unet", "unet_ema") for k in ("inp.weight", "out.weight", "label_emb.weight")]
    assert all(not torch.equal(before[k], after[k]) for k in moved), moved
    assert {"loss", "mse"} == set(out.logs) and all(torch.isfinite(v) for v in out.logs.values())
    assert set(model.networks()) == {"unet"} and model.unet_ema is not None
    assert not any(p.requires_grad for p in model.unet_ema.parameters())
    model.eval()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    model.sample(3, generator=torch.Generator().manual_seed(0))
    model.likelihood_report(x[:2], y[:2], k=3)
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items())


def test_same_noise_same_weights_and_train_steps_draw_only_from_ctx() -> None:
    def run(seed_offset: int) -> dict:
        torch.manual_seed(0)
        model = build_model("ddpm", tiny(conditional=True))
        opts = model.configure_optimizers(TrainSettings(lr=1e-3))
        torch.manual_seed(12345 + seed_offset)  # the global RNG must not matter
        for i in range(2):
            g = torch.Generator().manual_seed(i)
            model.train_step(model.networks(), opts, torch.rand(4, 1, 28, 28, generator=g), torch.arange(4), ctx(i))
        return model.state_dict()

    a, b = run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("weighting", ["uniform", "min-snr"])
def test_min_snr_weights_the_x0_error_by_min_snr_gamma(target: str, weighting: str) -> None:
    """Whatever the target, the weighted loss equals min(SNR, 5) * ||x0 error||^2 (Min-SNR) or the plain
    target error (uniform)."""
    model = build_model("ddpm", tiny(target=target, weighting=weighting))
    sched = model.schedule_on(torch.device("cpu"))
    t = torch.tensor([0, 10, 50, 99])
    g = torch.Generator().manual_seed(0)
    x0, eps, out = (torch.randn(4, 1, 2, 2, generator=g) for _ in range(3))
    a, s = sched.scales(t, 4)
    x_t = a * x0 + s * eps
    err_target = (out - target_of(target, x0, eps, a, s)).pow(2).flatten(1).mean(1)
    x0_hat, _ = to_x0_eps(target, out, x_t, a, s)
    err_x0 = (x0_hat - x0).pow(2).flatten(1).mean(1)
    weighted = model.loss_weight(sched, t) * err_target
    if weighting == "min-snr":
        torch.testing.assert_close(weighted, sched.snr(t).clamp(max=5.0) * err_x0, rtol=1e-4, atol=1e-6)
    else:
        torch.testing.assert_close(weighted, err_target)


def test_guidance_zero_is_the_unconditional_prediction_and_one_the_conditional() -> None:
    torch.manual_seed(0)
    model = build_model("ddpm", tiny(conditional=True, ema_decay=0.0)).eval()
    for p in model.unet.parameters():  # the zero-initialised output layers would make every label agree
        p.data.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(6, 1, 28, 28, generator=g), torch.randint(100, (6,), generator=g), torch.arange(6)
    with torch.no_grad():
        uncond = model.denoiser(None)(x, t)[1]  # no labels: the null class
        cond = model.denoiser(y)(x, t)[1]
        assert not torch.allclose(uncond, cond)
        torch.testing.assert_close(model.denoiser(y, 0.0)(x, t)[1], uncond)
        torch.testing.assert_close(model.denoiser(y, 1.0)(x, t)[1], cond)
        # W = 3: the two predictions from one batch, extrapolated from the unconditional one
        torch.testing.assert_close(model.denoiser(y, 3.0)(x, t)[1], uncond + 3 * (cond - uncond), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.denoiser(y, 0.5)(x, t)[1], (uncond + cond) / 2, rtol=1e-4, atol=1e-5)


def test_set_sampling_validates_each_option() -> None:
    model = build_model("ddpm", tiny())
    model.set_sampling(sampler="dpm-solver++", steps=100)
    assert (model.sampling.sampler, model.sampling.steps) == ("dpm-solver++", 100)
    for bad, words in (
        (dict(steps=101), "--steps must be in 1..T"),
        (dict(steps=0), "--steps"),
        (dict(sampler="euler"), "--sampler"),
        (dict(guidance=2.0), "needs a conditional model"),
        (dict(sampler="ddpm", eta=0.5), "ddim sampler only"),
        (dict(eta=float("nan")), "--eta"),
    ):
        with pytest.raises(ConfigError, match=words):
            model.set_sampling(**bad)
    assert (model.sampling.sampler, model.sampling.steps) == ("dpm-solver++", 100)  # a refused call changes nothing


# -- the CLI, end to end on real MNIST ----------------------------------------------------------------------
TINY = ["--set", "model.channels=8", "--set", "model.channel_mult=[1,2]", "--set", "model.timesteps=100"]
TINY += ["--set", "model.attention=false", "--set", "model.sample_steps=2", "--set", "model.preview_steps=1"]


def train_args(mnist_dir: Path, out: Path, steps: int, *extra: str, tiny: bool = True) -> list[str]:
    return [
        "train",
        "ddpm",
        "--preset",
        "ddpm",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--split",
        "test",
        "--batch-size",
        "16",
        "--max-steps",
        str(steps),
        "--checkpoint-every",
        "3",
        "--log-every",
        "3",
        "--out",
        str(out),
        "--quiet",
        *(TINY if tiny else []),
        *extra,
    ]


@pytest.fixture(scope="module")
def ddpm_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddpm") / "straight"
    assert main(train_args(mnist_dir, out, 6)) == 0
    return out


def test_training_writes_the_run_and_resume_is_bit_identical(ddpm_run, mnist_dir, tmp_path) -> None:
    names = {p.name for p in ddpm_run.iterdir()}
    assert {"config.json", "model.safetensors", "samples.png", "denoising.png", "progress.png", "summary.json"} <= names
    assert (ddpm_run / "progress" / "step-000006.png").is_file()  # the last step's grid (the default: every 500)
    summary = json.loads((ddpm_run / "summary.json").read_text())
    assert "diversity" in summary
    lines = [json.loads(x) for x in (ddpm_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [3, 6] and all("mse" in r for r in lines if "loss" in r)
    weights = load_file(ddpm_run / "model.safetensors")
    assert any(k.startswith("unet_ema.") for k in weights) and not any("abar" in k for k in weights)
    from PIL import Image

    with Image.open(ddpm_run / "denoising.png") as im:  # 8 rows of x_T ... x_0: x_T and one frame per DDIM step
        from genlab.sample import grid_image

        assert im.size == grid_image(torch.zeros(8 * 3, 1, 28, 28), nrow=3, scale=None).size
    # the same run killed (SIGKILL) inside step 5, after the step-3 checkpoint, then resumed: bit-identical
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", HANG_AT_STEP_4, *train_args(mnist_dir, killed, 6)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step-00000003" / "model.safetensors").is_file():
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.05)
    time.sleep(0.5)  # into the hanging step
    child.kill()
    child.wait(timeout=30)
    assert not (killed / "model.safetensors").exists()
    assert main(["train", "--resume", str(killed), "--quiet"]) == 0
    assert (killed / "model.safetensors").read_bytes() == (ddpm_run / "model.safetensors").read_bytes()


HANG_AT_STEP_4 = """
import sys, time, torch
torch.set_num_threads(1)
from genlab.models.ddpm import DDPM
from genlab.cli import main
original = DDPM.train_step
def train_step(self, nets, opt, x, y, ctx):
    if ctx.step == 4:
        time.sleep(600)
    return original(self, nets, opt, x, y, ctx)
DDPM.train_step = train_step
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--sampler", "ddpm", "--steps", "10"],
        ["--sampler", "ddim", "--steps", "5", "--eta", "1"],
        ["--sampler", "dpm-solver++", "--steps", "3"],
    ],
)
def test_sample_with_each_sampler(ddpm_run, tmp_path, flags) -> None:
    out = tmp_path / "s.npy"
    assert main(["sample", str(ddpm_run), "-n", "6", "--out", str(out), "--quiet", *flags]) == 0
    arr = np.load(out)
    assert arr.shape == (6, 1, 28, 28) and 0 <= arr.min() and arr.max() <= 1
    again = tmp_path / "again.npy"
    assert main(["sample", str(ddpm_run), "-n", "6", "--out", str(again), "--quiet", *flags]) == 0
    assert np.array_equal(arr, np.load(again))


def test_nll_and_explore(ddpm_run, mnist_dir, capsys) -> None:
    assert main(["nll", str(ddpm_run), "--k", "5", "-n", "20", "--data-dir", str(mnist_dir), "--quiet"]) == 0
    nll = json.loads((ddpm_run / "nll.json").read_text())
    assert nll["likelihood"].startswith("8-bit") and not nll["binarized"]
    assert math.isclose(nll["bits_per_dim"], nll["iwae_nll_nats"] / (784 * math.log(2)), rel_tol=1e-3)
    assert 0 < nll["bits_per_dim"] < 16  # a barely trained model: far from good, but a probability of 8-bit images
    assert {"prior_kl_nats", "diffusion_kl_nats", "decoder_nll_nats", "timesteps"} <= set(nll)
    for what in ("interpolate", "reconstruct"):
        assert (
            main(["explore", str(ddpm_run), "--what", what, "--n", "2", "--data-dir", str(mnist_dir), "--quiet"]) == 0
        )
        assert (ddpm_run / f"explore-{what}.png").stat().st_size > 100
    capsys.readouterr()
    assert main(["explore", str(ddpm_run), "--what", "traverse", "--data-dir", str(mnist_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and "interpolate" in err


def one_error_line(capsys, code: int, words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--timesteps", "0"], "model.timesteps"),
        (["--schedule", "quadratic"], "model.schedule must be one of linear, cosine, sigmoid"),
        (["--target", "score"], "model.target"),
        (["--set", "model.sample_steps=1001"], "model.sample_steps must be in 1..T, and this model has T = 1000"),
        (["--set", "model.guidance=3"], "needs a conditional model"),
    ],
)
def test_bad_training_settings_give_one_error_line(mnist_dir, tmp_path, capsys, flags, words) -> None:
    code = main(train_args(mnist_dir, tmp_path / "r", 1, *flags, tiny=False))
    one_error_line(capsys, code, words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--steps", "101"], "--steps must be in 1..T, and this model has T = 100"),
        (["--guidance", "2"], "--guidance (classifier-free guidance) needs a conditional model"),
        (["--sampler", "euler"], "--sampler must be one of"),
        (["--sampler", "dpm-solver++", "--eta", "0.5"], "ddim sampler only"),
    ],
)
def test_bad_sampling_settings_give_one_error_line(ddpm_run, tmp_path, capsys, flags, words) -> None:
    code = main(["sample", str(ddpm_run), "-n", "2", "--out", str(tmp_path / "s.npy"), *flags])
    one_error_line(capsys, code, words)
    assert not (tmp_path / "s.npy").exists()


def test_sampling_flags_on_a_model_without_them_are_refused(mnist_dir, tmp_path, capsys) -> None:
    vae = tmp_path / "vae"
    args = ["train", "vae", "--preset", "seed", "--data-dir", str(mnist_dir), "--split", "test", "--max-steps", "2"]
    assert main([*args, "--out", str(vae), "--quiet"]) == 0
    capsys.readouterr()  # the seed VAE's own warning (posterior collapse)
    code = main(["sample", str(vae), "--steps", "10", "--out", str(tmp_path / "s.npy")])
    one_error_line(capsys, code, "--steps does not apply")
    code = main(["evaluate", str(vae), "--guidance", "2", "--out", str(tmp_path / "e")])
    one_error_line(capsys, code, "--guidance does not apply")


def test_conditional_run_samples_a_label_with_guidance(mnist_dir, tmp_path) -> None:
    out = tmp_path / "cond"
    args = train_args(mnist_dir, out, 2, "--set", "model.conditional=true")
    assert main(args) == 0
    npy = tmp_path / "c.npy"
    assert main(["sample", str(out), "-n", "4", "--label", "3", "--guidance", "2.5", "--out", str(npy), "--quiet"]) == 0
    assert np.load(npy).shape == (4, 1, 28, 28)


def test_evaluate_draws_with_the_sampling_flags_and_records_them(ddpm_run, tmp_path, capsys) -> None:
    def evaluate(out: Path, *flags: str) -> dict:
        args = ["evaluate", str(ddpm_run), "-n", "200", "--metrics", "fid", "--out", str(out), "--quiet", *flags]
        assert main(args) == 0
        return json.loads((out / "metrics.json").read_text())

    default = evaluate(tmp_path / "default")
    assert default["source"]["sampling"] == {"sampler": "ddim", "steps": 2, "eta": 0.0}  # unconditional: no W
    assert default["source"]["sampling_seconds"] > 0
    chosen = evaluate(tmp_path / "chosen", "--sampler", "ddpm", "--steps", "7")
    assert chosen["source"]["sampling"] == {"sampler": "ddpm", "steps": 7}  # eta is DDIM's alone
    fid = {r["key"]: r["value"] for r in default["summary"]}["fid"]
    assert {r["key"]: r["value"] for r in chosen["summary"]}["fid"] != fid  # other samples, not a relabelling
    assert "sampled with ddpm, 7 steps, drawn in" in (tmp_path / "chosen" / "report.html").read_text()

    npy = tmp_path / "s.npy"
    np.save(npy, np.zeros((10, 1, 28, 28), np.float32))
    code = main(["evaluate", str(npy), "--dataset", "mnist", "--steps", "5", "--out", str(tmp_path / "npy")])
    one_error_line(capsys, code, "--steps: how a run's model draws")
    assert not (tmp_path / "npy").exists()
    code = main(["evaluate", str(ddpm_run), "--steps", "101", "--out", str(tmp_path / "bad")])
    one_error_line(capsys, code, "--steps must be in 1..T")
