"""Generative adversarial networks: the tutorial's MLP GAN, DCGAN, conditional GAN, WGAN-GP, hinge + SN.

A generator G maps noise z ~ N(0, I) to an image; a discriminator (critic) D maps
an image to one real number, a logit. They are trained in alternation
(Goodfellow et al. 2014): ``d_steps`` updates of D on real images and
``G(z).detach()``, then one update of G through D. The losses (``loss`` in the config:
ns, minimax, hinge, lsgan, wgan-gp) are pure functions of D's logits, tabled with their papers
in :mod:`genlab.models.gan.losses`.

Images: the data arrive in [0, 1]; G ends in tanh and D sees images in [-1, 1]
(``x * 2 - 1``), the DCGAN convention; :meth:`GAN.sample` maps back to [0, 1].

Learning rates: ``TrainSettings.lr`` (the ``train.lr`` of the run) is the
*generator's*; the discriminator's is ``lr * d_lr_mult`` (``d_lr_mult = 4`` with
lr 1e-4 is the two time-scale update rule, Heusel et al. 2017, as in SAGAN).

Sampling uses an exponential moving average of G's weights when ``ema_decay > 0``
(:class:`~genlab.models.base.EMAModel`: the trainer's EMA callback updates it after every
step). The GAN is a :class:`~genlab.models.base.LatentModel`: ``decode(z)`` is the sampling
network's image, so interpolation and traversal work as for a VAE.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..base import (
    GenerativeModel,
    LogLabel,
    StepContext,
    StepOutput,
    TrainSettings,
    adam,
    optimize,
    require_image_shape,
)
from .augment import diff_augment, parse_policies
from .config import GANConfig
from .losses import d_loss, g_loss, gradient_penalty, r1_penalty
from .networks import Discriminator, Generator, _apply_spectral_norm, _init_dcgan, keep_activations_channels_last


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """A forward pass inside records no gradient path to ``module``'s weights (inputs still get theirs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class GAN(GenerativeModel):
    family = "gan"
    config_class = GANConfig
    default_sample_every = 500
    # genlab 0.1's GAN kept its progress batch and the real data's diversity as buffers; both now live
    # in the progress-grid callback, so run directories written then still load
    retired_state_keys = frozenset({"fixed_z", "real_diversity"})

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        if config.init == "dcgan":
            _init_dcgan(self.generator)
            _init_dcgan(self.discriminator)
        elif self.discriminator.embed is not None:  # conditional
            nn.init.normal_(self.discriminator.embed.weight, 0.0, 0.02)  # N(0, 1) would swamp the head
        if config.spectral_norm:
            _apply_spectral_norm(self.discriminator)
        if config.arch == "dcgan":
            keep_activations_channels_last(self.generator)
            keep_activations_channels_last(self.discriminator)
        self.augment_policies = parse_policies(config.augment)  # parsed once, not on every training step
        # a non-trainable copy, outside networks() and the optimisers; updated after each G step
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if config.ema_decay > 0 else None

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
            "discriminator": adam(self.discriminator.parameters(), lr=settings.lr * self.config.d_lr_mult, betas=betas),
        }

    def train_step(
        self,
        nets: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> StepOutput:
        cfg = self.config
        require_image_shape("GAN", cfg.image_shape, x)
        G, D = nets["generator"], nets["discriminator"]
        b, dev = x.shape[0], x.device
        real = x * 2.0 - 1.0  # (B, C, H, W) in [-1, 1], G's range
        y_real = y if cfg.conditional else None
        policies = self.augment_policies

        def see(images: Tensor) -> Tensor:  # what D looks at: DiffAugment's draws for this batch, else the images
            if not policies:
                return images
            return diff_augment(images, policies, lambda n, *shape: ctx.noise.rand(n, *shape, device=dev))

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
            lazy_r1 = cfg.r1_gamma > 0 and last and ctx.step % cfg.r1_every == 0
            real_in = real.detach().requires_grad_(True) if lazy_r1 else real
            r, f = D(see(real_in), y_real), D(see(fake.detach()), y_fake)
            loss_d = d_loss(r, f, cfg.loss)
            if lazy_r1:
                # not logged: a figure present on one step in k would be averaged over the wrong count
                loss_d = loss_d + (cfg.r1_gamma / 2 * cfg.r1_every) * r1_penalty(r, real_in)
            if cfg.loss == "wgan-gp":
                eps = ctx.noise.rand(b, device=dev)
                gp = gradient_penalty(D, real, fake, eps, y_real)
                loss_d = loss_d + cfg.gp_weight * gp
                extra["gp"] = gp.detach()
            applied = applied * optimize(loss_d, optimizers["discriminator"], d_params, ctx.settings, ctx.step)

        # 2) generator: through the freshly updated D, on the last D step's fake batch. D's weights get no
        # gradient here: the next D step would discard it, and skipping it saves a third of D's backward.
        # The bare D, not a torchrun wrapper: no D gradient to average across processes either.
        with frozen(self.discriminator):
            f_g = self.discriminator(see(fake), y_fake)
        loss_g = g_loss(f_g, cfg.loss)
        applied = applied * optimize(loss_g, optimizers["generator"], g_params, ctx.settings, ctx.step)

        # D(x), D(G(z)) of the last D step: probabilities for the cross-entropy losses, raw scores otherwise
        squash = torch.sigmoid if cfg.loss in ("ns", "minimax") else (lambda t: t)
        logs = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": squash(r.detach()).mean(),
            "d_fake": squash(f.detach()).mean(),
            **extra,
        }
        return StepOutput(loss=logs["loss_d"], logs=logs, applied=applied)

    def describe_logs(self) -> dict[str, LogLabel]:
        """The two players' losses for this config's ``loss`` (see :mod:`.losses`) and D's mean outputs."""
        kind = self.config.loss
        game = "\n(D and G play against each other: not a quality measure)"
        if kind in ("ns", "minimax"):
            g = "-log D(G(z))" if kind == "ns" else "log(1 - D(G(z)))"
            labels = {
                "loss_d": LogLabel(f"discriminator: BCE on real + on fake{game}", "nats/image (two terms)"),
                "loss_g": LogLabel(f"generator: {g}", "nats/image"),
                "d_real": LogLabel("D(x): D's P(real) for real images", "probability"),
                "d_fake": LogLabel("D(G(z)): D's P(real) for samples", "probability"),
            }
        else:
            d = {
                "hinge": "max(0, 1 - D(x)) + max(0, 1 + D(G(z)))",
                "lsgan": "(D(x) - 1)^2 / 2 + D(G(z))^2 / 2",
                "wgan-gp": "D(G(z)) - D(x) + lambda GP",
            }[kind]
            g = "(D(G(z)) - 1)^2 / 2" if kind == "lsgan" else "-D(G(z))"
            labels = {
                "loss_d": LogLabel(f"critic: {d}{game}", "critic score (no unit)"),
                "loss_g": LogLabel(f"generator: {g}", "critic score (no unit)"),
                "d_real": LogLabel("D(x): mean critic score, real images", "critic score"),
                "d_fake": LogLabel("D(G(z)): mean critic score, samples", "critic score"),
            }
        if kind == "wgan-gp":
            labels["gp"] = LogLabel("gradient penalty (|grad D(x_hat)| - 1)^2", "squared gradient norm")
        return labels

    # -- capabilities: EMA weights, a latent space ---------------------------------------------
    @property
    def ema_decay(self) -> float:
        return self.config.ema_decay

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [] if self.generator_ema is None else [(self.generator_ema, self.generator)]

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), (n, latent_dim), drawn on the generator's device and moved to the model's."""
        dev = generator.device if generator is not None else "cpu"
        return torch.randn(n, self.config.latent_dim, generator=generator, device=dev).to(self.device)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (B, C, H, W) in [0, 1] from the sampling network (the EMA copy when enabled)."""
        return self._decode(z, self.sampling_labels(z.shape[0], labels))

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

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.sample_latent(n, generator), labels)

    @property
    def collapse_threshold(self) -> float:  # type: ignore[override]
        return self.config.collapse_threshold

    def collapse_advice(self) -> str:
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
