"""Pictures a person can read: enlarged grids that keep every pixel, words around them, the traversal's
order, the scatter's axes, what images are called, loss.png's units and how often progress grids come."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genlab.cli import main
from genlab.explore import Ranking, images_words, pair_rows, scatter
from genlab.models import build_model
from genlab.models.base import StepContext, StepNoise, TrainSettings
from genlab.models.gan import PRESETS as GAN_PRESETS
from genlab.models.vae import VAEConfig
from genlab.sample import grid_image, labelled_grid, save_grid, upscale_factor
from genlab.training.callbacks import SNAPSHOTS, progress_every


def digits(n: int, seed: int = 0) -> torch.Tensor:
    """n random 28x28 'images' whose pixels are exact multiples of 1/255, so a PNG holds them exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255


# -- enlarged grids ------------------------------------------------------------------------------
def test_upscale_factor_makes_a_digit_84_px_and_leaves_big_grids_alone():
    assert upscale_factor(28, 242) == 3  # samples.png: 8 x 8 digits, 242 px -> 726 px
    assert upscale_factor(32, 262) == 3  # 32x32 images
    assert upscale_factor(64, 522) == 2
    assert upscale_factor(7, 100) == 4  # at most 4x
    assert upscale_factor(100, 500) == 1  # already large
    assert upscale_factor(28, 602) == 3  # a 20 x 20 manifold: 1806 px still fits
    assert upscale_factor(28, 3002) == 1  # 100 columns: wide enough as it is


def test_an_enlarged_grid_is_an_exact_repeat_that_gives_back_every_image():
    images = digits(10)
    small = np.asarray(grid_image(images, nrow=5))
    big = np.asarray(grid_image(images, nrow=5, scale=3))
    assert big.shape == (3 * small.shape[0], 3 * small.shape[1])
    assert np.array_equal(big[::3, ::3], small)
    assert np.array_equal(big, small.repeat(3, 0).repeat(3, 1))
    for k in range(10):  # each tile at 1:1 is the image, to the last 8-bit level
        r, c = divmod(k, 5)
        tile = small[2 + r * 30 : 2 + r * 30 + 28, 2 + c * 30 : 2 + c * 30 + 28]
        assert np.array_equal(tile, (images[k, 0] * 255).round().byte().numpy())


def test_save_grid_enlarges_by_the_factor_it_chose(tmp_path):
    images = digits(64)
    save_grid(images, tmp_path / "s.png", nrow=8)
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (726, 726)  # was 242 x 242
        assert np.array_equal(np.asarray(im)[::3, ::3], np.asarray(grid_image(images, nrow=8)))
    save_grid(images, tmp_path / "one.png", nrow=8, scale=1)
    assert Image.open(tmp_path / "one.png").size == (242, 242)


def test_words_go_left_and_above_and_the_grid_stays_exact_in_the_corner():
    images = digits(12)
    plain = np.asarray(grid_image(images, nrow=4, scale=3))
    im = labelled_grid(
        images,
        4,
        row_labels=["z[3]\nKL 2.1", "z[0]\nKL 1.5", "z[7]\nKL 0.2"],
        col_labels=["-3", "-1", "+1", "+3"],
        corner="offset",
        title="a title long enough to be wrapped onto a second line above a grid only 4 columns wide",
    )
    arr = np.asarray(im)
    gh, gw = plain.shape
    assert np.array_equal(arr[-gh:, -gw:], plain)
    assert arr.shape[0] > gh + 2 * 14 and arr.shape[1] > gw  # a title of two lines, column labels, a row label column
    assert (arr[: arr.shape[0] - gh] < 128).any() and (arr[:, : arr.shape[1] - gw] < 128).any()  # ink: words drawn
    many = labelled_grid(digits(40), 40, col_labels=[f"{v:+.3g}" for v in np.linspace(-3, 3, 40)])  # thinned
    assert np.asarray(many).shape[1] == np.asarray(grid_image(digits(40), 40, scale=1)).shape[1]  # 1202 px: 1x


def test_each_original_stands_above_its_reconstruction():
    top, bottom = digits(13, seed=1), digits(13, seed=2)
    grid = pair_rows(top, bottom, 10)
    assert grid.shape[0] == 40  # rows: 10 originals, 10 partners, 3 + 7 blanks, 3 + 7 blanks
    assert torch.equal(grid[:10], top[:10]) and torch.equal(grid[10:20], bottom[:10])
    assert torch.equal(grid[20:23], top[10:]) and torch.equal(grid[30:33], bottom[10:])
    assert (grid[23:30] == 1).all() and (grid[33:] == 1).all()


# -- what a picture says ---------------------------------------------------------------------------
def test_images_of_the_split_a_run_trained_on_are_not_called_held_out():
    own = images_words("mnist", "test", "mnist", "test")
    assert "training images" in own and "held-out" not in own
    assert images_words("mnist", "test", "mnist", "train") == "held-out images (test split)"
    assert images_words("mnist", "train", "mnist", "test") == "held-out images (train split)"
    assert images_words("fashion-mnist", "test", "mnist", "test") == "fashion-mnist test images"


def test_a_ranking_orders_dimensions_most_informative_first():
    ranking = Ranking(torch.tensor([0.1, 3.0, 0.1, 2.0, 5.0]), "how", "KL")
    assert ranking.order() == [4, 1, 3, 0, 2]  # not index order; ties keep it


def _vae(latent_dim: int):
    torch.manual_seed(0)
    return build_model("vae", VAEConfig(hidden=(16,), latent_dim=latent_dim)).eval()


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_the_scatters_axes_agree_with_its_title(latent_dim, tmp_path, monkeypatch):
    import genlab.plots as plots

    seen = {}
    real_save = plots.save_figure

    def keep(fig, path):
        ax = fig.axes[0]
        seen.update(x=ax.get_xlabel(), y=ax.get_ylabel(), title=ax.get_title())
        real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    words = images_words("mnist", "test", "mnist", "test")
    scatter(_vae(latent_dim), digits(50), torch.arange(50) % 10, tmp_path / "s.png", images_words=words)
    assert (tmp_path / "s.png").stat().st_size > 0
    assert "50 training images" in seen["title"] and "held-out" not in seen["title"]
    if latent_dim == 2:
        assert (seen["x"], seen["y"]) == ("z[0]", "z[1]") and "principal" not in seen["title"]
    else:
        assert seen["x"].startswith("PC1") and seen["y"].startswith("PC2") and "principal directions" in seen["title"]


def test_latent_png_of_a_run_trained_on_the_test_split_says_training_images(mnist_dir, tmp_path, monkeypatch):
    import genlab.plots as plots

    titles = []
    real = plots.plot_latent_scatter
    monkeypatch.setattr(plots, "plot_latent_scatter", lambda *a, **k: titles.append(k["title"]) or real(*a, **k))
    args = ["train", "vae", "--preset", "seed", "--data-dir", str(mnist_dir), "--split", "test", "--max-steps", "5"]
    assert main([*args, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert len(titles) == 1 and "training images (the test split this run trained on)" in titles[0], titles
    with Image.open(tmp_path / "r" / "manifold.png") as im:  # 20 x 20 digits at 3x, labelled axes
        assert im.width > 3 * 602 and im.height > 3 * 602


# -- loss.png --------------------------------------------------------------------------------------
def _panels(monkeypatch, metrics: Path, labels) -> list[tuple[str, str]]:
    import genlab.plots as plots

    seen: list[tuple[str, str]] = []

    def keep(fig, path):
        seen.extend((ax.get_title(), ax.get_ylabel()) for ax in fig.axes if ax.get_visible())
        seen.append(("suptitle", fig.get_suptitle()))
        plots.plt.close(fig)

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.plot_losses(metrics, Path("unused.png"), "vae / mlp", labels)
    return seen


def test_loss_png_puts_the_loss_first_and_names_each_unit(tmp_path, monkeypatch):
    import json

    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "".join(
            json.dumps({"step": s, "recon": 200.0 - s, "kl": 5.0 + s / 100, "loss": 205.0 - s, "diversity": 0.9}) + "\n"
            for s in (10, 20, 30)
        )
    )
    panels = _panels(monkeypatch, log, _vae(2).describe_logs())
    assert panels[0] == ("loss: -ELBO = recon + kl", "nats/image")
    assert panels[1] == ("recon: -log p(x|z), sum over pixels", "nats/image")
    assert panels[2] == ("kl: KL(q(z|x) || p(z))", "nats/image")
    assert panels[3][0].startswith("diversity: spread of the fixed progress batch") and panels[3][1]
    assert panels[-1] == ("suptitle", "vae / mlp")


def test_loss_png_shows_a_gans_own_figures_before_what_callbacks_logged(tmp_path, monkeypatch):
    import json

    log = tmp_path / "metrics.jsonl"
    lines = [{"step": 2, "diversity": 0.2}]  # the first progress grid comes before the first log line
    lines += [{"step": s, "loss_d": 1.0, "loss_g": 2.0, "d_real": 0.6, "d_fake": 0.4} for s in (4, 8)]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    model = build_model("gan", GAN_PRESETS["seed"].model)
    titles = [t.split(":")[0] for t, _ in _panels(monkeypatch, log, model.describe_logs())[:-1]]
    assert titles == ["loss_d", "loss_g", "d_real", "d_fake", "diversity"]


def test_a_vae_describes_what_it_logs_in_its_own_terms():
    beta = build_model("vae", VAEConfig(hidden=(16,), latent_dim=2, beta=4.0, kl_warmup_steps=100))
    assert beta.describe_logs()["loss"].what == "recon + beta kl, beta = 4, beta rising over 100 steps"
    tutorial = build_model("vae", VAEConfig(hidden=(16,), latent_dim=2, likelihood="mse", recon_reduction="mean"))
    labels = tutorial.describe_logs()
    assert labels["recon"] == ("squared error, mean over pixels", "nats/pixel, up to a constant")
    assert labels["loss"].unit == "per-pixel recon + per-image KL"


@pytest.mark.parametrize("loss", ["ns", "minimax", "hinge", "lsgan", "wgan-gp"])
def test_a_gan_describes_every_figure_it_logs(loss):
    torch.manual_seed(0)
    model = build_model("gan", dataclasses.replace(GAN_PRESETS["seed"].model, loss=loss))
    settings = TrainSettings(lr=2e-4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28, generator=g), torch.zeros(8, dtype=torch.long)
    out = model.train_step(
        model.networks(), model.configure_optimizers(settings), x, y, StepContext(0, StepNoise(g), settings)
    )
    labels = model.describe_logs()
    assert set(labels) == set(out.logs)
    assert "not a quality measure" in labels["loss_d"].what and all(label.unit for label in labels.values())
    assert ("nats" in labels["loss_g"].unit) == (loss in ("ns", "minimax"))


# -- progress grids --------------------------------------------------------------------------------
def test_a_short_run_gets_about_eight_progress_grids_and_a_long_one_the_familys():
    assert progress_every(500, 300) == 38 and SNAPSHOTS == 8  # 38, 76, ..., 266 and the last, 300
    assert progress_every(500, 100_000) == 500
    assert progress_every(500, 3) == 1
    assert progress_every(0, 300) == 0  # a family that draws none (a VAE) still draws none


def _train_gan(mnist_dir: Path, out: Path, *extra: str) -> None:
    args = ["train", "gan", "--preset", "seed", "--data-dir", str(mnist_dir), "--split", "test"]
    assert main([*args, "--max-steps", "16", "--batch-size", "32", "--out", str(out), "--quiet", *extra]) == 0


def test_progress_grids_show_a_short_run_and_never_change_its_weights(mnist_dir, tmp_path):
    _train_gan(mnist_dir, tmp_path / "often")
    steps = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "often" / "progress").glob("step-*.png"))
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16]
    with Image.open(tmp_path / "often" / "progress.png") as im:  # 8 rows of 8 digits, drawn 3x, labelled
        strip = np.asarray(im)
    grid_w, grid_h = 3 * (8 * 30 + 2), 3 * (8 * 30 + 2)
    assert strip.shape[0] > grid_h and strip.shape[1] > grid_w
    corner = strip[-grid_h:, -grid_w:][::3, ::3]
    for row, step in enumerate(steps):  # each row is the first row of that step's grid, pixel for pixel
        with Image.open(tmp_path / "often" / "progress" / f"step-{step:06d}.png") as im:
            first = np.asarray(im)[::3, ::3][2:30]
        assert np.array_equal(corner[2 + row * 30 : 30 + row * 30], first)
    # the grids draw from their own generator: a run without them ends with the same weights
    _train_gan(mnist_dir, tmp_path / "rarely", "--sample-every", "1000")
    assert len(list((tmp_path / "rarely" / "progress").glob("step-*.png"))) == 1  # the last step only
    a, b = load_file(tmp_path / "often" / "model.safetensors"), load_file(tmp_path / "rarely" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_strip_reads_grids_of_an_older_genlab_drawn_at_1_to_1(tmp_path):
    """A run begun by genlab 0.1 and resumed now holds 1:1 grids beside enlarged ones: both give their pixels."""
    from genlab.training.callbacks import _save_strip

    old, new = digits(64, seed=1), digits(64, seed=2)
    save_grid(old, tmp_path / "step-000010.png", nrow=8, scale=1)
    save_grid(new, tmp_path / "step-000020.png", nrow=8)
    _save_strip([tmp_path / "step-000010.png", tmp_path / "step-000020.png"], tmp_path / "progress.png", (1, 28, 28))
    with Image.open(tmp_path / "progress.png") as im:
        rows = np.asarray(im)[-3 * 62 :, -3 * 242 :][::3, ::3]
    assert np.array_equal(rows, np.asarray(grid_image(torch.cat([old[:8], new[:8]]), nrow=8)))
