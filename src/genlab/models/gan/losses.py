"""GAN losses as pure functions of the discriminator's logits, and the WGAN-GP gradient penalty.

With ``r = D(x)`` and ``f = D(G(z))`` as logits (s is the sigmoid):

==========  ===============================================  ==========================
loss        discriminator minimises                          generator minimises
==========  ===============================================  ==========================
ns          -log s(r) - log(1 - s(f))                        -log s(f)  (non-saturating)
minimax     -log s(r) - log(1 - s(f))                        log(1 - s(f))  (the paper's game)
hinge       max(0, 1 - r) + max(0, 1 + f)                    -f  (Lim & Ye 2017; Miyato 2018)
lsgan       (r - 1)^2 / 2 + f^2 / 2                          (f - 1)^2 / 2  (Mao et al. 2017)
wgan-gp     f - r + lambda * (|grad D(x_hat)| - 1)^2         -f  (Gulrajani et al. 2017)
==========  ===============================================  ==========================

``-log s(t) = softplus(-t)`` and ``-log(1 - s(t)) = softplus(t)``, so the cross-entropy
losses never form s(t), which saturates to 0 or 1 in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, eps: Tensor, y: Tensor | None = None) -> Tensor:
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


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """E[|grad_x D(x)|^2] on real images (Mescheder et al. 2018), differentiable in D's weights.

    ``real`` must be the tensor D's forward started from, with ``requires_grad``; the
    squared norm is summed in float32 whatever precision D ran in.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()
