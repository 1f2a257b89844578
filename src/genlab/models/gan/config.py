"""The GAN family's settings: one typed dataclass, validated with a message per field."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...config import require
from ...errors import ConfigError
from .augment import parse_policies

LOSSES = ("ns", "minimax", "hinge", "lsgan", "wgan-gp")
DCGAN_SIZES = (28, 32, 64)  # 7 * 2^2 and 4 * 2^3, 4 * 2^4: DCGAN's x2 (transposed) convs from a 7x7 or 4x4 start


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
    augment: str = ""  # DiffAugment policies for D's inputs, e.g. "translation,cutout" (Zhao et al. 2020); "" = none
    r1_gamma: float = 0.0  # R1 penalty gamma/2 * |grad_x D(x)|^2 on real data (Mescheder et al. 2018); 0 = off
    r1_every: int = 16  # lazy R1 (Karras et al. 2020): every k-th D step, weighted by k
    collapse_threshold: float = 0.25  # diversity below this (real data = 1) is reported as mode collapse
    image_shape: tuple = (1, 28, 28)  # (C, H, W); DCGAN: 28x28 (7-14-28), 32x32 (4-8-16-32), 64x64 (4-...-64)

    def validate(self) -> None:
        require(self.arch in ("mlp", "dcgan"), f"model.arch must be 'mlp' or 'dcgan', got {self.arch!r}")
        require(
            isinstance(self.latent_dim, int) and self.latent_dim >= 1,
            f"model.latent_dim must be >= 1, got {self.latent_dim}",
        )
        for name in ("g_hidden", "d_hidden"):
            widths = getattr(self, name)
            require(
                1 <= len(widths) <= 64 and all(isinstance(h, int) and h >= 1 for h in widths),
                f"model.{name} must be a non-empty list of positive widths, got {list(widths)}",
            )
        require(isinstance(self.width, int) and self.width >= 1, f"model.width must be >= 1, got {self.width}")
        require(self.loss in LOSSES, f"model.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        require(
            math.isfinite(self.gp_weight) and self.gp_weight >= 0, f"model.gp_weight must be >= 0, got {self.gp_weight}"
        )
        require(
            isinstance(self.d_steps, int) and 1 <= self.d_steps <= 100,
            f"model.d_steps must be in 1..100, got {self.d_steps}",
        )
        require(self.init in ("dcgan", "default"), f"model.init must be 'dcgan' or 'default', got {self.init!r}")
        require(self.num_classes >= 2, "model.num_classes must be >= 2")
        require(self.label_embed_dim >= 1, "model.label_embed_dim must be >= 1")
        require(
            0.0 <= self.ema_decay < 1.0,
            f"model.ema_decay must be in [0, 1) (0 = off; 0.999 is typical), got {self.ema_decay}",
        )
        require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"model.betas must be two numbers in [0, 1), got {list(self.betas)}",
        )
        require(
            math.isfinite(self.d_lr_mult) and self.d_lr_mult > 0, f"model.d_lr_mult must be > 0, got {self.d_lr_mult}"
        )
        try:
            parse_policies(self.augment)
        except ValueError as e:
            raise ConfigError(f"model.augment: {e}") from e
        require(
            math.isfinite(self.r1_gamma) and self.r1_gamma >= 0, f"model.r1_gamma must be >= 0, got {self.r1_gamma}"
        )
        require(
            isinstance(self.r1_every, int) and 1 <= self.r1_every <= 10_000,
            f"model.r1_every must be in 1..10000, got {self.r1_every}",
        )
        require(0.0 <= self.collapse_threshold < 1.0, "model.collapse_threshold must be in [0, 1)")
        require(
            len(self.image_shape) == 3 and all(isinstance(s, int) and s >= 1 for s in self.image_shape),
            f"model.image_shape must be (C, H, W), got {list(self.image_shape)}",
        )
        if self.arch == "dcgan":
            _, h, w = self.image_shape
            require(
                h == w and h in DCGAN_SIZES,
                f"DCGAN supports 28x28, 32x32 and 64x64 images, got {h}x{w}; use arch='mlp' for other sizes",
            )

    @property
    def d_batchnorm(self) -> bool:
        """BN in D: the gradient penalty is per sample (batch statistics would couple the
        samples, Gulrajani et al. 2017 sec. 4) and SN already controls D's scale."""
        return self.batchnorm and self.loss != "wgan-gp" and not self.spectral_norm
