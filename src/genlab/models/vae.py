"""Variational autoencoders: the tutorial's MLP VAE, MLP/conv VAEs, beta-VAE, conditional VAE.

    loss = L_recon + beta * L_KL                     (the tutorial's total loss)
    L_KL = KL(q(z|x) || N(0, I)) = -1/2 sum_j (1 + log s_j^2 - m_j^2 - s_j^2)   (closed form)

``L_recon`` is the negative log-likelihood of the image under the decoder:

- ``bernoulli``: binary cross-entropy from logits, summed over pixels;
- ``mse`` with ``recon_reduction="sum"``: squared error summed over pixels, the
  Gaussian NLL with fixed variance 1/2 up to a constant (0.5*log(pi) per pixel);
- ``mse`` with ``recon_reduction="mean"``: the tutorial listing's Keras MSE, a
  *mean* over pixels. Its KL is a *sum* over latent dimensions, so the KL weighs
  784 times what it does in the ELBO and the posterior tends to collapse (every
  sample the same image). Equivalently, it is the ELBO of a Gaussian decoder with
  fixed variance 784/2 = 392 (:attr:`VAE.pixel_variance`). Kept because it is what the tutorial wrote;
  :func:`active_units` and the trainer's end-of-training check make it visible.
- ``gaussian``: a learned per-pixel log-scale, NLL summed over pixels.

The prior p(z) is N(0, I), or with ``prior="vamp"`` the VampPrior (Tomczak & Welling
2018): the mixture (1/K) sum_k q(z | u_k) of the encoder's posteriors at K learned
pseudo-images u_k. Its KL has no closed form, so the loss uses the single-draw estimate
log q(z|x) - log p(z), which the IWAE bound and ``genlab nll`` also use.

With ``top_latent_dim > 0`` the model has two stochastic layers (the HVAE of Tomczak &
Welling 2018): a top latent z2 with the prior above, and z1 below it,

    p(x, z1, z2) = p(x | z1, z2) p(z1 | z2) p(z2),     q(z1, z2 | x) = q(z1 | x, z2) q(z2 | x),

all conditionals diagonal Gaussians computed by small dense nets. The latent vector that the
tools see is z = (z1, z2); the loss and the IWAE bound use log p(x, z1, z2) - log q(z1, z2 | x).

Encoder and decoder are optimised jointly on this one loss (the ELBO), not in
alternation as the tutorial's prose describes: both terms depend on the
encoder, the reparameterisation makes the whole objective differentiable, and
alternating would follow a different, slower path to the same optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, Preset, StepContext, TrainSettings, adam, optimize, require

LIKELIHOODS = ("mse", "bernoulli", "gaussian")
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
PRIORS = ("normal", "vamp")
LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig:
    arch: str = "mlp"  # "mlp" (dense layers) or "conv" (stride-2 convs / transposed convs)
    encoder_arch: str = "same"  # "same" as arch, or "mlp" / "conv" for the encoder alone (e.g. a dense encoder under a conv decoder)
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
        require(self.activation in ACTIVATIONS,
                f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        require(self.encoder_arch in ("same", "mlp", "conv"),
                f"model.encoder_arch must be 'same', 'mlp' or 'conv', got {self.encoder_arch!r}")
        require(len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden),
                f"model.hidden must be a non-empty list of positive widths, got {list(self.hidden)}")
        require(len(self.conv_channels) >= 1 and all(c >= 1 for c in self.conv_channels),
                "model.conv_channels must be positive")
        require(all(isinstance(h, int) and h >= 1 for h in self.conv_dense),
                f"model.conv_dense must be a list of positive widths, got {list(self.conv_dense)}")
        require(isinstance(self.latent_dim, int) and self.latent_dim >= 1,
                f"model.latent_dim must be >= 1, got {self.latent_dim}")
        require(self.likelihood in LIKELIHOODS,
                f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        require(self.recon_reduction in ("sum", "mean"),
                f"model.recon_reduction must be 'sum' or 'mean', got {self.recon_reduction!r}")
        require(math.isfinite(self.beta) and self.beta >= 0, f"model.beta must be >= 0, got {self.beta}")
        require(self.kl_warmup_steps >= 0, "model.kl_warmup_steps must be >= 0")
        require(isinstance(self.iw_samples, int) and self.iw_samples >= 1,
                f"model.iw_samples must be an integer >= 1, got {self.iw_samples}")
        require(self.iw_samples == 1 or (self.beta == 1 and self.kl_warmup_steps == 0
                                         and self.recon_reduction == "sum"),
                "model.iw_samples > 1 trains the IWAE bound on log p(x), which has no KL weight: it needs "
                "beta = 1, kl_warmup_steps = 0 and recon_reduction = sum")
        require(self.prior in PRIORS, f"model.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        require(isinstance(self.pseudo_inputs, int) and self.pseudo_inputs >= 1,
                f"model.pseudo_inputs must be an integer >= 1, got {self.pseudo_inputs}")
        require(self.prior == "normal" or not self.conditional,
                "model.prior = vamp needs unconditional pseudo-inputs: it cannot be combined with conditional = true")
        require(isinstance(self.top_latent_dim, int) and self.top_latent_dim >= 0,
                f"model.top_latent_dim must be an integer >= 0 (0 = one stochastic layer), got {self.top_latent_dim}")
        require(isinstance(self.top_hidden, int) and self.top_hidden >= 1,
                f"model.top_hidden must be an integer >= 1, got {self.top_hidden}")
        require(isinstance(self.flow_steps, int) and self.flow_steps >= 0,
                f"model.flow_steps must be an integer >= 0 (0 = a diagonal Gaussian posterior), got {self.flow_steps}")
        require(isinstance(self.flow_hidden, int) and self.flow_hidden >= 1,
                f"model.flow_hidden must be an integer >= 1, got {self.flow_hidden}")
        require(self.flow_steps == 0 or self.top_latent_dim == 0,
                "model.flow_steps > 0 (an IAF posterior) cannot be combined with top_latent_dim > 0 (two layers): "
                "set model.flow_steps=0 for a two-layer model (the vamp preset has 2)")
        require(self.num_classes >= 2, "model.num_classes must be >= 2")
        require(len(self.image_shape) == 3 and all(s >= 1 for s in self.image_shape),
                "model.image_shape must be (C, H, W)")
        if "conv" in (self.arch, self.encoder_arch):
            h = self.image_shape[1]
            require(h % (2 ** len(self.conv_channels)) == 0,
                    f"conv VAE: image height {h} must be divisible by 2^{len(self.conv_channels)}")


def kl_divergence(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z = mu + sigma * eps with sigma = exp(log_var / 2) (Kingma & Welling 2014)."""
    return mu + torch.exp(0.5 * log_var) * eps


def log_importance_weights(model, x: Tensor, y: Tensor | None, mu: Tensor, log_var: Tensor,
                           eps: Tensor) -> tuple[Tensor, Tensor]:
    """log w = log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps, with eps (S, B, D).

    Returns (log w, log p(x|z)), each (S, B). ``model`` needs only ``log_likelihood(x, z, y)``.
    The Gaussians' 2*pi constants cancel; (z - mu) / sigma = eps exactly. A two-layer VAE draws
    its own (z1, z2) from eps and ignores ``mu`` and ``log_var``; so does one with an IAF posterior.
    """
    if getattr(model, "structured_posterior", False):
        z, log_ratio = model.sample_posterior(x, y, eps)
        log_px_z = model.log_likelihood(x, z, y)
        return log_px_z + log_ratio, log_px_z
    z = reparameterize(mu, log_var, eps)
    log_px_z = model.log_likelihood(x, z, y)
    return log_px_z + log_prior_over_posterior(model, z, eps, log_var), log_px_z


def log_prior_over_posterior(model, z: Tensor, eps: Tensor, log_var: Tensor) -> Tensor:
    """log p(z) - log q(z|x), summed over latent dimensions; p is N(0, I) unless ``model`` has a learned prior."""
    if getattr(model, "prior_is_standard_normal", True):
        return 0.5 * (eps.pow(2) - z.pow(2) + log_var).sum(-1)  # the 2*pi constants cancel
    return model.log_prior(z) - log_standard_draw(eps, log_var)


def log_standard_draw(eps: Tensor, log_var: Tensor) -> Tensor:
    """log q(z|x) at z = mu + sigma * eps, summed over the last dimension; float32 under bf16 autocast too."""
    return -0.5 * (eps.float().pow(2) + log_var.float() + LOG_2PI).sum(-1)


def log_normal_diag(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).pow(2) * torch.exp(-log_var)).sum(-1)


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    return F.one_hot(y, num_classes).to(dtype)


def _mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Dense layers with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _dense_act(sizes: list[int], act: type[nn.Module]) -> list[nn.Module]:
    """Dense layers each followed by ``act``."""
    return [m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), act())]


class MaskedLinear(nn.Linear):
    """A dense layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)  # rebuilt from the config, never stored

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One step of inverse autoregressive flow (Kingma et al. 2016), in its gated form:

        [m, s] = MADE(z, h),   g = sigmoid(s),   z' = g * z + (1 - g) * m,   log|dz'/dz| = sum log g

    Output d of the MADE sees only z_<d (and the context h), so dz'/dz is triangular with
    diagonal g. ``reverse`` reads z in the opposite order, so that stacked steps alternate.
    """

    def __init__(self, dim: int, hidden: int, context: int, reverse: bool):
        super().__init__()
        self.reverse = reverse
        deg_in = torch.arange(1, dim + 1)
        deg_hidden = torch.arange(hidden) % max(1, dim - 1) + 1  # each hidden unit sees z_1..z_deg
        self.inp = MaskedLinear(deg_hidden[:, None] >= deg_in[None, :])
        self.ctx = nn.Linear(context, hidden)
        self.mid = MaskedLinear(deg_hidden[:, None] >= deg_hidden[None, :])
        self.out = MaskedLinear((deg_in[:, None] > deg_hidden[None, :]).repeat(2, 1))
        with torch.no_grad():
            self.out.bias[dim:].fill_(2.0)  # gates start near sigmoid(2) = 0.88: each step starts close to identity

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(z', log|dz'/dz|) for z (..., B, D) and context h (B, C)."""
        if self.reverse:
            z = z.flip(-1)
        hidden = F.relu(self.mid(F.relu(self.inp(z) + self.ctx(h))))
        m, s = self.out(hidden).chunk(2, dim=-1)
        gate = torch.sigmoid(s)
        z = gate * z + (1 - gate) * m
        log_det = F.logsigmoid(s.float()).sum(-1)
        return (z.flip(-1) if self.reverse else z), log_det


class VAE(GenerativeModel):
    family = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c, h, w = config.image_shape
        self.n_pixels = c * h * w
        cond = config.num_classes if config.conditional else 0
        d, top = self.z_dim, config.top_latent_dim
        stats = 2 * (top or d)  # the posterior of z, or of z2 in the two-layer model
        widths, act = list(config.hidden), ACTIVATIONS[config.activation]
        self.act = act()
        if self.encoder_arch == "mlp":
            self.encoder = nn.Sequential(_mlp([self.n_pixels + cond, *widths], act), act())
        else:
            chans = [c + cond, *config.conv_channels]
            enc: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:]):
                enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
            self.encoder = nn.Sequential(*enc, nn.Flatten(), *_dense_act(self._conv_dense, act))
        feat = widths[-1] if self.encoder_arch == "mlp" else self._conv_dense[-1]
        self.to_stats = nn.Linear(feat, stats)  # z_mean and z_log_var, side by side
        if config.arch == "mlp":
            self.decoder = _mlp([d + cond, *reversed(widths), self.n_pixels], act)
        else:
            dense = self._conv_dense
            dec: list[nn.Module] = [*_dense_act([d + cond, *reversed(dense)], act),
                                    nn.Unflatten(1, (config.conv_channels[-1], *self.feat_hw))]
            rev = [*reversed(config.conv_channels), c]
            for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
                dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
                if i < len(rev) - 2:
                    dec.append(act())
            self.decoder = nn.Sequential(*dec, nn.Flatten())
        if top:
            low, width, feat = config.latent_dim, config.top_hidden, self.to_stats.in_features
            # q(z1 | x, z2) = N(stats of act(A h(x) + B z2)); p(z1 | z2) = N(stats of act(C z2))
            self.bottom_from_x = nn.Linear(feat, width)
            self.bottom_from_top = nn.Linear(top, width)
            self.bottom_stats = nn.Linear(width, 2 * low)
            self.bottom_prior = nn.Sequential(nn.Linear(top, width), act(), nn.Linear(width, 2 * low))
        if config.flow_steps:
            self.flow_context = nn.Linear(feat, config.latent_dim)  # h, the flow's view of the image
            self.flow = nn.ModuleList(IAFStep(config.latent_dim, config.flow_hidden, config.latent_dim, i % 2 == 1)
                                      for i in range(config.flow_steps))
        if config.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.n_pixels))
        if config.prior == "vamp":
            # Pixel values, clipped to [0, 1] when used; initialised N(0.05, 0.01) as in the VampPrior paper.
            self.pseudo = nn.Parameter(torch.randn(config.pseudo_inputs, c, h, w) * 0.01 + 0.05)

    @property
    def encoder_arch(self) -> str:
        """The encoder's architecture: ``config.encoder_arch``, or ``config.arch`` for "same"."""
        return self.config.arch if self.config.encoder_arch == "same" else self.config.encoder_arch

    @property
    def feat_hw(self) -> tuple[int, int]:
        """Height and width of the conv stack's last feature maps."""
        cfg = self.config
        return cfg.image_shape[1] // 2 ** len(cfg.conv_channels), cfg.image_shape[2] // 2 ** len(cfg.conv_channels)

    @property
    def _conv_dense(self) -> list[int]:
        """Widths from the flattened conv features through ``conv_dense``."""
        return [self.config.conv_channels[-1] * self.feat_hw[0] * self.feat_hw[1], *self.config.conv_dense]

    @property
    def z_dim(self) -> int:
        """Length of the latent vector z that encode / decode / sample_prior use: (z1, z2) when two-layer."""
        return self.config.latent_dim + self.config.top_latent_dim

    @property
    def hierarchical(self) -> bool:
        return self.config.top_latent_dim > 0

    @property
    def structured_posterior(self) -> bool:
        """q(z|x) is more than one diagonal Gaussian (two layers, or an IAF): draws go through sample_posterior."""
        return self.hierarchical or self.config.flow_steps > 0

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if "conv" in (self.config.arch, self.encoder_arch) else torch.contiguous_format

    # -- the three steps of the model ----------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior q(z|x) as (z_mean, z_log_var), each (B, D).

        Two-layer model: (z1, z2)'s means and log-variances along the posterior's mean path,
        q(z2|x) and then q(z1|x, z2 = its mean): what the pictures and the active-unit count use.
        """
        h = self._features(x, y)
        mu, log_var = self.to_stats(h).chunk(2, dim=1)
        if self.config.flow_steps:  # the flow's image of the base mean: the point the pictures use
            return self._flow(mu, h)[0], log_var
        if not self.hierarchical:
            return mu, log_var
        mu1, log_var1 = self._bottom_posterior(self.bottom_from_x(h), mu)
        return torch.cat([mu1, mu], 1), torch.cat([log_var1, log_var], 1)

    def _flow(self, z: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """z pushed through the IAF steps, and the summed log|det| of their Jacobians (float32)."""
        h = self.flow_context(features)
        log_det = 0.0
        for step in self.flow:
            z, ld = step(z, h)
            log_det = log_det + ld
        return z, log_det

    def _bottom_posterior(self, from_x: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        """q(z1 | x, z2) from the image's projection (B, W) and z2 (..., B, top)."""
        return self.bottom_stats(self.act(from_x + self.bottom_from_top(z2))).chunk(2, dim=-1)

    def _features(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The encoder's last hidden layer (B, F), before the posterior's statistics."""
        cfg = self.config
        if self.encoder_arch == "mlp":
            inp = x.flatten(1)
            if cfg.conditional:
                inp = torch.cat([inp, one_hot(y, cfg.num_classes, x.dtype)], dim=1)
        else:
            inp = x
            if cfg.conditional:
                maps = one_hot(y, cfg.num_classes, x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
                inp = torch.cat([x, maps], dim=1)
        return self.encoder(inp)

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decoder output before its final nonlinearity, flat (B, C*H*W)."""
        if self.config.conditional:
            z = torch.cat([z, one_hot(y, self.config.num_classes, z.dtype)], dim=1)
        return self.decoder(z)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean image of p(x|z), (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, y)).view(-1, *self.config.image_shape)

    # -- the prior ---------------------------------------------------------------------------------
    @property
    def prior_is_standard_normal(self) -> bool:
        """p(z) is N(0, I) over the whole latent vector, so the KL has a closed form per dimension."""
        return self.config.prior == "normal" and not self.structured_posterior

    def prior_components(self) -> tuple[Tensor, Tensor]:
        """The VampPrior's K Gaussians: q(z | u_k) at the pseudo-inputs, (mu, log_var) each (K, D).

        Two-layer model: q(z2 | u_k), the prior of the top layer.
        """
        u = self.pseudo.clamp(0, 1).contiguous(memory_format=self.memory_format)
        with torch.autocast(u.device.type, enabled=False):
            return self.to_stats(self._features(u, None)).chunk(2, dim=1)

    def log_prior(self, z: Tensor, max_elements: int = 1 << 22) -> Tensor:
        """log p(z) for z of shape (..., D), in float32 whatever the autocast (two-layer model: log p(z2)).

        VampPrior: log (1/K) sum_k N(z; mu_k, sigma_k^2), a log-sum-exp over the K components,
        computed a block of draws at a time so no temporary exceeds ``max_elements`` (16 MB).
        """
        z = z.float()
        if self.config.prior == "normal":
            return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
        mu_k, lv_k = (t.float() for t in self.prior_components())
        flat = z.reshape(-1, 1, z.shape[-1])
        rows = max(1, max_elements // mu_k.numel())
        with torch.autocast(z.device.type, enabled=False):
            out = [torch.logsumexp(log_normal_diag(block, mu_k, lv_k), dim=-1) for block in flat.split(rows)]
        return (torch.cat(out) - math.log(mu_k.shape[0])).view(z.shape[:-1])

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), (n, D), from ``generator`` (default: the global RNG).

        Two-layer model: z2 ~ p(z2), then z1 ~ p(z1 | z2); returns (z1, z2). An IAF posterior
        leaves the prior as it is: the VampPrior's components are the encoder's base Gaussians.
        """
        dev = generator.device if generator is not None else torch.device("cpu")
        top = self.config.top_latent_dim or self.config.latent_dim
        z = torch.randn(n, top, generator=generator, device=dev).to(self.device)
        if self.config.prior == "vamp":
            k = torch.randint(self.config.pseudo_inputs, (n,), generator=generator, device=dev).to(self.device)
            mu_k, lv_k = self.prior_components()
            z = reparameterize(mu_k[k], lv_k[k], z)
        if not self.hierarchical:
            return z
        mu1, log_var1 = self.bottom_prior(z).chunk(2, dim=-1)
        eps1 = torch.randn(n, self.config.latent_dim, generator=generator, device=dev).to(self.device)
        return torch.cat([reparameterize(mu1, log_var1, eps1), z], 1)

    def sample_posterior(self, x: Tensor, y: Tensor | None, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z ~ q(z|x) driven by eps ~ N(0, I) of shape (..., B, D), and log p(z) - log q(z|x), (..., B), float32.

        IAF posterior: z = flow(mu + sigma * eps), log q = log N(eps) - sum log sigma - sum log|det|.
        Two-layer model: z = (z1, z2); z2 = mu2 + sigma2 * eps2 from q(z2|x), then z1 from
        q(z1 | x, z2) for that draw of z2, driven by eps = (eps1, eps2).
        """
        h = self._features(x, y)
        mu2, log_var2 = self.to_stats(h).chunk(2, dim=1)
        if not self.hierarchical:
            z, log_det = self._flow(reparameterize(mu2, log_var2, eps), h)
            return z, self.log_prior(z) - (log_standard_draw(eps, log_var2) - log_det)
        low = self.config.latent_dim
        eps1, eps2 = eps[..., :low], eps[..., low:]
        z2 = reparameterize(mu2, log_var2, eps2)
        mu1, log_var1 = self._bottom_posterior(self.bottom_from_x(h), z2)
        z1 = reparameterize(mu1, log_var1, eps1)
        prior_mu1, prior_log_var1 = (t.float() for t in self.bottom_prior(z2).chunk(2, dim=-1))
        log_p = self.log_prior(z2) + log_normal_diag(z1.float(), prior_mu1, prior_log_var1)
        log_q = log_standard_draw(eps1, log_var1) + log_standard_draw(eps2, log_var2)
        return torch.cat([z1, z2], -1), log_p - log_q

    def _pixel_loss(self, x: Tensor, logits: Tensor) -> Tensor:
        """The training loss per pixel (..., P); for ``mse`` the squared error, without the Gaussian's constant."""
        cfg = self.config
        if cfg.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        if cfg.likelihood == "mse":
            return (torch.sigmoid(logits) - x).pow(2)
        mean = torch.sigmoid(logits)
        return (0.5 * math.log(2 * math.pi) + self.log_scale
                + 0.5 * ((x - mean) / self.log_scale.exp()).pow(2))

    def reconstruction_nll(self, x: Tensor, logits: Tensor) -> Tensor:
        """-log p(x|z) per image (B,), or the tutorial's per-pixel mean for reduction 'mean'."""
        per_pixel = self._pixel_loss(x.flatten(1), logits)
        return per_pixel.mean(1) if self.config.recon_reduction == "mean" else per_pixel.sum(1)

    @property
    def pixel_variance(self) -> float | None:
        """The fixed variance of the ``mse`` likelihood that the training loss is the ELBO of.

        sum of squares      = Gaussian NLL with sigma^2 = 1/2 (minus P/2 log(pi));
        mean of squares     = sum of squares / P = Gaussian NLL with sigma^2 = P/2 (392 for 28x28),
        so the tutorial's "mean" loss is the ELBO of a decoder with pixel noise sigma ~ 20 on [0, 1]
        pixels. None for the other likelihoods (Bernoulli has none, ``gaussian`` learns its own).
        """
        if self.config.likelihood != "mse":
            return None
        return 0.5 * (self.n_pixels if self.config.recon_reduction == "mean" else 1)

    def log_likelihood(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x|z) per image, summed over pixels, under the likelihood the loss is the ELBO of.

        ``x`` is (B, C, H, W); ``z`` is (B, D) or (S, B, D) for S latent draws per image;
        returns (B,) or (S, B). Whatever ``recon_reduction``, this is a proper log-density
        (``mse``: Gaussian with variance :attr:`pixel_variance`), so it can be compared with
        other models' and used in importance-weighted bounds (``genlab.nll``).
        """
        cfg = self.config
        lead, (b, d) = z.shape[:-2], z.shape[-2:]
        reps = int(math.prod(lead))
        yf = y.repeat(reps) if cfg.conditional and y is not None else y
        logits = self.decode_logits(z.reshape(-1, d), yf).view(*lead, b, self.n_pixels)  # (..., B, P)
        x = x.flatten(1).to(logits.dtype)  # (B, P), broadcast over the draws
        if cfg.likelihood == "mse":
            var = self.pixel_variance
            nll = ((torch.sigmoid(logits) - x).pow(2).sum(-1) / (2 * var)
                   + 0.5 * self.n_pixels * math.log(2 * math.pi * var))
        else:
            nll = self._pixel_loss(x, logits).sum(-1)
        return -nll

    def forward(self, x: Tensor, y: Tensor | None, eps: Tensor, beta: float | None = None) -> dict[str, Tensor]:
        """Loss parts for a batch; ``eps`` ~ N(0, I) of shape (B, D) drives the sampling of z.

        With ``eps`` of shape (k, B, D) the loss is minus the IWAE bound L_k (Burda et al. 2016),
        averaged over the batch; ``recon`` is then averaged over the k draws, and ``kl`` is the
        closed form, logged for monitoring only.
        """
        mu, log_var = (None, None) if self.structured_posterior else self.encode(x, y)
        if eps.dim() == 3:
            log_w, log_px_z = log_importance_weights(self, x, y, mu, log_var, eps)
            bound = torch.logsumexp(log_w, dim=0) - math.log(eps.shape[0])
            if not self.prior_is_standard_normal:
                kl = (log_px_z - log_w).mean()  # E_q[log q(z|x) - log p(z)] over the k draws
                return {"loss": -bound.mean(), "recon": -log_px_z.mean(), "kl": kl}
            kl_dims = kl_divergence(mu, log_var).mean(0)
            return {"loss": -bound.mean(), "recon": -log_px_z.mean(), "kl": kl_dims.sum(), "kl_per_dim": kl_dims}
        if self.structured_posterior:
            z, log_ratio = self.sample_posterior(x, y, eps)
        else:
            z = reparameterize(mu, log_var, eps)
        recon = self.reconstruction_nll(x, self.decode_logits(z, y)).mean()
        beta = self.config.beta if beta is None else beta
        if not self.prior_is_standard_normal:  # no closed form: the one-draw estimate of KL(q || p)
            kl = -(log_ratio if self.structured_posterior else log_prior_over_posterior(self, z, eps, log_var)).mean()
            return {"loss": recon + beta * kl, "recon": recon, "kl": kl}
        kl_dims = kl_divergence(mu, log_var).mean(0)  # (D,), averaged over the batch
        kl = kl_dims.sum()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "kl_per_dim": kl_dims}

    # -- GenerativeModel interface ----------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"vae": self}

    def configure_optimizers(self, settings: TrainSettings) -> dict[str, torch.optim.Optimizer]:
        return {"vae": adam(self.parameters(), lr=settings.lr)}

    def beta_at(self, step: int) -> float:
        """KL weight at a step: linear warm-up from 0 to beta over kl_warmup_steps."""
        cfg = self.config
        if cfg.kl_warmup_steps <= 0:
            return cfg.beta
        return cfg.beta * min(1.0, step / cfg.kl_warmup_steps)

    def train_step(self, nets: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
                   x: Tensor, y: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        if self.config.binarize:
            x = (ctx.noise.rand(x.shape[0], *x.shape[1:], device=x.device) < x).to(x.dtype)
        draws, d = self.config.iw_samples, self.z_dim
        if draws == 1:
            eps = ctx.noise.randn(x.shape[0], d, device=x.device)
        else:  # drawn image-major, so each process's slice of the batch gets its own images' draws
            eps = ctx.noise.randn(x.shape[0], draws, d, device=x.device).transpose(0, 1)
        parts = nets["vae"](x, y, eps, self.beta_at(ctx.step))
        applied = optimize(parts["loss"], optimizers["vae"], None, ctx.settings, ctx.step)
        return {k: v.detach() for k, v in parts.items()} | {"applied": applied}

    def end_of_training(self, run_dir, images: Tensor, labels: Tensor) -> dict:
        """Posterior-collapse check on held-out images, plus latent.png / manifold.png for 2-D latents."""
        from ..plots import plot_latent_scatter
        from ..sample import save_grid

        images, labels = images[:5000], labels[:5000]
        mu, log_var = posterior_means(self, images, labels)
        n_active, unit_var = active_units(mu)
        summary: dict = {"active_units": n_active, "latent_dim": self.z_dim,
                         "posterior_mean_variance": [round(float(v), 5) for v in unit_var], "warnings": []}
        per_unit = f"variance of posterior means per unit {', '.join(f'{v:.3g}' for v in unit_var[:8].tolist())}"
        if self.prior_is_standard_normal:  # KL(q || N(0, 1)) per unit; a VampPrior's KL does not split by unit
            kl_dims = kl_divergence(mu, log_var).mean(0)
            summary["kl_per_dim"] = [round(float(v), 4) for v in kl_dims]
            per_unit = f"KL per unit {', '.join(f'{v:.3g}' for v in kl_dims[:8].tolist())} nats"
        if n_active == 0:
            summary["warnings"].append(
                f"posterior collapse: 0 of {self.z_dim} latent units are active ({per_unit}); "
                f"samples will all look alike. "
                + ("The listing's MSE is a mean over pixels while its KL is a sum, so the KL weighs ~784x "
                   "too much: try --recon-reduction sum (preset seed-sum)." if self.config.recon_reduction == "mean"
                   else "Lower --beta or use KL warm-up."))
        if self.z_dim == 2 and run_dir is not None:
            plot_latent_scatter(mu.numpy(), labels.cpu().numpy(), Path(run_dir) / "latent.png",
                                title=f"latent means of {len(mu)} held-out images ({n_active}/2 active)")
            save_grid(latent_manifold(self, 20), Path(run_dir) / "manifold.png", nrow=20)
        return summary

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        z = self.sample_prior(n, generator)
        y = None
        if self.config.conditional:
            y = labels if labels is not None else torch.arange(n) % self.config.num_classes
            y = y.to(self.device)
        return self.decode(z, y)


@torch.inference_mode()
def posterior_means(model: VAE, images: Tensor, labels: Tensor | None = None,
                    batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(mu, log_var) of q(z|x) for float images, batched."""
    mus, lvs = [], []
    for i in range(0, images.shape[0], batch_size):
        xb = images[i : i + batch_size].to(model.device)
        yb = labels[i : i + batch_size].to(model.device) if labels is not None and model.conditional else None
        mu, lv = model.encode(xb, yb)
        mus.append(mu.cpu())
        lvs.append(lv.cpu())
    return torch.cat(mus), torch.cat(lvs)


@torch.inference_mode()
def latent_manifold(model: VAE, n: int = 20, label: int = 0) -> Tensor:
    """Decode an n x n grid over the 2-D latent plane at N(0,1) quantiles 5%..95% (Kingma & Welling, fig. 4)."""
    from scipy.stats import norm

    q = torch.tensor(norm.ppf(np.linspace(0.05, 0.95, n)), dtype=torch.float32)
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row = largest z[1]
    z = torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1).to(model.device)
    y = torch.full((n * n,), label, dtype=torch.long, device=model.device) if model.conditional else None
    return model.decode(z, y).cpu()


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Burda et al. (2016): unit j is active when Cov_x(E_q[z_j | x]) > threshold.

    ``mu`` holds posterior means (N, D). Returns (count, per-unit variance).
    """
    var = mu.double().var(dim=0)
    return int((var > threshold).sum()), var.float()


def _preset(name: str, description: str, train: dict, **model) -> Preset:
    return Preset(name, description, VAEConfig(**model), train)


PRESETS = {
    "seed": _preset(
        "seed", "the tutorial's VAE exactly: 784-64-2 MLP, MSE (mean over pixels) + KL, Adam, batch 16",
        dict(epochs=50, batch_size=16, lr=1e-3),
        arch="mlp", hidden=(64,), latent_dim=2, likelihood="mse", recon_reduction="mean"),
    "seed-sum": _preset(
        "seed-sum", "the tutorial's VAE with the reconstruction summed over pixels (the correctly scaled ELBO)",
        dict(epochs=50, batch_size=16, lr=1e-3),
        arch="mlp", hidden=(64,), latent_dim=2, likelihood="mse", recon_reduction="sum"),
    "mlp": _preset(
        "mlp", "pytorch/examples' VAE: 784-400-20 MLP, Bernoulli likelihood, Adam 1e-3, batch 128",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp", hidden=(400,), latent_dim=20, likelihood="bernoulli"),
    "conv": _preset(
        "conv", "convolutional VAE (32-64 stride-2 convs, 32-d latent), Bernoulli likelihood",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="conv", conv_channels=(32, 64), latent_dim=32, likelihood="bernoulli"),
    "vamp": _preset(
        "vamp", "conv VAE with a VampPrior (a mixture over 100 learned pseudo-images), SiLU, a 2-step IAF "
        "posterior (best test NLL); lr 4e-3 with cosine decay, bf16 where the hardware has it",
        dict(epochs=10, batch_size=128, lr=4e-3, lr_schedule="cosine", precision="auto"),
        arch="conv", conv_channels=(32, 64), latent_dim=32, likelihood="bernoulli", prior="vamp", pseudo_inputs=100,
        activation="silu", flow_steps=2),
    "cvae": _preset(
        "cvae", "conditional MLP VAE: one-hot labels into encoder and decoder; sample with --label",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp", hidden=(400,), latent_dim=20, likelihood="bernoulli", conditional=True),
    "beta": _preset(
        "beta", "beta-VAE (beta = 4) on the mlp preset: stronger KL, smoother, more disentangled latents",
        dict(epochs=10, batch_size=128, lr=1e-3, precision="auto"),
        arch="mlp", hidden=(400,), latent_dim=10, likelihood="bernoulli", beta=4.0),
}

MODEL = VAE
