"""Sampling and export: image grids (PNG) and arrays (.npy)."""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import GenlabError
from .io import atomic_write_bytes, fsync_dir, remove_quietly, why
from .models import GenerativeModel

MAX_GRID = 10_000  # images in one PNG grid: beyond that a grid is unreadable, and .npy is the format


def _batches(model: GenerativeModel, n: int, generator: torch.Generator | None, labels: Tensor | None, batch_size: int):
    """Samples in batches of ``batch_size``, float32 in [0, 1] on the CPU: the one order every writer uses."""
    for lo in range(0, n, batch_size):
        k = min(batch_size, n - lo)
        lab = labels[lo : lo + k] if labels is not None else None
        yield lo, model.sample(k, labels=lab, generator=generator).float().cpu().clamp_(0, 1)


@torch.inference_mode()
def generate(
    model: GenerativeModel,
    n: int,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 10_000,
) -> Tensor:
    """``n`` samples (n, C, H, W) float32 in [0, 1] on the CPU, drawn in batches."""
    if n < 1:
        raise GenlabError(f"number of samples must be >= 1, got {n}")
    model.eval()
    return torch.cat([batch for _, batch in _batches(model, n, generator, labels, batch_size)])


@torch.inference_mode()
def stream_samples_npy(
    model: GenerativeModel,
    n: int,
    path: Path,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 10_000,
) -> tuple[int, ...]:
    """Write ``n`` samples to ``path`` as a float32 (n, C, H, W) ``.npy``, one batch at a time.

    The array is a memory-mapped file filled in place, so memory stays at one batch whatever
    ``n`` is; the samples equal :func:`generate`'s with the same generator. The file is written
    under a temporary name and renamed into place (a reader never sees half of it), after
    checking that it fits on the disk. Returns the array's shape.
    """
    if n < 1:
        raise GenlabError(f"number of samples must be >= 1, got {n}")
    path = Path(path)
    shape = (n, *model.image_shape)
    need = math.prod(shape) * 4 + 4096
    folder = path.parent if str(path.parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {why(e)}") from None
    if need > free:
        raise GenlabError(
            f"{n:,} samples of {shape[1:]} take {need / 2**30:,.2f} GiB as float32 but "
            f"{folder} has {free / 2**30:,.2f} GiB free; ask for fewer (-n)"
        )
    model.eval()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {why(e)}") from None
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for lo, batch in _batches(model, n, generator, labels, batch_size):
            array[lo : lo + batch.shape[0]] = batch.numpy()
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(folder)
    except OSError as e:
        remove_quietly(Path(tmp))
        raise GenlabError(f"cannot write {path}: {why(e)}; the previous file, if any, is unchanged") from None
    except BaseException:
        remove_quietly(Path(tmp))
        raise
    return shape


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
