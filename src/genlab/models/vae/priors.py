"""The prior p(z), one small object per ``config.prior``, chosen by :func:`make_prior`.

Each prior gives ``log_prob(z)`` (float32 whatever the autocast), ``sample(n, generator, device)`` and
``standard_normal``: whether it is N(0, I), so that KL(q || p) has a closed form per dimension.
In the two-layer model this is the prior of the top latent z2.

These objects hold no tensors: the VampPrior's pseudo-inputs stay a parameter of the VAE (state_dict key
``pseudo``), and the prior asks the VAE for its components through a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .config import VAEConfig
from .gaussian import LOG_2PI, log_normal_diag, reparameterize


def standard_draws(n: int, dim: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n, dim) draws of N(0, I) from ``generator`` (default: the global RNG) on its own device, moved to ``device``.

    Drawing on the generator's device keeps a CPU generator's stream the same whichever device the model is on.
    """
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(n, dim, generator=generator, device=dev).to(device)


class Prior:
    """p(z) over vectors of length ``dim``."""

    standard_normal = False

    def __init__(self, dim: int):
        self.dim = dim

    def log_prob(self, z: Tensor, max_elements: int = 1 << 22) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I):  log p(z) = -1/2 sum_j (log 2 pi + z_j^2)."""

    standard_normal = True

    def log_prob(self, z: Tensor, max_elements: int = 1 << 22) -> Tensor:
        z = z.float()
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return standard_draws(n, self.dim, generator, device)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): the encoder's posteriors at K learned pseudo-images u_k,

        p(z) = (1/K) sum_k q(z | u_k),   log p(z) = logsumexp_k log N(z; mu_k, sigma_k^2) - log K.

    ``components()`` returns (mu_k, log_var_k), each (K, D): the VAE's :meth:`~genlab.models.vae.VAE.prior_components`,
    called afresh each time because the pseudo-inputs and the encoder are being trained.
    """

    def __init__(self, dim: int, k: int, components: Callable[[], tuple[Tensor, Tensor]]):
        super().__init__(dim)
        self.k = k
        self.components = components

    def log_prob(self, z: Tensor, max_elements: int = 1 << 22) -> Tensor:
        """log p(z) for z (..., D), computed a block of draws at a time so that no temporary exceeds
        ``max_elements`` (16 MB): the (draws, K, D) differences would not fit at once for large k."""
        z = z.float()
        mu_k, lv_k = (t.float() for t in self.components())
        flat = z.reshape(-1, 1, z.shape[-1])
        rows = max(1, max_elements // mu_k.numel())
        with torch.autocast(z.device.type, enabled=False):
            out = [torch.logsumexp(log_normal_diag(block, mu_k, lv_k), dim=-1) for block in flat.split(rows)]
        return (torch.cat(out) - math.log(mu_k.shape[0])).view(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """A component k uniformly, then z = mu_k + sigma_k * eps (eps drawn first, then k: the stream's order)."""
        eps = standard_draws(n, self.dim, generator, device)
        dev = generator.device if generator is not None else torch.device("cpu")
        k = torch.randint(self.k, (n,), generator=generator, device=dev).to(device)
        mu_k, lv_k = self.components()
        return reparameterize(mu_k[k], lv_k[k], eps)


def make_prior(config: VAEConfig, components: Callable[[], tuple[Tensor, Tensor]]) -> Prior:
    """The prior ``config.prior`` names, over z (or over z2 when the model has two layers).

    ``components`` gives the VampPrior's (mu_k, log_var_k); a standard normal never calls it.
    """
    dim = config.top_latent_dim or config.latent_dim
    if config.prior == "vamp":
        return VampPrior(dim, config.pseudo_inputs, components)
    return StandardNormal(dim)
