"""The VAE family's settings: one typed dataclass, validated with a message per field."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...config import require

LIKELIHOODS = ("mse", "bernoulli", "gaussian")
ACTIVATIONS = ("relu", "silu")
PRIORS = ("normal", "vamp")


@dataclass
class VAEConfig:
    arch: str = "mlp"  # "mlp" (dense layers) or "conv" (stride-2 convs / transposed convs)
    # "same" as arch, or "mlp" / "conv" for the encoder alone (e.g. a dense encoder under a conv decoder)
    encoder_arch: str = "same"
    activation: str = "relu"  # of the hidden layers (not the IAF steps): "relu", or "silu" (x * sigmoid(x), smooth)
    hidden: tuple = (400,)  # widths of the MLP's hidden layers (encoder; the decoder mirrors them)
    conv_channels: tuple = (32, 64)  # channels of the conv encoder's stride-2 layers
    conv_dense: tuple = ()  # conv arch: dense layers between the conv features and z (decoder mirrors them)
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # "bernoulli" | "mse" | "gaussian" (learned scale)
    recon_reduction: str = "sum"  # "sum" over pixels (the ELBO) or "mean" (the tutorial listing)
    beta: float = 1.0  # weight of the KL term (beta-VAE when > 1)
    kl_warmup_steps: int = 0  # beta rises linearly from 0 over this many steps
    iw_samples: int = 1  # draws of z per image in the loss: 1 = the ELBO, k > 1 = the IWAE bound L_k
    prior: str = "normal"  # "normal": N(0, I); "vamp": VampPrior, a mixture over learned pseudo-inputs
    pseudo_inputs: int = 500  # K, the VampPrior's components (its paper's choice); prior "vamp" only
    top_latent_dim: int = 0  # > 0: a second stochastic layer z2 of this size above z (HVAE); the prior is then p(z2)
    top_hidden: int = 300  # width of the two-layer model's dense nets q(z|x, z2) and p(z|z2)
    flow_steps: int = 0  # > 0: q(z|x) is a diagonal Gaussian pushed through this many IAF steps (Kingma et al. 2016)
    flow_hidden: int = 256  # width of each IAF step's two masked hidden layers
    binarize: bool = False  # dynamic binarisation: x ~ Bernoulli(pixel intensity) at each step
    conditional: bool = False  # labels (one-hot) into encoder and decoder
    num_classes: int = 10
    image_shape: tuple = (1, 28, 28)

    def validate(self) -> None:
        require(self.arch in ("mlp", "conv"), f"model.arch must be 'mlp' or 'conv', got {self.arch!r}")
        require(
            self.activation in ACTIVATIONS,
            f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}",
        )
        require(
            self.encoder_arch in ("same", "mlp", "conv"),
            f"model.encoder_arch must be 'same', 'mlp' or 'conv', got {self.encoder_arch!r}",
        )
        require(
            len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            f"model.hidden must be a non-empty list of positive widths, got {list(self.hidden)}",
        )
        require(
            len(self.conv_channels) >= 1 and all(c >= 1 for c in self.conv_channels),
            "model.conv_channels must be positive",
        )
        require(
            all(isinstance(h, int) and h >= 1 for h in self.conv_dense),
            f"model.conv_dense must be a list of positive widths, got {list(self.conv_dense)}",
        )
        require(
            isinstance(self.latent_dim, int) and self.latent_dim >= 1,
            f"model.latent_dim must be >= 1, got {self.latent_dim}",
        )
        require(
            self.likelihood in LIKELIHOODS,
            f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}",
        )
        require(
            self.recon_reduction in ("sum", "mean"),
            f"model.recon_reduction must be 'sum' or 'mean', got {self.recon_reduction!r}",
        )
        require(math.isfinite(self.beta) and self.beta >= 0, f"model.beta must be >= 0, got {self.beta}")
        require(self.kl_warmup_steps >= 0, "model.kl_warmup_steps must be >= 0")
        require(
            isinstance(self.iw_samples, int) and self.iw_samples >= 1,
            f"model.iw_samples must be an integer >= 1, got {self.iw_samples}",
        )
        require(
            self.iw_samples == 1 or (self.beta == 1 and self.kl_warmup_steps == 0 and self.recon_reduction == "sum"),
            "model.iw_samples > 1 trains the IWAE bound on log p(x), which has no KL weight: it needs "
            "beta = 1, kl_warmup_steps = 0 and recon_reduction = sum",
        )
        require(self.prior in PRIORS, f"model.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        require(
            isinstance(self.pseudo_inputs, int) and self.pseudo_inputs >= 1,
            f"model.pseudo_inputs must be an integer >= 1, got {self.pseudo_inputs}",
        )
        require(
            self.prior == "normal" or not self.conditional,
            "model.prior = vamp needs unconditional pseudo-inputs: it cannot be combined with conditional = true",
        )
        require(
            isinstance(self.top_latent_dim, int) and self.top_latent_dim >= 0,
            f"model.top_latent_dim must be an integer >= 0 (0 = one stochastic layer), got {self.top_latent_dim}",
        )
        require(
            isinstance(self.top_hidden, int) and self.top_hidden >= 1,
            f"model.top_hidden must be an integer >= 1, got {self.top_hidden}",
        )
        require(
            isinstance(self.flow_steps, int) and self.flow_steps >= 0,
            f"model.flow_steps must be an integer >= 0 (0 = a diagonal Gaussian posterior), got {self.flow_steps}",
        )
        require(
            isinstance(self.flow_hidden, int) and self.flow_hidden >= 1,
            f"model.flow_hidden must be an integer >= 1, got {self.flow_hidden}",
        )
        # bounds on structure: a stranger's config.json must not make even the dry build endless
        require(self.flow_steps <= 64, f"model.flow_steps must be at most 64, got {self.flow_steps}")
        require(
            len(self.hidden) <= 64 and len(self.conv_channels) <= 16 and len(self.conv_dense) <= 64,
            "model.hidden and model.conv_dense take at most 64 layers, model.conv_channels at most 16",
        )
        require(
            self.flow_steps == 0 or self.top_latent_dim == 0,
            "model.flow_steps > 0 (an IAF posterior) cannot be combined with top_latent_dim > 0 (two layers): "
            "set model.flow_steps=0 for a two-layer model (the vamp preset has 2)",
        )
        require(self.num_classes >= 2, "model.num_classes must be >= 2")
        require(
            len(self.image_shape) == 3 and all(s >= 1 for s in self.image_shape), "model.image_shape must be (C, H, W)"
        )
        if "conv" in (self.arch, self.encoder_arch):
            h, step = self.image_shape[1], 2 ** len(self.conv_channels)
            require(
                h % step == 0,
                f"conv VAE: image height {h} must be divisible by 2^{len(self.conv_channels)} "
                f"(len(model.conv_channels)), e.g. {', '.join(str(step * k) for k in (7, 8, 16))}",
            )
