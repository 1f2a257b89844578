"""Generative adversarial networks: the tutorial's MLP GAN, DCGAN, conditional GAN, WGAN-GP, hinge + SN.

A generator G maps noise z ~ N(0, I) to an image; a discriminator (critic) D maps
an image to one real number, a logit. They are trained in alternation
(Goodfellow et al. 2014): ``d_steps`` updates of D on real images and
``G(z).detach()``, then one update of G through D. With ``r = D(x)`` and
``f = D(G(z))`` as logits, the losses (``loss`` in the config) are

==========  ===============================================  ==========================
loss        discriminator minimises                          generator minimises
==========  ===============================================  ==========================
ns          -log s(r) - log(1 - s(f))                        -log s(f)  (non-saturating)
minimax     -log s(r) - log(1 - s(f))                        log(1 - s(f))  (the paper's game)
hinge       max(0, 1 - r) + max(0, 1 + f)                    -f  (Lim & Ye 2017; Miyato 2018)
lsgan       (r - 1)^2 / 2 + f^2 / 2                          (f - 1)^2 / 2  (Mao et al. 2017)
wgan-gp     f - r + lambda * (|grad D(x_hat)| - 1)^2         -f  (Gulrajani et al. 2017)
==========  ===============================================  ==========================

each a mean over the batch; s is the sigmoid. ``-log s(t) = softplus(-t)`` and
``-log(1 - s(t)) = softplus(t)``, so the cross-entropy losses are computed from
logits without ever forming s(t), which saturates to 0 or 1 in float32.

Images: the data arrive in [0, 1]; G ends in tanh and D sees images in [-1, 1]
(``x * 2 - 1``), the DCGAN convention; :meth:`GAN.sample` maps back to [0, 1].

Learning rates: ``TrainSettings.lr`` (the ``train.lr`` of the run) is the
*generator's*; the discriminator's is ``lr * d_lr_mult`` (``d_lr_mult = 4`` with
lr 1e-4 is the two time-scale update rule, Heusel et al. 2017, as in SAGAN).

Watching for mode collapse: a fixed batch of 64 latent vectors (a buffer, so it
travels with the checkpoint) is decoded at every progress step into
``progress/step-XXXXXX.png``; its *diversity* is the mean pairwise L2 distance
between those images divided by the same figure on real images. A collapsed
generator, every z giving nearly the same picture, scores near 0; real data
scores 1. Each progress step also appends to ``progress/diversity.jsonl``; at
the end, ``progress.png`` (the first row of up to 12 grids, one row per step)
and ``diversity.png`` are drawn from those files, so a resumed run's pictures
cover its whole history.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..errors import ConfigError
from .base import GenerativeModel, Preset, StepContext, TrainSettings, adam, optimize, require

LOSSES = ("ns", "minimax", "hinge", "lsgan", "wgan-gp")
N_FIXED = 64  # latent vectors in the progress batch: an 8 x 8 grid
FIXED_Z_SEED = 1234  # the progress batch is the same for every run of a config
STRIP_COLUMNS = 8  # fixed-z images per row of progress.png (the first row of each grid)
STRIP_ROWS = 12  # at most this many progress steps in progress.png, evenly chosen


@dataclass
class GANConfig:
    arch: str = "dcgan"  # "mlp" (the tutorial's dense G and D) or "dcgan" (strided (transposed) convs)
    latent_dim: int = 100  # size of z; 100 as in Goodfellow et al. and DCGAN
    g_hidden: tuple = (256, 512, 1024)  # MLP generator widths (the tutorial's)
    d_hidden: tuple = (512, 256)  # MLP discriminator widths (the tutorial's)
    width: int = 64  # DCGAN base channels (ngf = ndf = 64 in Radford et al.); doubled per resolution halving
    loss: str = "ns"  # "ns" | "minimax" | "hinge" | "lsgan" | "wgan-gp" (see the module docstring)
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan-gp only); 10 in Gulrajani et al.
    d_steps: int = 1  # discriminator updates per generator update (5 for WGAN-GP), fresh z for each
    batchnorm: bool = True  # BN in G's hidden layers and D's (not D's first, DCGAN); never in D with wgan-gp or SN
    spectral_norm: bool = False  # spectral normalisation of every D layer (Miyato et al. 2018)
    minibatch_std: bool = False  # append the mean std over groups of 4 samples as a D feature (Karras et al. 2018)
    init: str = "dcgan"  # "dcgan": weights ~ N(0, 0.02), BN scale ~ N(1, 0.02); "default": PyTorch's
    conditional: bool = False  # labels: embedding concatenated to z in G, projection in D (Miyato & Koyama 2018)
    num_classes: int = 10
    label_embed_dim: int = 16  # size of G's label embedding (conditional only)
    ema_decay: float = 0.0  # EMA of G's weights for sampling (e.g. 0.999); 0 = off, sample from G itself
    betas: tuple = (0.5, 0.999)  # Adam betas for both nets; beta1 = 0.5 is DCGAN's, (0, 0.9) WGAN-GP's
    d_lr_mult: float = 1.0  # D's lr = train.lr * d_lr_mult (train.lr is G's); 4 with lr 1e-4 = TTUR
    collapse_threshold: float = 0.25  # diversity below this (real data = 1) is reported as mode collapse
    image_shape: tuple = (1, 28, 28)  # (C, H, W); DCGAN supports 28x28 (7-14-28) and 32x32 (4-8-16-32)

    def validate(self) -> None:
        require(self.arch in ("mlp", "dcgan"), f"model.arch must be 'mlp' or 'dcgan', got {self.arch!r}")
        require(isinstance(self.latent_dim, int) and self.latent_dim >= 1,
                f"model.latent_dim must be >= 1, got {self.latent_dim}")
        for name in ("g_hidden", "d_hidden"):
            widths = getattr(self, name)
            require(len(widths) >= 1 and all(isinstance(h, int) and h >= 1 for h in widths),
                    f"model.{name} must be a non-empty list of positive widths, got {list(widths)}")
        require(isinstance(self.width, int) and self.width >= 1, f"model.width must be >= 1, got {self.width}")
        require(self.loss in LOSSES, f"model.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        require(math.isfinite(self.gp_weight) and self.gp_weight >= 0,
                f"model.gp_weight must be >= 0, got {self.gp_weight}")
        require(isinstance(self.d_steps, int) and self.d_steps >= 1, f"model.d_steps must be >= 1, got {self.d_steps}")
        require(self.init in ("dcgan", "default"), f"model.init must be 'dcgan' or 'default', got {self.init!r}")
        require(self.num_classes >= 2, "model.num_classes must be >= 2")
        require(self.label_embed_dim >= 1, "model.label_embed_dim must be >= 1")
        require(0.0 <= self.ema_decay < 1.0,
                f"model.ema_decay must be in [0, 1) (0 = off; 0.999 is typical), got {self.ema_decay}")
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                f"model.betas must be two numbers in [0, 1), got {list(self.betas)}")
        require(math.isfinite(self.d_lr_mult) and self.d_lr_mult > 0,
                f"model.d_lr_mult must be > 0, got {self.d_lr_mult}")
        require(0.0 <= self.collapse_threshold < 1.0, "model.collapse_threshold must be in [0, 1)")
        require(len(self.image_shape) == 3 and all(isinstance(s, int) and s >= 1 for s in self.image_shape),
                f"model.image_shape must be (C, H, W), got {list(self.image_shape)}")
        if self.arch == "dcgan":
            _, h, w = self.image_shape
            require(h == w and h in (28, 32),
                    f"DCGAN supports 28x28 and 32x32 images, got {h}x{w}; use arch='mlp' for other sizes")

    @property
    def d_batchnorm(self) -> bool:
        """BN in D: the gradient penalty is per sample (batch statistics would couple the
        samples, Gulrajani et al. 2017 sec. 4) and SN already controls D's scale."""
        return self.batchnorm and self.loss != "wgan-gp" and not self.spectral_norm


# -- losses (pure functions of the logits) --------------------------------------------
def d_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """Discriminator loss from logits D(x) (B,) and D(G(z)) (B,), without the gradient penalty."""
    if kind in ("ns", "minimax"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()  # -log s(r) - log(1 - s(f))
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_loss(fake: Tensor, kind: str) -> Tensor:
    """Generator loss from logits D(G(z)) (B,)."""
    if kind == "ns":
        return F.softplus(-fake).mean()  # -log s(f)
    if kind == "minimax":
        return -F.softplus(fake).mean()  # log(1 - s(f)): saturates when D rejects G's samples
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).pow(2).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, eps: Tensor,
                     y: Tensor | None = None) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] with x_hat = eps * real + (1 - eps) * fake (Gulrajani et al. 2017).

    ``eps`` (B,) ~ U[0, 1], one per sample. The result is differentiable in D's
    weights (``create_graph=True``), so it can be added to the critic's loss.
    """
    e = eps.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = (e * real.detach() + (1.0 - e) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, y)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).pow(2).sum(1).add(1e-12).sqrt()  # the eps keeps the sqrt's gradient finite at 0
    return (norm - 1.0).pow(2).mean()


# -- networks ------------------------------------------------------------------------------
class MinibatchStd(nn.Module):
    """Karras et al. (2018) sec. 3: append the average feature std of a group of samples as one more feature.

    A collapsed generator's batch has near-zero std, which D can then see. Groups
    are ``group_size`` consecutive samples (the whole batch when it does not
    divide), so a batch split across processes in multiples of 4 gives the same
    result as one process.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, h: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C+1, H, W); (B, F) -> (B, F+1)
        b = h.shape[0]
        g = self.group_size if b % self.group_size == 0 else b
        grouped = h.float().reshape(b // g, g, -1)  # (B/g, g, features)
        std = grouped.var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=1)  # (B/g,)
        std = std.repeat_interleave(g).to(h.dtype)  # (B,)
        extra = std.view(b, 1, *([1] * (h.dim() - 2))).expand(b, 1, *h.shape[2:])
        return torch.cat([h, extra], dim=1)


def _dcgan_sizes(image_shape: tuple) -> tuple[int, int]:
    """(start resolution, number of x2 upsamplings): 28 = 7 * 2^2, 32 = 4 * 2^3."""
    h = image_shape[1]
    return (7, 2) if h == 28 else (4, 3)


class Generator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        self.image_shape = (c, h, w)
        cond = cfg.label_embed_dim if cfg.conditional else 0
        self.embed = nn.Embedding(cfg.num_classes, cfg.label_embed_dim) if cfg.conditional else None
        d_in = cfg.latent_dim + cond
        layers: list[nn.Module] = []
        if cfg.arch == "mlp":
            widths = [d_in, *cfg.g_hidden]
            for a, b in zip(widths[:-1], widths[1:]):
                layers.append(nn.Linear(a, b))
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.LeakyReLU(0.2))
            layers += [nn.Linear(widths[-1], c * h * w), nn.Unflatten(1, (c, h, w))]
        else:
            start, n_up = _dcgan_sizes(cfg.image_shape)
            chans = [cfg.width * 2 ** i for i in reversed(range(n_up))]  # 28: [2w, w]; 32: [4w, 2w, w]
            layers.append(nn.Unflatten(1, (d_in, 1, 1)))
            # a (start x start) transposed conv on a 1x1 input is DCGAN's "project and reshape"
            layers.append(nn.ConvTranspose2d(d_in, chans[0], start, 1, 0, bias=not cfg.batchnorm))
            for a, b in zip(chans, [*chans[1:], c]):
                if cfg.batchnorm:
                    layers.append(nn.BatchNorm2d(a))
                layers.append(nn.ReLU())
                layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1, bias=(b == c) or not cfg.batchnorm))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)  # (B, latent_dim + label_embed_dim)
        return self.net(z)


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] [+ labels (B,)] -> logits (B,).

    ``features`` gives phi(x) (B, F); the logit is ``head(phi) + <embed(y), phi>``,
    the projection discriminator of Miyato & Koyama (2018) when conditional.
    """

    def __init__(self, cfg: GANConfig):
        super().__init__()
        c, h, w = cfg.image_shape
        bn = cfg.d_batchnorm
        layers: list[nn.Module] = []
        if cfg.arch == "mlp":
            layers.append(nn.Flatten())
            widths = [c * h * w, *cfg.d_hidden]
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(nn.Linear(a, b))
                if bn and i > 0:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.LeakyReLU(0.2))
            if cfg.minibatch_std:
                layers.append(MinibatchStd())
            n_feat = widths[-1] + int(cfg.minibatch_std)
        else:
            start, n_down = _dcgan_sizes(cfg.image_shape)
            chans = [c, *(cfg.width * 2 ** i for i in range(n_down))]  # 28: [c, w, 2w]; 32: [c, w, 2w, 4w]
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
                layers.append(nn.Conv2d(a, b, 4, 2, 1, bias=not (bn and i > 0)))
                if bn and i > 0:
                    layers.append(nn.BatchNorm2d(b))
                layers.append(nn.LeakyReLU(0.2))
            if cfg.minibatch_std:
                layers.append(MinibatchStd())
            layers.append(nn.Flatten())
            n_feat = (chans[-1] + int(cfg.minibatch_std)) * start * start
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(n_feat, 1)
        self.embed = nn.Embedding(cfg.num_classes, n_feat) if cfg.conditional else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        phi = self.features(x)  # (B, F)
        out = self.head(phi).squeeze(1)  # (B,)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.embed(y) * phi).sum(1)
        return out


def _init_dcgan(module: nn.Module) -> None:
    """Radford et al. (2015): all weights ~ N(0, 0.02); BN scale ~ N(1, 0.02); biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _apply_spectral_norm(module: nn.Module) -> None:
    """W -> W / sigma(W) on every weight layer, sigma by one power iteration per training forward."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            _spectral_norm(m)


# -- the model ----------------------------------------------------------------------------------
class GAN(GenerativeModel):
    family = "gan"
    config_class = GANConfig
    default_sample_every = 500

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        if config.init == "dcgan":
            _init_dcgan(self.generator)
            _init_dcgan(self.discriminator)
        elif config.conditional:
            nn.init.normal_(self.discriminator.embed.weight, 0.0, 0.02)  # N(0, 1) would swamp the head
        if config.spectral_norm:
            _apply_spectral_norm(self.discriminator)
        # a non-trainable copy, outside networks() and the optimisers; updated after each G step
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if config.ema_decay > 0 else None
        z = torch.randn(N_FIXED, config.latent_dim, generator=torch.Generator().manual_seed(FIXED_Z_SEED))
        self.register_buffer("fixed_z", z)  # (64, latent_dim): the same progress batch at every step
        self.register_buffer("real_diversity", torch.zeros(()))  # mean pairwise L2 of real images; 0 = unknown
        self._warnings: list[str] = []

    # -- GenerativeModel interface --------------------------------------------------------
    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.arch == "dcgan" else torch.contiguous_format

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def configure_optimizers(self, settings: TrainSettings) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(self.config.betas)
        return {
            "generator": adam(self.generator.parameters(), lr=settings.lr, betas=betas),
            "discriminator": adam(self.discriminator.parameters(),
                                  lr=settings.lr * self.config.d_lr_mult, betas=betas),
        }

    def train_step(self, nets: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
                   x: Tensor, y: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        cfg = self.config
        if tuple(x.shape[1:]) != tuple(cfg.image_shape):
            raise ConfigError(f"GAN configured for images {tuple(cfg.image_shape)} but the data are "
                              f"{tuple(x.shape[1:])}; set model.image_shape to match")
        G, D = nets["generator"], nets["discriminator"]
        b, dev = x.shape[0], x.device
        real = x * 2.0 - 1.0  # (B, C, H, W) in [-1, 1], G's range
        y_real = y if cfg.conditional else None
        d_params = list(self.discriminator.parameters())
        g_params = list(self.generator.parameters())
        extra: dict[str, Tensor] = {}
        applied = torch.ones(())  # on the host, as optimize() returns it: no device sync

        # 1) discriminator: d_steps updates on the same real batch, fresh z (and fake labels) each time
        for i in range(cfg.d_steps):
            z = ctx.noise.randn(b, cfg.latent_dim, device=dev)
            y_fake = ctx.noise.randint(cfg.num_classes, b, device=dev) if cfg.conditional else None
            last = i == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # the last fake batch is reused, with its graph, for G
                fake = G(z, y_fake)
            r, f = D(real, y_real), D(fake.detach(), y_fake)
            loss_d = d_loss(r, f, cfg.loss)
            if cfg.loss == "wgan-gp":
                eps = ctx.noise.rand(b, device=dev)
                gp = gradient_penalty(D, real, fake, eps, y_real)
                loss_d = loss_d + cfg.gp_weight * gp
                extra["gp"] = gp.detach()
            applied = applied * optimize(loss_d, optimizers["discriminator"], d_params, ctx.settings, ctx.step)

        # 2) generator: through the freshly updated D, on the last D step's fake batch
        f_g = D(fake, y_fake)
        loss_g = g_loss(f_g, cfg.loss)
        applied = applied * optimize(loss_g, optimizers["generator"], g_params, ctx.settings, ctx.step)
        self._update_ema(ctx.step)

        # D(x), D(G(z)) of the last D step: probabilities for the cross-entropy losses, raw scores otherwise
        squash = torch.sigmoid if cfg.loss in ("ns", "minimax") else (lambda t: t)
        # loss_d first: the trainer's per-step finiteness check reads "loss" or else the first entry
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_real": squash(r.detach()).mean(),
                "d_fake": squash(f.detach()).mean(), **extra, "applied": applied}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        """ema <- d * ema + (1 - d) * G, with d = min(ema_decay, (1 + step) / (10 + step)).

        The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) keeps
        the EMA from dragging the random initial weights along for thousands of
        steps. BN running statistics are copied, not averaged.
        """
        if self.generator_ema is None:
            return
        decay = min(self.config.ema_decay, (1.0 + step) / (10.0 + step))
        for pe, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            pe.lerp_(p.detach(), 1.0 - decay)
        for be, bsrc in zip(self.generator_ema.buffers(), self.generator.buffers()):
            be.copy_(bsrc)

    @property
    def sampling_generator(self) -> Generator:
        """The network that makes pictures: the EMA copy when enabled, else G."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def _decode(self, z: Tensor, y: Tensor | None) -> Tensor:
        """Images (B, C, H, W) in [0, 1] from the sampling network in eval mode (BN running stats)."""
        net = self.sampling_generator
        was_training = net.training
        net.eval()
        try:
            return ((net(z, y) + 1.0) / 2.0).clamp(0.0, 1.0)
        finally:
            net.train(was_training)

    def _labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        if not self.config.conditional:
            return None
        if labels is None:
            return (torch.arange(n) % self.config.num_classes).to(self.device)
        if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes:
            raise ConfigError(f"labels must be {n} class indices in [0, {self.config.num_classes}), "
                              f"got shape {tuple(labels.shape)}")
        return labels.to(self.device, torch.long)

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator,
                        device=generator.device if generator is not None else "cpu").to(self.device)
        return self._decode(z, self._labels(n, labels))

    # -- watching training ---------------------------------------------------------------------
    @torch.no_grad()
    def on_train_start(self, images: Tensor, labels: Tensor) -> None:
        self.real_diversity.fill_(mean_pairwise_distance(images[:1000]))
        self._warnings = []

    @torch.inference_mode()
    def fixed_batch(self) -> Tensor:
        """The 64 fixed latent vectors decoded, (64, C, H, W) in [0, 1]."""
        return self._decode(self.fixed_z, self._labels(N_FIXED, None))

    def diversity(self, images: Tensor) -> float:
        """Mean pairwise L2 of ``images`` over that of the real images (NaN before on_train_start)."""
        ref = float(self.real_diversity)
        return mean_pairwise_distance(images) / ref if ref > 0 else float("nan")

    def on_progress(self, step: int, run_dir) -> dict[str, float]:
        from ..sample import save_grid

        images = self.fixed_batch().cpu()
        out_dir = Path(run_dir) / "progress"
        out_dir.mkdir(parents=True, exist_ok=True)
        save_grid(images, out_dir / f"step-{step:06d}.png", nrow=STRIP_COLUMNS)
        raw = mean_pairwise_distance(images)
        logs = {"pairwise_l2": raw}
        div = self.diversity(images)
        if math.isfinite(div):
            collapsed = div < self.config.collapse_threshold
            logs |= {"diversity": div, "collapsed": float(collapsed)}
            if collapsed:
                self._warnings.append(f"step {step}: diversity {div:.3f} < {self.config.collapse_threshold}")
        # appended, so end_of_training can draw the whole history even after a resume
        with open(out_dir / "diversity.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **logs}) + "\n")
        return logs

    def end_of_training(self, run_dir, images: Tensor, labels: Tensor) -> dict:
        run_dir = Path(run_dir)
        if float(self.real_diversity) <= 0:
            with torch.no_grad():
                self.real_diversity.fill_(mean_pairwise_distance(images[:1000]))
        final = self.diversity(self.fixed_batch().cpu())
        collapsed = final < self.config.collapse_threshold
        summary: dict = {"diversity": final, "collapsed": collapsed, "warnings": []}
        history = _read_history(run_dir / "progress" / "diversity.jsonl")
        grids = sorted((run_dir / "progress").glob("step-*.png"))
        if grids:
            _save_strip(grids, run_dir / "progress.png", self.config.image_shape[1])
        if any("diversity" in h for h in history):
            _plot_diversity(history, run_dir / "diversity.png", self.config.collapse_threshold)
        if collapsed:
            summary["warnings"].append(
                f"mode collapse: the generator's diversity is {final:.3f} of the real data's "
                f"(threshold {self.config.collapse_threshold}); its samples look alike. "
                f"{self._collapse_remedies()}")
        elif self._warnings:
            summary["warnings"].append(
                f"diversity fell below {self.config.collapse_threshold} during training "
                f"({len(self._warnings)} progress step(s), first {self._warnings[0]}) but recovered.")
        return summary


    def _collapse_remedies(self) -> str:
        """What to try, leaving out what this config already does."""
        cfg = self.config
        tips = []
        if not cfg.batchnorm:
            tips.append("model.batchnorm=true")
        if not cfg.minibatch_std:
            tips.append("model.minibatch_std=true")
        if cfg.loss not in ("wgan-gp", "hinge"):
            tips.append("the wgan-gp or hinge-sn preset")
        tips.append("more training steps (diversity is low early in every run)")
        return "Try " + ", ".join(tips) + "."


# -- helpers: diversity and pictures -------------------------------------------------------------
def mean_pairwise_distance(images: Tensor) -> float:
    """Mean L2 distance over all pairs of distinct images (N >= 2), pixels as given."""
    flat = images.detach().flatten(1).double().cpu()
    if flat.shape[0] < 2:
        return 0.0
    return float(torch.pdist(flat).mean())


def _save_strip(grids: list[Path], path: Path, h: int, padding: int = 2) -> None:
    """progress.png: the first row of up to STRIP_ROWS progress grids, evenly chosen, labelled by step."""
    from PIL import Image, ImageDraw

    idx = sorted(set(np.linspace(0, len(grids) - 1, min(len(grids), STRIP_ROWS)).round().astype(int)))
    rows = [Image.open(grids[i]).convert("L") for i in idx]
    label_w, row_h = 64, h + padding
    width = max(r.width for r in rows)
    strip = Image.new("L", (label_w + width, padding + len(rows) * row_h), 0)
    draw = ImageDraw.Draw(strip)
    for j, (i, grid) in enumerate(zip(idx, rows)):
        strip.paste(grid.crop((0, padding, grid.width, padding + row_h)), (label_w, padding + j * row_h))
        draw.text((2, padding + j * row_h + h // 3), str(int(grids[i].stem.split("-")[1])), fill=255)
    strip.save(path)


def _read_history(path: Path) -> list[dict]:
    """Progress records by step; the last record wins when a resumed run repeated a step."""
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def _plot_diversity(history: list[dict], path: Path, threshold: float) -> None:
    """diversity.png: diversity against step, the collapse threshold dashed (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [(h["step"], h["diversity"]) for h in history if "diversity" in h]
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label="generated / real")
    ax.axhline(threshold, color="red", ls="--", lw=1, label=f"collapse threshold {threshold}")
    ax.axhline(1.0, color="gray", ls=":", lw=1, label="real data")
    ax.set_xlabel("step")
    ax.set_ylabel("mean pairwise L2 (relative)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _preset(name: str, description: str, train: dict, **model) -> Preset:
    return Preset(name, description, GANConfig(**model), train)


PRESETS = {
    "seed": _preset(
        "seed", "the tutorial's GAN: MLP G 100-256-512-1024-784 and D 784-512-256-1, LeakyReLU 0.2, "
                "non-saturating loss, no batch norm, Adam 2e-4 (0.5, 0.999)",
        dict(epochs=30, batch_size=64, lr=2e-4),
        arch="mlp", latent_dim=100, batchnorm=False, init="default", loss="ns"),
    "dcgan": _preset(
        "dcgan", "DCGAN (Radford et al. 2015): strided (transposed) convs, batch norm, N(0, 0.02) init, "
                 "non-saturating loss, Adam 2e-4 (0.5, 0.999), EMA generator for sampling",
        dict(epochs=10, batch_size=128, lr=2e-4),
        arch="dcgan", loss="ns", batchnorm=True, ema_decay=0.999),
    "cgan": _preset(
        "cgan", "conditional DCGAN: label embedding into G, projection discriminator (Miyato & Koyama 2018); "
                "sample with --label",
        dict(epochs=10, batch_size=128, lr=2e-4),
        arch="dcgan", loss="ns", batchnorm=True, conditional=True, ema_decay=0.999),
    "wgan-gp": _preset(
        "wgan-gp", "WGAN-GP (Gulrajani et al. 2017): DCGAN nets, no BN in the critic, gradient penalty 10, "
                   "5 critic steps per G step, Adam 1e-4 (0.0, 0.9)",
        dict(epochs=20, batch_size=64, lr=1e-4),
        arch="dcgan", loss="wgan-gp", gp_weight=10.0, d_steps=5, batchnorm=True, betas=(0.0, 0.9),
        ema_decay=0.999),
    "hinge-sn": _preset(
        "hinge-sn", "hinge loss with spectral norm in D (Miyato et al. 2018), TTUR: G 1e-4, D 4e-4, "
                    "Adam (0.0, 0.9) as in SAGAN",
        dict(epochs=10, batch_size=128, lr=1e-4),
        arch="dcgan", loss="hinge", spectral_norm=True, batchnorm=True, d_lr_mult=4.0, betas=(0.0, 0.9),
        ema_decay=0.999),
}

MODEL = GAN
