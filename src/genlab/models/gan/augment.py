"""Differentiable augmentation of D's inputs (DiffAugment, Zhao et al. 2020).

D sees real *and* generated images through the same random, differentiable
transformations, in both players' steps, so G is never pushed to produce the
augmentations themselves (which augmenting only the real data would do). It
keeps D from memorising the training set, which is what stalls a GAN on small
data and long runs.

The policies are the paper's, on images in [-1, 1]:

===========  =====================================================================
translation  shift by up to 1/8 of the size in each axis, zeros (grey) filling in
cutout       zero one square of half the size at a random place (it may overhang)
color        brightness +-0.5, contrast x[0.5, 1.5] (saturation too for 3 channels)
===========  =====================================================================

All randomness comes from the caller's draws (``rand`` returning U[0, 1) of a
given shape), so a training step draws them from its step noise and stays
reproducible and split-invariant under torchrun.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

POLICIES = ("color", "translation", "cutout")

Uniform = Callable[..., Tensor]  # rand(*shape) -> U[0, 1) draws of that shape on the images' device


def _uniform_int(u: Tensor, low: int, high: int) -> Tensor:
    """Integers in [low, high] from U[0, 1) draws."""
    return (u * (high - low + 1)).floor().long().clamp_(max=high - low) + low


def color(x: Tensor, rand: Uniform) -> Tensor:
    b = x.shape[0]
    x = x + (rand(b, 1, 1, 1) - 0.5)  # brightness
    if x.shape[1] == 3:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand(b, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean  # contrast


def translation(x: Tensor, rand: Uniform, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _uniform_int(rand(b), -sh, sh).view(b, 1, 1)  # (B, 1, 1)
    dx = _uniform_int(rand(b), -sw, sw).view(b, 1, 1)
    # read pixel (i + dy, j + dx) of the image padded by one zero pixel; clamping lands off-image reads on the pad
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp_(0, h + 1)  # (B, H, 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp_(0, w + 1)  # (B, 1, W)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def cutout(x: Tensor, rand: Uniform, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _uniform_int(rand(b), 0, h - 1).view(b, 1, 1)  # the square's centre
    cx = _uniform_int(rand(b), 0, w - 1).view(b, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)  # (B, 1, H, W) mask


_APPLY = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policies: Sequence[str], rand: Uniform) -> Tensor:
    """``x`` (B, C, H, W) in [-1, 1] through each policy in turn, every sample with its own draws."""
    for name in policies:
        x = _APPLY[name](x, rand)
    return x


def parse_policies(text: str) -> tuple[str, ...]:
    """'translation,cutout' (or 'translation+cutout', for lists that commas already split) ->
    ('translation', 'cutout'); '' -> (); unknown names raise ValueError."""
    names = tuple(s.strip() for s in text.replace("+", ",").split(",") if s.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, unknown))}; choose from {', '.join(POLICIES)}")
    return names
