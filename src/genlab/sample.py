"""Sampling and export: image grids (PNG) and arrays (.npy)."""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import GenlabError
from .io import atomic_write_bytes, fsync_dir, remove_quietly, why
from .models import GenerativeModel

MAX_GRID = 10_000  # images in one PNG grid: beyond that a grid is unreadable, and .npy is the format
# A 28x28 digit at 1:1 is a speck on a modern screen: grids are enlarged by an integer nearest-neighbour
# factor (so every original pixel is a k x k block, recoverable exactly) until a tile is this wide ...
MIN_TILE_PX = 84
MAX_UPSCALE = 4
MAX_UPSCALED_PX = 2048  # ... unless that makes the grid wider than a screen; a large grid is readable as it is


def _batches(
    model: GenerativeModel,
    n: int,
    generator: torch.Generator | None,
    labels: Tensor | None,
    batch_size: int,
    progress: bool = False,
):
    """Samples in batches of ``batch_size``, float32 in [0, 1] on the CPU: the one order every writer uses.

    ``progress``: a bar or plain lines on stderr (:mod:`genlab.progress`), batch by batch.
    """
    from .models.base import ChunkedSampler
    from .progress import Progress

    with Progress(n, desc="sample", unit="image", rate_unit="images", enabled=progress) as bar:
        for lo in range(0, n, batch_size):
            k = min(batch_size, n - lo)
            lab = labels[lo : lo + k] if labels is not None else None
            if isinstance(model, ChunkedSampler):  # minutes per batch: the bar moves chunk by chunk
                chunks, done = [], lo
                for chunk in model.sample_chunks(k, labels=lab, generator=generator):
                    chunks.append(chunk)
                    done += len(chunk)
                    bar.update(done)
                batch = torch.cat(chunks)
            else:
                batch = model.sample(k, labels=lab, generator=generator)
            yield lo, batch.float().cpu().clamp_(0, 1)
            bar.update(lo + k)


@torch.inference_mode()
def generate(
    model: GenerativeModel,
    n: int,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 10_000,
    progress: bool = False,
) -> Tensor:
    """``n`` samples (n, C, H, W) float32 in [0, 1] on the CPU, drawn in batches (``progress``: reported on stderr)."""
    if n < 1:
        raise GenlabError(f"number of samples must be >= 1, got {n}")
    model.eval()
    return torch.cat([batch for _, batch in _batches(model, n, generator, labels, batch_size, progress)])


@torch.inference_mode()
def stream_samples_npy(
    model: GenerativeModel,
    n: int,
    path: Path,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 10_000,
    progress: bool = False,
) -> tuple[int, ...]:
    """Write ``n`` samples to ``path`` as a float32 (n, C, H, W) ``.npy``, one batch at a time.

    The array is a memory-mapped file filled in place, so memory stays at one batch whatever
    ``n`` is; the samples equal :func:`generate`'s with the same generator. The file is written
    under a temporary name and renamed into place (a reader never sees half of it), after
    checking that it fits on the disk. Returns the array's shape. ``progress``: reported on stderr.
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
        for lo, batch in _batches(model, n, generator, labels, batch_size, progress):
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


def upscale_factor(tile: int, width: int) -> int:
    """The integer factor grids are enlarged by: the smallest that makes a ``tile``-pixel image at least
    :data:`MIN_TILE_PX` wide (28 px -> 3), at most :data:`MAX_UPSCALE`, and 1 when even 2x would make a
    ``width``-pixel grid wider than :data:`MAX_UPSCALED_PX`."""
    k = min(MAX_UPSCALE, max(1, math.ceil(MIN_TILE_PX / max(tile, 1))))
    while k > 1 and k * width > MAX_UPSCALED_PX:
        k -= 1
    return k


def grid_image(images: Tensor, nrow: int | None = None, pad: int = 2, scale: int | None = 1) -> Image.Image:
    """Tile (N, C, H, W) images in [0, 1] into one PIL image, ``nrow`` per row, ``pad`` white pixels apart.

    ``scale``: every pixel (padding included) becomes a ``scale`` x ``scale`` block, so
    ``np.asarray(im)[::scale, ::scale]`` is the grid at 1:1 exactly; None picks :func:`upscale_factor`.
    """
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
    k = upscale_factor(min(h, w), canvas.shape[2]) if scale is None else scale
    if k > 1:
        arr = arr.repeat(k, axis=0).repeat(k, axis=1)
    return Image.fromarray(arr[:, :, 0] if c == 1 else arr)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: Tensor, path: Path, nrow: int | None = None, scale: int | None = None) -> None:
    """A PNG grid of (N, C, H, W) images in [0, 1], enlarged by :func:`upscale_factor` unless ``scale`` is given."""
    atomic_write_bytes(Path(path), png_bytes(grid_image(images, nrow, scale=scale)))


LABEL_FONT_PX = 14  # readable beside 84-px tiles, small enough for a label per 90-px column


def _font(size: int):
    """DejaVu Sans, which matplotlib ships (so labels look alike on every machine), or PIL's own font."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (a longer word gets a line of its own)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def labelled_grid(
    images: Tensor,
    nrow: int,
    *,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    corner: str = "",
    title: str = "",
    pad: int = 2,
    scale: int | None = None,
) -> Image.Image:
    """:func:`grid_image` (enlarged by ``scale``, default :func:`upscale_factor`) with words around it.

    ``row_labels[i]`` (may hold line breaks) sits left of row i, ``col_labels[j]`` above column j
    (every second or third one when they do not fit), ``corner`` above the row labels, and ``title``
    above everything, wrapped to the picture's width. The grid is the picture's bottom-right corner,
    pixel for pixel: ``np.asarray(im)[-gh:, -gw:]`` is ``grid_image(images, nrow, pad, scale)``.
    """
    from PIL import ImageDraw

    _, _, h, w = images.shape
    cols = min(nrow, images.shape[0])
    k = upscale_factor(min(h, w), cols * (w + pad) + pad) if scale is None else scale
    grid = grid_image(images, nrow, pad, scale=k)
    font, gap = _font(LABEL_FONT_PX), 6
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    line_h = LABEL_FONT_PX + 4

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=font, spacing=2)
        return int(right - left), int(bottom - top)

    left_w = max([size(t)[0] for t in (*row_labels, corner) if t], default=-gap) + 2 * gap
    left_w = left_w if any(row_labels) or corner else 0
    cell_w, cell_h = (w + pad) * k, (h + pad) * k
    widest = max([size(t)[0] for t in col_labels if t], default=0)
    every = max(1, math.ceil((widest + gap) / cell_w)) if widest else 1
    header_h = line_h + gap if any(col_labels) or corner else 0
    title_lines = _wrap(measure, title, font, left_w + grid.width - 2 * gap) if title else []
    title_h = len(title_lines) * line_h + gap if title_lines else 0
    top_h = title_h + header_h
    canvas = Image.new(grid.mode, (left_w + grid.width, top_h + grid.height), "white")
    canvas.paste(grid, (left_w, top_h))
    draw, ink = ImageDraw.Draw(canvas), "black"
    for i, text in enumerate(title_lines):
        draw.text((gap, gap // 2 + i * line_h), text, fill=ink, font=font)
    if corner:
        draw.text((gap, title_h + gap // 2), corner, fill=ink, font=font)
    for j, text in enumerate(col_labels[:cols]):
        if text and j % every == 0:
            centre = left_w + pad * k + j * cell_w + (w * k) // 2
            draw.text((centre - size(text)[0] // 2, title_h + gap // 2), text, fill=ink, font=font)
    for i, text in enumerate(row_labels):
        if text:
            tw, th = size(text)
            middle = top_h + pad * k + i * cell_h + (h * k) // 2
            at = (left_w - gap - tw, middle - th // 2)
            draw.multiline_text(at, text, fill=ink, font=font, align="right", spacing=2)
    return canvas


def save_labelled_grid(images: Tensor, path: Path, nrow: int, **labels) -> None:
    """:func:`labelled_grid` written as a PNG (atomically)."""
    atomic_write_bytes(Path(path), png_bytes(labelled_grid(images, nrow, **labels)))


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
