"""A small U-Net for the noise-prediction network (Ronneberger et al. 2015, as adapted by Ho et al. 2020).

Residual blocks (GroupNorm, SiLU, 3x3 convs) take a sinusoidal embedding of the time index, plus a
learned class embedding when conditional; one level per ``channel_mult`` entry, halving the
resolution between levels (28-14-7 or 32-16-8) with the down path's activations passed to the
up path as skips; optional single-head self-attention at the lowest resolution. The last conv
starts at zero, so the untrained network predicts 0 (for eps: "no noise"; a stable start).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DDPMConfig


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer sinusoids of the time index (Vaswani et al. 2017), (B,) -> (B, dim), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _zero(conv: nn.Conv2d) -> None:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        _zero(self.conv2)  # each block starts as the identity: deep stacks train from step 1
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # (B, c_in, H, W), (B, E) -> (B, c_out, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, residual (as at 16x16 in Ho et al.)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        _zero(self.out)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)  # (B, HW, C) each
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """(x_t (B, C, H, W), t (B,) [, labels (B,)]) -> the target's prediction (B, C, H, W).

    Labels index ``num_classes + 1`` embeddings; the last, :attr:`null_class`, means "no label":
    the unconditional prediction that classifier-free guidance extrapolates away from.
    """

    def __init__(self, cfg: DDPMConfig):
        super().__init__()
        c_img = cfg.image_shape[0]
        ch, g, drop = cfg.channels, cfg.groups, cfg.dropout
        emb = 4 * ch
        self.base = ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.null_class = cfg.num_classes
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb) if cfg.conditional else None
        self.inp = nn.Conv2d(c_img, ch, 3, padding=1)
        widths = [ch * m for m in cfg.channel_mult]
        last = len(widths) - 1
        self.down = nn.ModuleList()
        skips = [ch]
        c = ch
        for i, w in enumerate(widths):
            for _ in range(cfg.res_blocks):
                self.down.append(
                    _Level(ResBlock(c, w, emb, g, drop), Attention(w, g) if cfg.attention and i == last else None)
                )
                c = w
                skips.append(c)
            if i < last:
                self.down.append(Downsample(c))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb, g, drop)
        self.mid_attn = Attention(c, g) if cfg.attention else None
        self.mid2 = ResBlock(c, c, emb, g, drop)
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.res_blocks + 1):
                self.up.append(
                    _Level(
                        ResBlock(c + skips.pop(), w, emb, g, drop),
                        Attention(w, g) if cfg.attention and i == last else None,
                    )
                )
                c = w
            if i > 0:
                self.up.append(Upsample(c))
        self.out_norm = nn.GroupNorm(g, c)
        self.out = nn.Conv2d(c, c_img, 3, padding=1)
        _zero(self.out)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base))  # (B, 4C)
        if self.label_emb is not None:
            if y is None:
                y = torch.full_like(t, self.null_class, dtype=torch.long)
            emb = emb + self.label_emb(y)
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb)
            hs.append(h)
        h = self.mid2(self._mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            h = layer(h, emb) if isinstance(layer, Upsample) else layer(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))

    def _mid_attn(self, h: Tensor) -> Tensor:
        return self.mid_attn(h) if self.mid_attn is not None else h


class _Level(nn.Module):
    """A residual block, then attention where the config asks for it."""

    def __init__(self, block: ResBlock, attn: Attention | None):
        super().__init__()
        self.block, self.attn = block, attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.block(x, emb)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
