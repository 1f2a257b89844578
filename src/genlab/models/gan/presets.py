"""Named GAN configurations: ``genlab train gan --preset NAME``."""

from __future__ import annotations

from ..base import Preset
from .config import GANConfig


def _preset(name: str, description: str, train: dict, **model) -> Preset:
    return Preset(name, description, GANConfig(**model), train)


PRESETS = {
    "seed": _preset(
        "seed",
        "the tutorial's GAN: MLP G 100-256-512-1024-784 and D 784-512-256-1, LeakyReLU 0.2, "
        "non-saturating loss, no batch norm, Adam 2e-4 (0.5, 0.999)",
        dict(epochs=30, batch_size=64, lr=2e-4),
        arch="mlp",
        latent_dim=100,
        batchnorm=False,
        init="default",
        loss="ns",
    ),
    "dcgan": _preset(
        "dcgan",
        "DCGAN (Radford et al. 2015): strided (transposed) convs, batch norm, N(0, 0.02) init, "
        "non-saturating loss, Adam 2e-4 (0.5, 0.999), EMA generator for sampling",
        dict(epochs=10, batch_size=128, lr=2e-4),
        arch="dcgan",
        loss="ns",
        batchnorm=True,
        ema_decay=0.999,
    ),
    "fast": _preset(
        "fast",
        "DCGAN for quality per CPU-minute: half width (32 base channels), batch 64, Adam 8e-4 (0.0, 0.99), "
        "lazy R1 0.1, EMA generator, bf16 where the hardware has it (chosen on val: benchmarks/README.md)",
        dict(epochs=60, batch_size=64, lr=8e-4, precision="auto"),
        arch="dcgan",
        width=32,
        loss="ns",
        batchnorm=True,
        betas=(0.0, 0.99),
        r1_gamma=0.1,
        r1_every=16,
        ema_decay=0.999,
    ),
    "cgan": _preset(
        "cgan",
        "conditional DCGAN: label embedding into G, projection discriminator (Miyato & Koyama 2018); "
        "sample with --label",
        dict(epochs=10, batch_size=128, lr=2e-4),
        arch="dcgan",
        loss="ns",
        batchnorm=True,
        conditional=True,
        ema_decay=0.999,
    ),
    "wgan-gp": _preset(
        "wgan-gp",
        "WGAN-GP (Gulrajani et al. 2017): DCGAN nets, no BN in the critic, gradient penalty 10, "
        "5 critic steps per G step, Adam 1e-4 (0.0, 0.9)",
        dict(epochs=20, batch_size=64, lr=1e-4),
        arch="dcgan",
        loss="wgan-gp",
        gp_weight=10.0,
        d_steps=5,
        batchnorm=True,
        betas=(0.0, 0.9),
        ema_decay=0.999,
    ),
    "hinge-sn": _preset(
        "hinge-sn",
        "hinge loss with spectral norm in D (Miyato et al. 2018), TTUR: G 1e-4, D 4e-4, Adam (0.0, 0.9) as in SAGAN",
        dict(epochs=10, batch_size=128, lr=1e-4),
        arch="dcgan",
        loss="hinge",
        spectral_norm=True,
        batchnorm=True,
        d_lr_mult=4.0,
        betas=(0.0, 0.9),
        ema_decay=0.999,
    ),
}

# Command-line flags of `genlab train gan` that set a model field: flag -> (field, type, help).
CLI_FLAGS = {
    "--latent-dim": ("latent_dim", int, "size of z"),
    "--arch": ("arch", str, "mlp | dcgan"),
    "--loss": ("loss", str, "ns | minimax | hinge | lsgan | wgan-gp"),
    "--d-steps": ("d_steps", int, "discriminator steps per generator step"),
    "--ema-decay": ("ema_decay", float, "EMA of the generator's weights for sampling (0 = off)"),
}
