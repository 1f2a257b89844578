"""Building blocks of the VAE's networks: dense stacks and the IAF step (a MADE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


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
        self.mask: Tensor
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
