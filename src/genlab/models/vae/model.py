"""Variational autoencoders: the tutorial's MLP VAE, MLP/conv VAEs, beta-VAE, conditional VAE.

    loss = L_recon + beta * L_KL                     (the tutorial's total loss)
    L_KL = KL(q(z|x) || N(0, I)) = -1/2 sum_j (1 + log s_j^2 - m_j^2 - s_j^2)   (closed form)

``L_recon`` is the negative log-likelihood of the image under the decoder, ``self.likelihood``
(:mod:`.likelihoods`): ``bernoulli``, ``mse`` (a Gaussian with fixed variance) or ``gaussian``
(a learned per-pixel scale), summed over pixels, or averaged with ``recon_reduction="mean"``.
That mean is the tutorial listing's Keras MSE; its KL is a *sum* over latent dimensions, so
the KL weighs 784 times what it does in the ELBO and the posterior tends to collapse (every
sample the same image). Kept because it is what the tutorial wrote; :func:`active_units` and
the trainer's end-of-training check make it visible.

The prior p(z), ``self.prior`` (:mod:`.priors`), is N(0, I), or with ``prior="vamp"`` the
VampPrior (Tomczak & Welling 2018): the mixture (1/K) sum_k q(z | u_k) of the encoder's
posteriors at K learned pseudo-images u_k. Its KL has no closed form, so the loss uses the
single-draw estimate log q(z|x) - log p(z), which the IWAE bound and ``genlab nll`` also use.

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
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..base import GenerativeModel, LogLabel, StepContext, StepOutput, TrainSettings, adam, optimize
from .config import VAEConfig
from .gaussian import (
    active_units,
    kl_divergence,
    log_importance_weights,
    log_normal_diag,
    log_prior_over_posterior,
    log_standard_draw,
    one_hot,
    reparameterize,
)
from .likelihood import bounds
from .likelihoods import make_likelihood
from .networks import ACTIVATIONS, IAFStep, _dense_act, _mlp
from .priors import make_prior, standard_draws


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
            dec: list[nn.Module] = [
                *_dense_act([d + cond, *reversed(dense)], act),
                nn.Unflatten(1, (config.conv_channels[-1], *self.feat_hw)),
            ]
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
            self.flow = nn.ModuleList(
                IAFStep(config.latent_dim, config.flow_hidden, config.latent_dim, i % 2 == 1)
                for i in range(config.flow_steps)
            )
        # The likelihood's and the prior's parameters live on the VAE itself, so that their state_dict keys
        # stay "log_scale" and "pseudo" (checkpoints of earlier runs load); the part objects read them through
        # a partial and a bound method (not lambdas), which deepcopy and pickle point at the copy.
        if config.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.n_pixels))
        if config.prior == "vamp":
            # Pixel values, clipped to [0, 1] when used; initialised N(0.05, 0.01) as in the VampPrior paper.
            self.pseudo = nn.Parameter(torch.randn(config.pseudo_inputs, c, h, w) * 0.01 + 0.05)
        self.likelihood = make_likelihood(config, self.n_pixels, log_scale=partial(getattr, self, "log_scale"))
        self.prior = make_prior(config, components=self.prior_components)

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
        log_det: Tensor | float = 0.0
        for step in self.flow:
            z, ld = step(z, h)
            log_det = log_det + ld
        assert isinstance(log_det, Tensor)  # flow_steps >= 1 whenever there is a flow
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
        return self.prior.standard_normal and not self.structured_posterior

    def prior_components(self) -> tuple[Tensor, Tensor]:
        """The VampPrior's K Gaussians: q(z | u_k) at the pseudo-inputs, (mu, log_var) each (K, D).

        Two-layer model: q(z2 | u_k), the prior of the top layer.
        """
        u = self.pseudo.clamp(0, 1).contiguous(memory_format=self.memory_format)
        with torch.autocast(u.device.type, enabled=False):
            return self.to_stats(self._features(u, None)).chunk(2, dim=1)

    def log_prior(self, z: Tensor, max_elements: int = 1 << 22) -> Tensor:
        """log p(z) for z of shape (..., D), in float32 whatever the autocast (two-layer model: log p(z2));
        a VampPrior works a block of draws at a time so no temporary exceeds ``max_elements``."""
        return self.prior.log_prob(z, max_elements)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z), (n, D), from ``generator`` (default: the global RNG).

        Two-layer model: z2 ~ p(z2), then z1 ~ p(z1 | z2); returns (z1, z2). An IAF posterior
        leaves the prior as it is: the VampPrior's components are the encoder's base Gaussians.
        """
        z = self.prior.sample(n, generator, self.device)
        if not self.hierarchical:
            return z
        mu1, log_var1 = self.bottom_prior(z).chunk(2, dim=-1)
        eps1 = standard_draws(n, self.config.latent_dim, generator, self.device)
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

    def reconstruction_nll(self, x: Tensor, logits: Tensor) -> Tensor:
        """-log p(x|z) per image (B,), or the tutorial's per-pixel mean for reduction 'mean'."""
        return self.likelihood.training_nll(x.flatten(1), logits)

    @property
    def pixel_variance(self) -> float | None:
        """The fixed variance of the ``mse`` likelihood that the training loss is the ELBO of: 1/2 for the sum of
        squares, P/2 (392 for 28x28) for their mean. None for the other likelihoods (see :mod:`.likelihoods`)."""
        return self.likelihood.pixel_variance

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
        return self.likelihood.log_prob(x, logits)

    def forward(self, x: Tensor, y: Tensor | None, eps: Tensor, beta: float | None = None) -> dict[str, Tensor]:
        """Loss parts for a batch; ``eps`` ~ N(0, I) of shape (B, D) drives the sampling of z.

        With ``eps`` of shape (k, B, D) the loss is minus the IWAE bound L_k (Burda et al. 2016),
        averaged over the batch; ``recon`` is then averaged over the k draws, and ``kl`` is the
        closed form, logged for monitoring only.
        """
        # (mu, log_var) of a diagonal q(z|x); None when the posterior is structured (IAF, two layers)
        diag = None if self.structured_posterior else self.encode(x, y)
        if eps.dim() == 3:
            mu, log_var = diag if diag is not None else (None, None)
            log_w, log_px_z = log_importance_weights(self, x, y, mu, log_var, eps)
            bound = torch.logsumexp(log_w, dim=0) - math.log(eps.shape[0])
            if not self.prior_is_standard_normal:
                kl = (log_px_z - log_w).mean()  # E_q[log q(z|x) - log p(z)] over the k draws
                return {"loss": -bound.mean(), "recon": -log_px_z.mean(), "kl": kl}
            assert diag is not None  # a standard-normal prior goes with a diagonal posterior
            kl_dims = kl_divergence(*diag).mean(0)
            return {"loss": -bound.mean(), "recon": -log_px_z.mean(), "kl": kl_dims.sum(), "kl_per_dim": kl_dims}
        if diag is None:
            z, log_ratio = self.sample_posterior(x, y, eps)
        else:
            z = reparameterize(*diag, eps)
        recon = self.reconstruction_nll(x, self.decode_logits(z, y)).mean()
        beta = self.config.beta if beta is None else beta
        if not self.prior_is_standard_normal:  # no closed form: the one-draw estimate of KL(q || p)
            if diag is not None:  # after the decoder, as always: autograd sums gradients in graph order
                log_ratio = log_prior_over_posterior(self, z, eps, diag[1])
            kl = -log_ratio.mean()
            return {"loss": recon + beta * kl, "recon": recon, "kl": kl}
        assert diag is not None
        kl_dims = kl_divergence(*diag).mean(0)  # (D,), averaged over the batch
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

    def train_step(
        self,
        nets: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> StepOutput:
        if self.config.binarize:
            x = (ctx.noise.rand(x.shape[0], *x.shape[1:], device=x.device) < x).to(x.dtype)
        draws, d = self.config.iw_samples, self.z_dim
        if draws == 1:
            eps = ctx.noise.randn(x.shape[0], d, device=x.device)
        else:  # drawn image-major, so each process's slice of the batch gets its own images' draws
            eps = ctx.noise.randn(x.shape[0], draws, d, device=x.device).transpose(0, 1)
        parts = nets["vae"](x, y, eps, self.beta_at(ctx.step))
        applied = optimize(parts["loss"], optimizers["vae"], None, ctx.settings, ctx.step)
        logs = {k: v.detach() for k, v in parts.items()}
        return StepOutput(loss=logs["loss"], logs=logs, applied=applied)

    def describe_logs(self) -> dict[str, LogLabel]:
        """loss, recon and kl in words and units, as this config computes them (see the module doc)."""
        cfg = self.config
        per = "pixel" if cfg.recon_reduction == "mean" else "image"
        # squared errors are the NLL of a fixed-variance Gaussian less its constant; the IWAE loss uses
        # the full log-density
        squared = cfg.likelihood == "mse" and cfg.iw_samples == 1
        if squared:
            recon = LogLabel(f"squared error, {cfg.recon_reduction} over pixels", f"nats/{per}, up to a constant")
        else:
            recon = LogLabel(f"-log p(x|z), {cfg.recon_reduction} over pixels", f"nats/{per}")
        estimate = "" if self.prior_is_standard_normal else ", one-draw estimate"
        kl = LogLabel(f"KL(q(z|x) || p(z)){estimate}", "nats/image")
        const = ", up to a constant" if squared else ""
        if cfg.iw_samples > 1:
            loss = LogLabel(f"-IWAE bound, k = {cfg.iw_samples}", "nats/image")
        elif cfg.beta == 1 and cfg.kl_warmup_steps == 0 and per == "image":
            loss = LogLabel("-ELBO = recon + kl", f"nats/image{const}")
        else:
            warm = f", beta rising over {cfg.kl_warmup_steps:,} steps" if cfg.kl_warmup_steps else ""
            unit = f"nats/image{const}" if per == "image" else "per-pixel recon + per-image KL"
            loss = LogLabel(f"recon + beta kl, beta = {cfg.beta:g}{warm}", unit)
        return {"loss": loss, "recon": recon, "kl": kl}

    def diagnose(self, images: Tensor, labels: Tensor) -> dict[str, Any]:
        """Posterior-collapse check on held-out float images: active units, KL per unit, a warning."""
        images, labels = images[:5000], labels[:5000]
        mu, log_var = posterior_means(self, images, labels)
        n_active, unit_var = active_units(mu)
        summary: dict[str, Any] = {
            "active_units": n_active,
            "latent_dim": self.z_dim,
            "posterior_mean_variance": [round(float(v), 5) for v in unit_var],
            "warnings": [],
        }
        per_unit = f"variance of posterior means per unit {', '.join(f'{v:.3g}' for v in unit_var[:8].tolist())}"
        if self.prior_is_standard_normal:  # KL(q || N(0, 1)) per unit; a VampPrior's KL does not split by unit
            kl_dims = kl_divergence(mu, log_var).mean(0)
            summary["kl_per_dim"] = [round(float(v), 4) for v in kl_dims]
            per_unit = f"KL per unit {', '.join(f'{v:.3g}' for v in kl_dims[:8].tolist())} nats"
        if n_active == 0:
            summary["warnings"].append(
                f"posterior collapse: 0 of {self.z_dim} latent units are active ({per_unit}); "
                f"samples will all look alike. "
                + (
                    "The listing's MSE is a mean over pixels while its KL is a sum, so the KL weighs ~784x "
                    "too much: try --recon-reduction sum (preset seed-sum)."
                    if self.config.recon_reduction == "mean"
                    else "Lower --beta or use KL warm-up."
                )
            )
        return summary

    # -- capabilities: a latent space with an encoder ------------------------------------------------
    @property
    def latent_dim(self) -> int:
        """Length of z as the tools see it (z1 and z2 together for two layers)."""
        return self.z_dim

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_prior(n, generator)

    def encode_latent(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The posterior mean E[z|x], (B, D): deterministic, so pictures of it repeat."""
        return self.encode(x, labels if self.conditional else None)[0]

    def posterior_std(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Standard deviations of q(z|x) per dimension, (B, D), beside :meth:`encode_latent`'s mean."""
        return self.encode(x, labels if self.conditional else None)[1].mul(0.5).exp()

    @property
    def informativeness_name(self) -> str:
        """What :meth:`latent_informativeness` measures, as a picture labels it."""
        return "KL" if self.prior_is_standard_normal else "variance"

    def latent_informativeness(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """KL(q(z_j|x) || N(0, 1)) per dimension, averaged over ``x`` (the variance of the posterior
        means where the prior is not N(0, I), since such a KL does not split by dimension)."""
        mu, log_var = posterior_means(self, x, labels)
        return kl_divergence(mu, log_var).mean(0) if self.prior_is_standard_normal else mu.var(0)

    # -- capability: a bound on log p(x) (genlab nll, evaluate --nll) ----------------------------------
    @property
    def likelihood_name(self) -> str:
        """The likelihood the bound is a log-probability of, in words (goes into nll.json)."""
        return self.likelihood.words

    @property
    def likelihood_data(self) -> str:
        """``"binary"``: Bernoulli pixels, evaluated on binarised images; else a density on [0, 1] pixels."""
        return self.likelihood.data

    def likelihood_report(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
    ) -> dict[str, Tensor]:
        """Per image (B,), float64 on the CPU: the IWAE bound L_k(x) (``"bound"``), the ``"elbo"`` and its
        ``"kl"`` term KL(q(z|x) || p(z)), from k draws of ``generator`` (see :mod:`.likelihood`)."""
        return bounds(self, x, labels, k=k, batch_size=max(1, x.shape[0]), chunk=chunk, generator=generator)

    def likelihood_summary(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Any]:
        """Per-dataset figures of q(z|x) on float images: active units (Burda et al.: Var_x E_q[z_j|x] > 0.01),
        the latent size, the KL per dimension (N(0, I) prior only: a VampPrior's KL does not split by
        dimension) and the variance of the posterior means per dimension."""
        mu, log_var = posterior_means(self, x, labels)
        n_active, unit_var = active_units(mu)
        summary: dict[str, Any] = {"active_units": n_active, "latent_dim": int(mu.shape[1])}
        if self.prior_is_standard_normal:
            summary["kl_per_dim"] = [round(float(v), 4) for v in kl_divergence(mu, log_var).mean(0)]
        summary["posterior_mean_variance"] = [round(float(v), 5) for v in unit_var]
        return summary

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        z = self.sample_prior(n, generator)
        y = None
        if self.config.conditional:
            y = labels if labels is not None else torch.arange(n) % self.config.num_classes
            y = y.to(self.device)
        return self.decode(z, y)


@torch.inference_mode()
def posterior_means(
    model: VAE, images: Tensor, labels: Tensor | None = None, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """(mu, log_var) of q(z|x) for float images, batched."""
    mus, lvs = [], []
    for i in range(0, images.shape[0], batch_size):
        xb = images[i : i + batch_size].to(model.device)
        yb = labels[i : i + batch_size].to(model.device) if labels is not None and model.conditional else None
        mu, lv = model.encode(xb, yb)
        mus.append(mu.cpu())
        lvs.append(lv.cpu())
    return torch.cat(mus), torch.cat(lvs)
