"""Sampling and export: image grids (PNG) and arrays (.npy)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .checkpoint import atomic_write_bytes
from .errors import GenlabError
from .models import GenerativeModel


@torch.inference_mode()
def generate(model: GenerativeModel, n: int, *, generator: torch.Generator | None = None,
             labels: Tensor | None = None, batch_size: int = 10_000) -> Tensor:
    """``n`` samples (n, C, H, W) float32 in [0, 1] on the CPU, drawn in batches."""
    if n < 1:
        raise GenlabError(f"number of samples must be >= 1, got {n}")
    model.eval()
    out = []
    for lo in range(0, n, batch_size):
        k = min(batch_size, n - lo)
        lab = labels[lo : lo + k] if labels is not None else None
        out.append(model.sample(k, labels=lab, generator=generator).float().cpu())
    return torch.cat(out).clamp_(0, 1)


def grid_image(images: Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """Tile (N, C, H, W) images in [0, 1] into one PIL image, ``nrow`` per row."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for k in range(n):
        r, col = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = images[k]
    arr = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if c == 1 else arr)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: Tensor, path: Path, nrow: int | None = None) -> None:
    atomic_write_bytes(Path(path), png_bytes(grid_image(images, nrow)))


def save_samples(images: Tensor, path: Path) -> None:
    """By extension: ``.png`` a grid, ``.npy`` a float32 (N, C, H, W) array in [0, 1]."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        save_grid(images, path)
    elif suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, images.detach().cpu().float().numpy().astype(np.float32), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise GenlabError(f"{path}: output must end in .png (a grid) or .npy (an array)")
