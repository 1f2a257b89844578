"""Callbacks: what the training loop does besides optimising, kept out of the loop and the models.

The loop calls every callback at four points; each callback decides from the model's
capabilities (``genlab.models.base``) whether it has anything to do, never from its family:

- ``on_train_start``: once, on every process, before the first step (also after a resume);
- ``on_step_end``: after every optimiser step, on every process (:class:`EMA`);
- ``on_progress``: on the main process every ``sample_every`` steps and at the last step;
  returns scalars that the loop logs (:class:`ProgressGrid`);
- ``on_train_end``: on the main process after the final weights are saved; writes pictures
  into the run directory and adds to ``summary.json`` (:class:`ProgressGrid`, :class:`LatentPictures`,
  :class:`DenoisingStrip`).

Which callbacks a run gets is decided by :func:`default_callbacks`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..io import append_jsonl, atomic_write_bytes, read_jsonl
from ..models.base import DenoisingModel, EMAModel, EncoderModel, GenerativeModel

if TYPE_CHECKING:
    from .loop import Trainer

N_FIXED = 64  # latent vectors in the progress batch: an 8 x 8 grid
FIXED_SEED = 1234  # the progress batch is the same for every run of a config
STRIP_COLUMNS = 8  # fixed-batch images per row of progress.png (the first row of each grid)
STRIP_ROWS = 12  # at most this many progress steps in progress.png, evenly chosen
SNAPSHOTS = 8  # progress steps a short run gets at least, so that progress.png shows its evolution


def progress_every(family_default: int, total_steps: int) -> int:
    """Steps between progress grids when ``--sample-every`` is not given: the family's interval, shortened
    for a short run to total_steps / SNAPSHOTS so it still gets ~8 grids (a 300-step GAN got one: its last
    step). 0 (the family draws none) stays 0. The grids decode a fixed batch with their own generator, so
    how often they are drawn never changes the training."""
    if family_default <= 0:
        return 0
    return min(family_default, max(1, math.ceil(total_steps / SNAPSHOTS)))


class Callback:
    """Does nothing at every hook; subclasses override what they need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Once on every process before the first step (after a resume too)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After every optimiser step, on every process."""

    def on_progress(self, trainer: Trainer, step: int) -> dict[str, float]:
        """Main process, every ``sample_every`` steps and at the last: scalars to log."""
        return {}

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Main process, after the final weights: pictures, and additions to ``summary``."""


def default_callbacks(model: GenerativeModel, sample_every: int) -> list[Callback]:
    """The callbacks a run of ``model`` gets, chosen by capability."""
    callbacks: list[Callback] = []
    if isinstance(model, EMAModel) and model.ema_decay > 0 and model.ema_pairs():
        callbacks.append(EMA())
    if sample_every > 0:
        callbacks.append(ProgressGrid(sample_every))
    if isinstance(model, EncoderModel):
        callbacks.append(LatentPictures())
    if isinstance(model, DenoisingModel):
        callbacks.append(DenoisingStrip())
    return callbacks


# -- EMA of the weights ----------------------------------------------------------------------------
def ema_decay_at(decay: float, step: int) -> float:
    """min(decay, (1 + step) / (10 + step)): the warm-up of TensorFlow's ExponentialMovingAverage
    with num_updates, which keeps the average from dragging the random initial weights along for
    thousands of steps. ``step`` counts the optimiser steps before this update (0-based)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(average: nn.Module, source: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * source for every parameter; buffers (e.g. batch-norm
    running statistics) are copied, not averaged."""
    for pa, ps in zip(average.parameters(), source.parameters()):
        pa.lerp_(ps.detach(), 1.0 - decay)
    for ba, bs in zip(average.buffers(), source.buffers()):
        ba.copy_(bs)


class EMA(Callback):
    """Updates an :class:`~genlab.models.base.EMAModel`'s averaged copies after every step."""

    def on_step_end(self, trainer: Trainer) -> None:
        model = trainer.model
        assert isinstance(model, EMAModel)
        decay = ema_decay_at(model.ema_decay, trainer.step - 1)
        for average, source in model.ema_pairs():
            ema_update(average, source, decay)


# -- progress grids and the diversity watch --------------------------------------------------------
class ProgressGrid(Callback):
    """A fixed batch of 64 samples drawn every ``sample_every`` steps, and its diversity.

    The batch is ``model.sample(64)`` from a generator seeded 1234, so the same noise is decoded
    at every step (for a GAN: a fixed z batch, as in pytorch/examples' DCGAN) and grids compare
    across steps. Each goes to ``progress/step-XXXXXX.png``. Its *diversity* is the mean pairwise
    L2 distance between the 64 images divided by the same figure on 1,000 real held-out images
    (the training images when the run trained on the test split): a collapsed model, every draw
    giving nearly the same picture, scores near 0; real data 1. How often: :func:`progress_every`.
    Each progress step appends to ``progress/diversity.jsonl``; at the end ``progress.png`` (the
    first row of up to 12 grids, labelled by step) and ``diversity.png`` are drawn from those files,
    so a resumed run's pictures cover its whole history.
    """

    def __init__(self, every: int):
        self.every = every
        self.real_diversity = float("nan")
        self.low_steps: list[str] = []
        self.was_diverse = False  # diversity has reached the threshold at some progress step

    def on_train_start(self, trainer: Trainer) -> None:
        self.real_diversity = mean_pairwise_distance(trainer.real_images)
        self.low_steps = []
        threshold = trainer.model.collapse_threshold
        history = _read_history(Path(trainer.run_dir) / "progress" / "diversity.jsonl")  # before a resume
        self.was_diverse = any(h.get("diversity", 0.0) >= threshold for h in history if h["step"] <= trainer.step)

    def fixed_batch(self, model: GenerativeModel) -> Tensor:
        """The 64 fixed draws, (64, C, H, W) in [0, 1], on the CPU."""
        with torch.inference_mode():
            return model.sample(N_FIXED, generator=torch.Generator().manual_seed(FIXED_SEED)).float().cpu()

    def diversity(self, images: Tensor) -> float:
        """Mean pairwise L2 of ``images`` over that of the real images (NaN when unknown)."""
        ref = self.real_diversity
        return mean_pairwise_distance(images) / ref if ref > 0 else float("nan")

    def on_progress(self, trainer: Trainer, step: int) -> dict[str, float]:
        from ..sample import grid_image, save_grid

        model = trainer.model
        images = self.fixed_batch(model)
        out_dir = Path(trainer.run_dir) / "progress"
        save_grid(images, out_dir / f"step-{step:06d}.png", nrow=STRIP_COLUMNS)
        if trainer.metrics_log is not None:
            trainer.metrics_log.image("samples", np.asarray(grid_image(images, nrow=STRIP_COLUMNS, scale=None)), step)
        logs = {"pairwise_l2": mean_pairwise_distance(images)}
        div = self.diversity(images)
        if math.isfinite(div):
            collapsed = div < model.collapse_threshold
            logs |= {"diversity": div, "collapsed": float(collapsed)}
            # Only a fall counts: every generator starts with little diversity (near-constant images
            # from its first weights), and a short run's early progress grids would warn every time.
            if collapsed and self.was_diverse:
                self.low_steps.append(f"step {step}: diversity {div:.3f} < {model.collapse_threshold}")
            self.was_diverse |= not collapsed
        # appended, so on_train_end can draw the whole history even after a resume
        append_jsonl(out_dir / "diversity.jsonl", {"step": step, **logs})
        return logs

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        model, run_dir = trainer.model, Path(trainer.run_dir)
        threshold = model.collapse_threshold
        final = self.diversity(self.fixed_batch(model))
        collapsed = final < threshold
        summary.update({"diversity": final, "collapsed": collapsed})
        history = _read_history(run_dir / "progress" / "diversity.jsonl")
        grids = sorted((run_dir / "progress").glob("step-*.png"))
        if grids:
            _save_strip(grids, run_dir / "progress.png", model.image_shape)
        if any("diversity" in h for h in history):
            _plot_diversity(history, run_dir / "diversity.png", threshold)
        warnings = summary.setdefault("warnings", [])
        if collapsed:
            warnings.append(
                f"mode collapse: the generator's diversity is {final:.3f} of the real data's "
                f"(threshold {threshold}); its samples look alike. {model.collapse_advice()}"
            )
        elif self.low_steps:
            warnings.append(
                f"diversity fell below {threshold} during training ({len(self.low_steps)} progress "
                f"step(s), first {self.low_steps[0]}) but recovered."
            )


# -- pictures of a 2-D latent space ------------------------------------------------------------------
class LatentPictures(Callback):
    """For an encoder model with a 2-D latent: ``latent.png`` (held-out images' latents by label; the
    training images when the run trained on the test split) and ``manifold.png`` (the decoded latent
    plane), the tutorial's two figures."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from ..explore import images_words, latent_plane, manifold_labels
        from ..plots import plot_latent_scatter
        from ..sample import save_labelled_grid

        model = trainer.model
        assert isinstance(model, EncoderModel)
        if model.latent_dim != 2:
            return
        images, labels = trainer.heldout_images(5000)
        with torch.inference_mode():
            mu = torch.cat(
                [
                    model.encode_latent(x.to(trainer.device), y.to(trainer.device)).float().cpu()
                    for x, y in zip(images.split(1000), labels.split(1000))
                ]
            )
        active = f" ({summary['active_units']}/2 active)" if "active_units" in summary else ""
        run_dir, data = Path(trainer.run_dir), trainer.run.data
        # the trainer falls back to the training data when there is no other split to hold out
        split = data.split if trainer.heldout is trainer.data else "test"
        words = images_words(data.dataset, split, data.dataset, data.split)
        plot_latent_scatter(
            mu.numpy(), labels.numpy(), run_dir / "latent.png", title=f"latent means of {len(mu):,} {words}{active}"
        )
        save_labelled_grid(latent_plane(model, 20), run_dir / "manifold.png", nrow=20, **manifold_labels(20, 2))


# -- a model that draws in steps: the steps -----------------------------------------------------------
class DenoisingStrip(Callback):
    """For a :class:`~genlab.models.base.DenoisingModel`: ``denoising.png``, one row per sample from the
    starting noise (left) to the final image (right), drawn like ``samples.png`` (sampling weights and
    sampler, fixed seed), so the rows show what each stage of sampling contributes."""

    rows, frames = 8, 10

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from ..sample import save_grid

        model = trainer.model
        assert isinstance(model, DenoisingModel)
        g = torch.Generator().manual_seed(FIXED_SEED)
        path = model.denoising_trajectory(self.rows, self.frames, generator=g).float().cpu()  # (n, F, C, H, W)
        save_grid(path.flatten(0, 1), Path(trainer.run_dir) / "denoising.png", nrow=path.shape[1])


def mean_pairwise_distance(images: Tensor) -> float:
    """Mean L2 distance over all pairs of distinct images (N >= 2), pixels as given."""
    flat = images.detach().flatten(1).double().cpu()
    if flat.shape[0] < 2:
        return 0.0
    return float(torch.pdist(flat).mean())


def _first_row(png: Path, image_shape: tuple[int, int, int], pad: int = 2) -> Tensor:
    """The first :data:`STRIP_COLUMNS` images of a progress grid PNG, (k, C, H, W) in [0, 1], pixel for pixel:
    the file's enlargement (none in grids of genlab 0.1, so a resumed old run mixes both) is undone by
    taking every k-th pixel."""
    from PIL import Image

    c, h, w = image_shape
    with Image.open(png) as im:
        arr = np.asarray(im.convert("L" if c == 1 else "RGB"))
    k = max(1, arr.shape[1] // (STRIP_COLUMNS * (w + pad) + pad))
    arr = arr[::k, ::k].reshape(arr.shape[0] // k, arr.shape[1] // k, c)  # (H', W', C)
    tiles = [arr[pad : pad + h, pad + j * (w + pad) : pad + j * (w + pad) + w] for j in range(STRIP_COLUMNS)]
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255


def _save_strip(grids: list[Path], path: Path, image_shape: tuple[int, int, int]) -> None:
    """progress.png: the first row of up to STRIP_ROWS progress grids, evenly chosen, labelled by step."""
    from ..sample import save_labelled_grid

    idx = sorted(set(np.linspace(0, len(grids) - 1, min(len(grids), STRIP_ROWS)).round().astype(int)))
    rows = torch.cat([_first_row(grids[i], image_shape) for i in idx])
    steps = [int(grids[i].stem.split("-")[1]) for i in idx]
    save_labelled_grid(
        rows,
        path,
        nrow=STRIP_COLUMNS,
        row_labels=[f"step {s:,}" for s in steps],
        title=f"the first {STRIP_COLUMNS} of the fixed progress batch, decoded as training went on",
    )


def _read_history(path: Path) -> list[dict]:
    """Progress records by step; the last record wins when a resumed run repeated a step."""
    by_step = {rec["step"]: rec for rec in read_jsonl(path) if isinstance(rec.get("step"), int)}
    return [by_step[s] for s in sorted(by_step)]


def _plot_diversity(history: list[dict], path: Path, threshold: float) -> None:
    """diversity.png: diversity against step, the collapse threshold dashed (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [(h["step"], h["diversity"]) for h in history if "diversity" in h]
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label="generated / real")
    ax.axhline(threshold, color="red", ls="--", lw=1, label=f"collapse threshold {threshold}")
    ax.axhline(1.0, color="gray", ls=":", lw=1, label="real data")
    ax.set_xlabel("step")
    ax.set_ylabel("mean pairwise L2 (relative)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
