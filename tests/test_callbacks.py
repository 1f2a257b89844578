"""Tests for genlab.training.callbacks: the progress grid and diversity watch, EMA, latent pictures.

The callbacks see a trainer only through a few attributes (model, run_dir, real_images), so a
small stand-in drives them here; tests/test_cli.py and tests/test_gan.py run them in real training.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from genlab.models import build_model
from genlab.models.base import StepContext, StepNoise, TrainSettings
from genlab.models.gan import GAN, PRESETS, GANConfig
from genlab.training.callbacks import (
    EMA,
    LatentPictures,
    ProgressGrid,
    default_callbacks,
    ema_decay_at,
    ema_update,
    mean_pairwise_distance,
)


@dataclasses.dataclass
class FakeTrainer:
    """What a callback reads from the trainer."""

    model: nn.Module
    run_dir: Path
    real_images: torch.Tensor
    step: int = 0
    device: torch.device = torch.device("cpu")
    metrics_log: None = None  # no TensorBoard here: test_reports.py reads the real one's events


def make(preset: str, **overrides) -> GAN:
    torch.manual_seed(0)
    return build_model("gan", dataclasses.replace(PRESETS[preset].model, **overrides))


def load_mnist(mnist_dir: Path, n: int) -> torch.Tensor:
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    return torch.from_numpy(raw[: n * 784].copy()).view(n, 1, 28, 28).float() / 255


def one_gan_step(model: GAN, step: int) -> None:
    opts = model.configure_optimizers(TrainSettings(lr=2e-4))
    g = torch.Generator().manual_seed(step + 1)
    x, y = torch.rand(8, 1, 28, 28, generator=g), torch.randint(10, (8,), generator=g)
    model.train_step(model.networks(), opts, x, y, StepContext(step, StepNoise(g), TrainSettings(lr=2e-4)))


def test_progress_grid_writes_grids_and_diversity(tmp_path: Path, mnist_dir: Path) -> None:
    images = load_mnist(mnist_dir, 500)
    model = make("dcgan", width=8)
    trainer = FakeTrainer(model, tmp_path, images)
    grid = ProgressGrid(every=100)
    grid.on_train_start(trainer)
    assert grid.real_diversity == pytest.approx(mean_pairwise_distance(images))
    out = [grid.on_progress(trainer, step) for step in (0, 100, 200)]
    one_gan_step(model, 0)
    out.append(grid.on_progress(trainer, 300))
    for step in (0, 100, 200, 300):
        png = tmp_path / "progress" / f"step-{step:06d}.png"
        assert png.is_file()
        assert Image.open(png).size == (3 * (2 + 8 * 30), 3 * (2 + 8 * 30))  # 8 x 8 of 28 px, 2 px apart, drawn 3x
    assert out[0] == out[1]  # the same fixed draws each time, and untrained weights did not move
    assert all(0 < o["diversity"] < 5 and o["collapsed"] in (0.0, 1.0) for o in out)
    summary: dict = {"warnings": []}
    grid.on_train_end(trainer, summary)
    assert (tmp_path / "progress.png").is_file() and (tmp_path / "diversity.png").is_file()
    with Image.open(tmp_path / "progress.png") as im:  # one row per progress step (3x), below a title
        strip = np.asarray(im)
    assert 3 * (2 + 4 * 30) < strip.shape[0] < 3 * (2 + 4 * 30) + 80
    rows = strip[-3 * (2 + 4 * 30) :, -3 * (2 + 8 * 30) :][::3, ::3]
    with Image.open(tmp_path / "progress" / "step-000300.png") as im:
        assert np.array_equal(rows[92:120], np.asarray(im)[::3, ::3][2:30])  # the last step's first row, exactly
    assert {"diversity", "collapsed", "warnings"} <= set(summary)
    assert summary["diversity"] == pytest.approx(out[-1]["diversity"])


def test_the_fixed_batch_is_the_gans_fixed_z(tmp_path: Path) -> None:
    """The progress batch decodes z ~ N(0, I) from a generator seeded 1234, as the GAN's fixed z always did."""
    model = make("dcgan", width=8)
    z = torch.randn(64, model.config.latent_dim, generator=torch.Generator().manual_seed(1234))
    expected = model.decode(z)
    assert torch.equal(ProgressGrid(1).fixed_batch(model), expected)


def test_collapsed_generator_gives_zero_diversity_and_a_warning(tmp_path: Path, mnist_dir: Path) -> None:
    images = load_mnist(mnist_dir, 300)
    model = make("seed")
    trainer = FakeTrainer(model, tmp_path, images)
    grid = ProgressGrid(every=10)
    grid.on_train_start(trainer)
    with torch.no_grad():
        model.generator.net[-3].weight.zero_()  # last Linear: every z gives tanh(bias), one image
    out = grid.on_progress(trainer, 10)
    assert out["diversity"] == pytest.approx(0.0, abs=1e-6) and out["collapsed"] == 1.0
    summary: dict = {"warnings": []}
    grid.on_train_end(trainer, summary)
    assert summary["collapsed"] and any("mode collapse" in w for w in summary["warnings"])
    assert "minibatch_std" in summary["warnings"][0]  # the family's own advice


def test_mean_pairwise_distance_known_answer() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]).view(3, 1, 1, 2)
    assert mean_pairwise_distance(pts) == pytest.approx((5 + 0 + 5) / 3)


def test_ema_callback_follows_the_warmed_up_decay(tmp_path: Path) -> None:
    model = make("dcgan", width=8)
    ema0 = [p.detach().clone() for p in model.generator_ema.parameters()]
    one_gan_step(model, 0)
    trainer = FakeTrainer(model, tmp_path, torch.zeros(2, 1, 28, 28), step=1)  # one step done
    EMA().on_step_end(trainer)
    decay = min(0.999, 1 / 10)  # step 0 of the warm-up
    assert ema_decay_at(0.999, 0) == decay and ema_decay_at(0.999, 10**6) == 0.999
    for e0, e, g in zip(ema0, model.generator_ema.parameters(), model.generator.parameters()):
        torch.testing.assert_close(e, decay * e0 + (1 - decay) * g)
    for be, bg in zip(model.generator_ema.buffers(), model.generator.buffers()):
        assert torch.equal(be, bg)  # BN statistics copied


def test_ema_update_is_the_formula_on_any_module() -> None:
    average, source = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in average.parameters()]
    ema_update(average, source, 0.9)
    for a0, a, s in zip(before, average.parameters(), source.parameters()):
        torch.testing.assert_close(a, 0.9 * a0 + 0.1 * s)


def test_callbacks_are_chosen_by_capability() -> None:
    from genlab.models.vae import PRESETS as VAE_PRESETS

    kinds = lambda cbs: {type(c) for c in cbs}  # noqa: E731
    assert kinds(default_callbacks(make("dcgan", width=8), 500)) == {EMA, ProgressGrid}
    assert kinds(default_callbacks(make("seed"), 0)) == set()  # no EMA, no progress grid asked for
    vae = build_model("vae", VAE_PRESETS["seed"].model)
    assert kinds(default_callbacks(vae, 0)) == {LatentPictures}
    assert kinds(default_callbacks(vae, 10)) == {ProgressGrid, LatentPictures}
    assert GANConfig().ema_decay == 0.0


def test_only_a_fall_in_diversity_warns_not_the_low_start_of_every_run(tmp_path: Path) -> None:
    """A short run's first progress grids come from barely trained weights: low, but not a fall."""
    model = make("seed")
    trainer = FakeTrainer(model, tmp_path, torch.rand(20, 1, 28, 28))
    grid = ProgressGrid(every=1)
    grid.on_train_start(trainer)
    values = iter([0.1, 0.2, 0.6, 0.1, 0.7])
    grid.diversity = lambda images: next(values)  # type: ignore[method-assign]
    for step in range(1, 6):
        grid.on_progress(trainer, step)
    assert grid.low_steps == ["step 4: diversity 0.100 < 0.25"]
    resumed = ProgressGrid(every=1)  # a resume at step 3 knows from diversity.jsonl that step 3 was diverse
    resumed.on_train_start(dataclasses.replace(trainer, step=3))
    assert resumed.was_diverse
    resumed.on_train_start(dataclasses.replace(trainer, step=2))
    assert not resumed.was_diverse
