"""Named VAE configurations: ``genlab train vae --preset NAME``."""

from __future__ import annotations

from ..base import Preset
from .config import VAEConfig


def _preset(name: str, description: str, train: dict, **model) -> Preset:
    return Preset(name, description, VAEConfig(**model), train)


PRESETS = {
    "seed": _preset(
        "seed",
        "the tutorial's VAE exactly: 784-64-2 MLP, MSE (mean over pixels) + KL, Adam, batch 16",
        dict(epochs=50, batch_size=16, lr=1e-3),
        arch="mlp",
        hidden=(64,),
        latent_dim=2,
        likelihood="mse",
        recon_reduction="mean",
    ),
    "seed-sum": _preset(
        "seed-sum",
        "the tutorial's VAE with the reconstruction summed over pixels (the correctly scaled ELBO)",
        dict(epochs=50, batch_size=16, lr=1e-3),
        arch="mlp",
        hidden=(64,),
        latent_dim=2,
        likelihood="mse",
        recon_reduction="sum",
    ),
    "mlp": _preset(
        "mlp",
        "pytorch/examples' VAE: 784-400-20 MLP, Bernoulli likelihood, Adam 1e-3, batch 128",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp",
        hidden=(400,),
        latent_dim=20,
        likelihood="bernoulli",
    ),
    "conv": _preset(
        "conv",
        "convolutional VAE (32-64 stride-2 convs, 32-d latent), Bernoulli likelihood",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="conv",
        conv_channels=(32, 64),
        latent_dim=32,
        likelihood="bernoulli",
    ),
    "vamp": _preset(
        "vamp",
        "conv VAE with a VampPrior (a mixture over 100 learned pseudo-images), SiLU, a 2-step IAF "
        "posterior (genlab's best NLL); lr 8e-3 (chosen on the 'val' split) with cosine decay, bf16 where the "
        "hardware has it",
        dict(epochs=10, batch_size=128, lr=8e-3, lr_schedule="cosine", precision="auto"),
        arch="conv",
        conv_channels=(32, 64),
        latent_dim=32,
        likelihood="bernoulli",
        prior="vamp",
        pseudo_inputs=100,
        activation="silu",
        flow_steps=2,
    ),
    "cvae": _preset(
        "cvae",
        "conditional MLP VAE: one-hot labels into encoder and decoder; sample with --label",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp",
        hidden=(400,),
        latent_dim=20,
        likelihood="bernoulli",
        conditional=True,
    ),
    "beta": _preset(
        "beta",
        "beta-VAE (beta = 4) on the mlp preset: stronger KL, smoother, more disentangled latents",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp",
        hidden=(400,),
        latent_dim=10,
        likelihood="bernoulli",
        beta=4.0,
    ),
}

# Command-line flags of `genlab train vae` that set a model field: flag -> (field, type, help).
CLI_FLAGS = {
    "--latent-dim": ("latent_dim", int, "size of z"),
    "--beta": ("beta", float, "KL weight: loss = recon + beta * KL"),
    "--recon-reduction": ("recon_reduction", str, "'sum' over pixels (the ELBO) or 'mean' (the tutorial listing)"),
    "--likelihood": ("likelihood", str, "decoder: bernoulli | mse | gaussian (learned scale)"),
    "--arch": ("arch", str, "mlp | conv"),
    "--kl-warmup-steps": ("kl_warmup_steps", int, "raise beta linearly from 0 over this many steps"),
}
