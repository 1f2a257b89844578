"""A VAE's bound on log p(x): the importance-weighted bound (IWAE) and the ELBO, per image.

The IWAE bound (Burda, Grosse & Salakhutdinov 2016, eq. 8) with k draws z_i ~ q(z|x):

    L_k(x) = log (1/k) sum_i  p(x|z_i) p(z_i) / q(z_i|x)   <=   log p(x)

is a lower bound for every k, increases with k in expectation, and tends to log p(x) as
k -> inf. L_1 is the ELBO. We combine the k log-weights with ``torch.logsumexp``, in chunks
of draws with a running log-add-exp, so memory stays bounded whatever k is. Figures are in
nats; the test NLL reported in papers is ``-mean_x L_k(x)`` with k = 5000.

The functions here need two methods of a model only, so any model with a Gaussian posterior and
a standard-normal prior can be checked (the tests use probabilistic PCA, whose log p(x) is known):

- ``encode(x, y) -> (mu, log_var)``: the diagonal Gaussian q(z|x), each (B, D);
- ``log_likelihood(x, z, y) -> (S, B)``: log p(x|z) summed over pixels for z of shape (S, B, D).

A model with another prior (the VampPrior) also sets ``prior_is_standard_normal = False`` and
provides ``log_prior(z) -> (S, B)``; one whose posterior is more than one diagonal Gaussian (two
layers, an IAF) sets ``structured_posterior = True`` and provides ``sample_posterior`` (see
:func:`~genlab.models.vae.gaussian.log_importance_weights`). :class:`~genlab.models.vae.VAE`
has all of them and reaches this module through its ``likelihood_report`` (the
:class:`~genlab.models.base.LikelihoodModel` capability that ``genlab nll`` asks for).

Which likelihood that is (see :meth:`genlab.models.vae.VAE.log_likelihood`): Bernoulli for
``bernoulli`` (a probability of binary images: evaluate on binarised images), a Gaussian
density for ``mse`` and ``gaussian``. A density on continuous pixels is not comparable with a
Bernoulli NLL on binarised pixels; compare models only within one likelihood.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import GenlabError
from .gaussian import kl_divergence, log_importance_weights

DEFAULT_ROWS = 50_000  # draws x images decoded at once: ~160 MB of 784-pixel logits in float32


@torch.inference_mode()
def batch_bounds(
    model, x: Tensor, y: Tensor | None, *, k: int, chunk: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """L_k(x), the ELBO and its KL term for one batch, in one pass over the k draws; each (B,) float64 on the CPU.

    ``x`` (B, C, H, W) and ``y`` are on the model's device; the draws eps ~ N(0, I), ``chunk`` at
    a time, come from ``generator``.

        ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

    with the reconstruction term averaged over the same k draws and the KL in closed form for the
    N(0, I) prior (lower variance than averaging the log-weights), else the log-weights averaged
    over the draws. It is the negative of the training loss for sum reductions, and equals L_1 in
    expectation. ``kl`` is E_q[log p(x|z)] - ELBO.
    """
    mu, log_var = model.encode(x, y)  # (B, D) each
    b, d = mu.shape
    device = mu.device
    acc = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
    ll_sum = torch.zeros(b, dtype=torch.float64, device=device)
    lw_sum = torch.zeros(b, dtype=torch.float64, device=device)
    for s0 in range(0, k, chunk):
        c = min(chunk, k - s0)
        eps = torch.randn(c, b, d, generator=generator, device=generator.device, dtype=mu.dtype).to(device)
        log_w, log_px_z = log_importance_weights(model, x, y, mu, log_var, eps)  # (c, B) each
        acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), dim=0))  # running log-sum-exp over chunks
        ll_sum += log_px_z.double().sum(0)
        lw_sum += log_w.double().sum(0)
    recon = ll_sum / k
    if getattr(model, "prior_is_standard_normal", True):
        elbo_ = recon - kl_divergence(mu, log_var).double().sum(-1)
    else:  # a VampPrior's KL has no closed form
        elbo_ = lw_sum / k
    return {"bound": (acc - math.log(k)).cpu(), "elbo": elbo_.cpu(), "kl": (recon - elbo_).cpu()}


@torch.inference_mode()
def bounds(
    model,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Per-image IWAE bound ``"bound"``, ``"elbo"`` and ``"kl"`` (see :func:`batch_bounds`), (N,) float64 on the CPU.

    ``images`` are (N, C, H, W), float in [0, 1] or uint8, on any device; binarise them first for a
    Bernoulli model (:func:`genlab.nll.binarize_images`). ``labels`` (N,) are required for a
    conditional model (the bound is then of log p(x|y)). ``chunk`` draws per image are decoded at
    a time (default: ~50,000 decoded images per pass), so memory does not grow with ``k``.
    ``generator`` drives the draws (default: a CPU generator seeded 0); the result depends on it,
    ``batch_size`` and ``chunk`` only through Monte Carlo noise.
    """
    if k < 1:
        raise GenlabError(f"k (importance samples) must be >= 1, got {k}")
    if batch_size < 1:
        raise GenlabError(f"batch size must be >= 1, got {batch_size}")
    conditional = bool(getattr(model, "conditional", False))
    if conditional and labels is None:
        raise GenlabError("this is a conditional model: evaluating log p(x|y) needs the labels")
    chunk = chunk or max(1, DEFAULT_ROWS // batch_size)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if hasattr(model, "eval"):
        model.eval()
    device = _device_of(model)
    images = images.float().div(255) if images.dtype == torch.uint8 else images
    parts = []
    for lo in range(0, images.shape[0], batch_size):
        x = images[lo : lo + batch_size].to(device)
        y = labels[lo : lo + batch_size].to(device) if conditional and labels is not None else None
        parts.append(batch_bounds(model, x, y, k=k, chunk=chunk, generator=generator))
    return {key: torch.cat([p[key] for p in parts]) for key in ("bound", "elbo", "kl")}


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):  # a stand-in model without weights computes on the CPU
        return torch.device("cpu")


def importance_weighted_bound(
    model,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image IWAE estimates L_k(x) of log p(x) in nats, (N,) float64 on the CPU.

    Arguments as :func:`bounds`.
    """
    return bounds(model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=generator)["bound"]


def elbo(
    model,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    k: int = 1,
    batch_size: int = 100,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image ELBO E_q[log p(x|z)] - KL(q(z|x) || p(z)) in nats, (N,) float64 on the CPU.

    For the N(0, I) prior the KL is exact and the reconstruction term is averaged over ``k``
    draws (k = 1: the single-sample estimate the training loss uses); for a VampPrior the
    whole log-weight is averaged over the draws. Arguments as :func:`bounds`.
    """
    return bounds(model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=generator)["elbo"]
