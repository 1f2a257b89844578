"""Denoising diffusion models: DDPM training (Ho et al. 2020) with DDIM / DPM-Solver++ sampling.

Training: an image x_0 in [-1, 1], a time index t ~ U{0..T-1} and noise eps ~ N(0, I) give
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (:mod:`.schedule`); the U-Net (:mod:`.unet`) predicts
the config's ``target`` (eps, x0 or v) and the loss is its squared error, averaged over pixels,

    loss = E_{x_0, t, eps} w(t) || f(x_t, t) - target ||^2 / D,

with w = 1 (``uniform``: Ho et al.'s L_simple for eps) or Min-SNR-gamma (Hang et al. 2023): the
weight that makes the error on x_0 count min(SNR_t, gamma) times, so the nearly clean steps, which
are easy and many, do not dominate. t, eps and the label dropout all come from ``ctx.noise``, so a
resumed run draws what the uninterrupted one would have. The schedule maths is float32 whatever
the trainer's autocast; only the network runs in bf16 under ``--precision bf16``.

Sampling (``sample``) uses the EMA weights and the sampler chosen at sampling time
(:meth:`DDPM.set_sampling`; default from the config: DDIM, 50 steps); in training mode, where the
trainer's progress grids call it, it takes ``preview_steps`` DDIM steps instead, so a grid costs a
few training steps' time. Conditional models get classifier-free guidance (Ho & Salimans 2022):
the label is replaced by a null class with probability ``label_dropout`` in training, and sampling
uses out_null + W (out_label - out_null), so W = 0 is the unconditional model, W = 1 the conditional.

Capabilities: EMA weights; a likelihood bound (:mod:`.likelihood`, on 8-bit images); a latent
space through deterministic DDIM: z = x_T (C*H*W numbers), ``decode`` runs the ODE from z,
``encode_latent`` runs it backwards (inversion); and a denoising trajectory for the pictures.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ..base import GenerativeModel, StepContext, StepOutput, TrainSettings, adam, optimize, require_image_shape
from . import samplers
from .config import DDPMConfig, check_sampling
from .likelihood import variational_bound
from .schedule import Schedule, target_of, to_x0_eps
from .unet import UNet

# Images taken through the sampler's 10-1000 network passes at once. The U-Net's activations for a
# large batch (10,000 is what `genlab sample` hands over) spill the CPU's caches: on 2 threads, DDIM
# took 18.6 s per 1,000 images and 10 steps in batches of 125, 25.3 in batches of 500, 33.1 in
# batches of 2,000, and about 39 (194 s for 50 steps) in one batch of 10,000 (benchmarks/README.md).
SAMPLE_CHUNK = 125


@dataclass
class SamplingOptions:
    sampler: str
    steps: int
    eta: float
    guidance: float


class DDPM(GenerativeModel):
    family = "ddpm"
    config_class = DDPMConfig
    default_sample_every = 500
    likelihood_name = "8-bit images, discretised Gaussian decoder: variational bound (Ho et al. 2020)"
    likelihood_data = "discrete"
    latent_is_noise = True  # the latent is x_T: Gaussian noise whose single coordinates mean nothing

    def __init__(self, config: DDPMConfig):
        super().__init__(config)
        self.unet = UNet(config)
        # a non-trainable copy, outside networks() and the optimiser; the trainer's EMA callback updates it
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False) if config.ema_decay > 0 else None
        with torch.device("cpu"):  # real numbers even when the model is built on the meta device (dry_build)
            self._schedule = Schedule.named(config.schedule, config.timesteps)
        self._on_device: dict[torch.device, Schedule] = {}
        self.sampling = SamplingOptions(config.sampler, config.sample_steps, config.eta, config.guidance)

    def schedule_on(self, device: torch.device) -> Schedule:
        """The float32 schedule on ``device``, copied there once."""
        if device not in self._on_device:
            self._on_device[device] = self._schedule.to(device)
        return self._on_device[device]

    # -- GenerativeModel interface --------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def configure_optimizers(self, settings: TrainSettings) -> dict[str, torch.optim.Optimizer]:
        return {"unet": adam(self.unet.parameters(), lr=settings.lr)}

    def loss_weight(self, sched: Schedule, t: Tensor) -> Tensor:
        """w(t) for the squared error in the target's space (B,).

        Min-SNR-gamma puts weight min(SNR, gamma) on ||x0_hat - x0||^2; in the target's space that is
        min(SNR, gamma) / SNR for eps (||eps error||^2 = SNR ||x0 error||^2), min(SNR, gamma) / (SNR + 1)
        for v, and min(SNR, gamma) for x0 (Hang et al. 2023, sec. 3.4).
        """
        cfg = self.config
        if cfg.weighting == "uniform":
            return torch.ones_like(t, dtype=torch.float32)
        snr = sched.snr(t)
        clipped = snr.clamp(max=cfg.snr_gamma)
        if cfg.target == "eps":
            return clipped / snr
        if cfg.target == "v":
            return clipped / (snr + 1)
        return clipped

    def train_step(
        self,
        nets: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> StepOutput:
        cfg = self.config
        require_image_shape("DDPM", cfg.image_shape, x)
        b, dev = x.shape[0], x.device
        sched = self.schedule_on(dev)
        t = ctx.noise.randint(cfg.timesteps, b, device=dev)  # (B,)
        eps = ctx.noise.randn(b, *cfg.image_shape, device=dev)  # (B, C, H, W)
        labels = None
        if cfg.conditional:
            drop = ctx.noise.rand(b, device=dev) < cfg.label_dropout
            labels = torch.where(drop, torch.full_like(y, cfg.num_classes), y)
        x0 = x.float() * 2.0 - 1.0
        a, s = sched.scales(t, x0.dim())
        x_t = a * x0 + s * eps  # float32: elementwise maths is not autocast
        out = nets["unet"](x_t, t, labels).float()  # the network alone runs in bf16 under autocast
        mse = (out - target_of(cfg.target, x0, eps, a, s)).pow(2).flatten(1).mean(1)  # (B,)
        loss = (self.loss_weight(sched, t) * mse).mean()
        applied = optimize(loss, optimizers["unet"], None, ctx.settings, ctx.step)
        return StepOutput(loss=loss.detach(), logs={"loss": loss.detach(), "mse": mse.mean().detach()}, applied=applied)

    # -- the denoiser the samplers and the bound call ------------------------------------------
    @property
    def sampling_net(self) -> UNet:
        """The network that makes pictures: the EMA copy when enabled, else the trained one."""
        return self.unet_ema if self.unet_ema is not None else self.unet

    def denoiser(self, labels: Tensor | None, guidance: float = 1.0) -> samplers.Predict:
        """predict(x_t, t) -> (x0_hat, eps_hat) of the sampling network, float32.

        A conditional model with guidance W != 1 evaluates the labelled and the null-class input
        as one batch and mixes the outputs: out_null + W (out_label - out_null).
        """
        net, cfg = self.sampling_net, self.config

        def predict(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            sched = self.schedule_on(x_t.device)
            if labels is None or guidance == 1.0:
                out = net(x_t, t, labels)
            elif guidance == 0.0:
                out = net(x_t, t, torch.full_like(labels, cfg.num_classes))
            else:
                null = torch.full_like(labels, cfg.num_classes)
                both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))
                cond, uncond = both.chunk(2)
                out = uncond + guidance * (cond - uncond)
            a, s = sched.scales(t, x_t.dim())
            return to_x0_eps(cfg.target, out.float(), x_t, a, s)

        return predict

    def _eval_net(self):
        """Run the sampling network in eval mode (no dropout), restoring its mode afterwards."""
        net = self.sampling_net
        return _EvalMode(net)

    # -- sampling ---------------------------------------------------------------------------
    def set_sampling(
        self,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
    ) -> None:
        """Choose how :meth:`sample` (and ``decode``) draw images; options not given keep their value.
        A bad option raises :class:`ConfigError` naming its flag."""
        cur = self.sampling
        new = SamplingOptions(
            sampler if sampler is not None else cur.sampler,
            steps if steps is not None else cur.steps,
            eta if eta is not None else cur.eta,
            guidance if guidance is not None else cur.guidance,
        )
        check_sampling(self.config, new.sampler, new.steps, new.eta, new.guidance)
        if eta is not None and eta != 0.0 and new.sampler != "ddim":
            raise ConfigError(
                f"--eta applies to the ddim sampler only, not {new.sampler} (ddpm always adds the posterior's "
                "noise, dpm-solver++ none)"
            )
        self.sampling = new

    def sampling_settings(self) -> dict[str, Any]:
        """The options that shape the samples: eta only for DDIM (ancestral sampling always adds the
        posterior's noise, DPM-Solver++ none), guidance only for a conditional model."""
        how = asdict(self.sampling)
        if how["sampler"] != "ddim":
            del how["eta"]
        if not self.config.conditional:
            del how["guidance"]
        return how

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, I), (n, C, H, W), drawn on the generator's device and moved to the model's."""
        dev = generator.device if generator is not None else "cpu"
        return torch.randn(n, *self.image_shape, generator=generator, device=dev).to(self.device)

    def _run(
        self,
        x_T: Tensor,
        labels: Tensor | None,
        generator: torch.Generator | None,
        trajectory: list[Tensor] | None = None,
    ) -> Tensor:
        opts = self.sampling
        name, steps, eta = opts.sampler, opts.steps, opts.eta
        if self.training:  # a progress grid during training: cheap, deterministic DDIM
            name, steps, eta = "ddim", self.config.preview_steps, 0.0
        with self._eval_net():
            predict = self.denoiser(labels, opts.guidance if labels is not None else 1.0)
            return samplers.sample(
                name,
                predict,
                self.schedule_on(x_T.device),
                x_T,
                steps,
                eta=eta,
                generator=generator,
                trajectory=trajectory,
            )

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return torch.cat(list(self.sample_chunks(n, labels, generator)))

    @torch.inference_mode()
    def sample_chunks(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Iterator[Tensor]:
        """``sample``'s images, SAMPLE_CHUNK at a time (the ChunkedSampler capability: progress between)."""
        y = self.sampling_labels(n, labels)
        x_T = self.noise(n, generator)  # all starting noises first: the same x_T whatever the chunking
        for lo in range(0, n, SAMPLE_CHUNK):
            chunk = self._run(x_T[lo : lo + SAMPLE_CHUNK], None if y is None else y[lo : lo + SAMPLE_CHUNK], generator)
            yield ((chunk + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.inference_mode()
    def denoising_trajectory(
        self, n: int, frames: int = 10, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """(n, frames, C, H, W) in [0, 1]: x_T, evenly chosen intermediate x_t, and the final image,
        from the sampler chosen for :meth:`sample`."""
        y = self.sampling_labels(n, labels)
        path: list[Tensor] = []
        self._run(self.noise(n, generator), y, generator, trajectory=path)
        idx = sorted({round(i * (len(path) - 1) / max(frames - 1, 1)) for i in range(frames)})
        return torch.stack([((path[i] + 1.0) / 2.0).clamp(0.0, 1.0) for i in idx], dim=1)

    # -- capabilities: EMA weights ----------------------------------------------------------------
    @property
    def ema_decay(self) -> float:
        return self.config.ema_decay

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [] if self.unet_ema is None else [(self.unet_ema, self.unet)]

    # -- capabilities: a latent space through deterministic DDIM -------------------------------------
    @property
    def latent_dim(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.noise(n, generator).flatten(1)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The DDIM ODE (eta = 0, no clipping: the exact inverse of :meth:`encode_latent`) from x_T = z,
        with the sampling steps and guidance chosen; images (B, C, H, W) in [0, 1]."""
        y = self.sampling_labels(z.shape[0], labels)
        with self._eval_net():
            predict = self.denoiser(y, self.sampling.guidance if y is not None else 1.0)
            x = samplers.ddim(
                predict, self.schedule_on(z.device), z.reshape(-1, *self.image_shape), self.sampling.steps, clip=False
            )
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def encode_latent(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """DDIM inversion of images in [0, 1]: the x_T whose ODE path ends at them, (B, C*H*W)."""
        y = self.sampling_labels(x.shape[0], labels)
        with self._eval_net():
            predict = self.denoiser(y, self.sampling.guidance if y is not None else 1.0)
            z = samplers.ddim_invert(predict, self.schedule_on(x.device), x.float() * 2.0 - 1.0, self.sampling.steps)
        return z.flatten(1)

    # -- capability: a bound on log p(x) (genlab nll, evaluate --nll) ---------------------------------
    def likelihood_report(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
    ) -> dict[str, Tensor]:
        """Per image (B,): the variational bound (``"bound"``) on log P(x) of the 8-bit image (log P(x | y)
        for a conditional model, unguided) and its parts; ``k`` time indices of the sum (all when k >= T - 1)."""
        y = self.sampling_labels(x.shape[0], labels.to(self.device) if labels is not None else None)
        with self._eval_net():
            return variational_bound(
                _clipped(self.denoiser(y)), self.schedule_on(self.device), x.to(self.device), k=k, generator=generator
            )

    def likelihood_summary(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Any]:
        """What the bound is (``bound_name`` labels genlab nll's table) and over how many steps."""
        return {"bound_name": "NLL, variational bound", "timesteps": self.config.timesteps}


def _clipped(predict: samplers.Predict) -> samplers.Predict:
    """x0_hat clamped to the data range [-1, 1]: the reverse process the samplers run."""

    def inner(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x0, eps = predict(x_t, t)
        return x0.clamp(-1.0, 1.0), eps

    return inner


class _EvalMode:
    def __init__(self, net: nn.Module):
        self.net = net

    def __enter__(self) -> None:
        self.was_training = self.net.training
        self.net.eval()

    def __exit__(self, *exc: object) -> None:
        self.net.train(self.was_training)
