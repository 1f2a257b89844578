"""Latent-space pictures: each `genlab explore --what` on a real (tiny) run, and the latent arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from genlab.explore import (
    interpolation_latents,
    manifold,
    pca_2d,
    project_2d,
    reconstruct,
    slerp,
    traversal_latents,
    traverse,
)
from genlab.models import build_model
from genlab.models.vae import VAEConfig

PNG = b"\x89PNG\r\n\x1a\n"


def grid_size(rows: int, cols: int, side: int = 28, pad: int = 2) -> tuple[int, int]:
    """(width, height) of genlab.sample.grid_image's canvas at 1:1."""
    return cols * (side + pad) + pad, rows * (side + pad) + pad


def grid_at_1_to_1(im: Image.Image, size: tuple[int, int], k: int = 3, pad: int = 2) -> np.ndarray:
    """The grid of a picture explore wrote, back at 1:1: its bottom-right corner (words go left of it and
    above), which must be the grid enlarged ``k`` times by an exact nearest-neighbour repeat."""
    w, h = size
    arr = np.asarray(im)
    assert arr.shape[0] >= h * k and arr.shape[1] >= w * k, (arr.shape, size)
    block = arr[-h * k :, -w * k :]
    small = block[::k, ::k]
    assert np.array_equal(block, small.repeat(k, 0).repeat(k, 1))  # every pixel a k x k block
    assert (small[:pad] == 255).all() and (small[:, :pad] == 255).all()  # the grid's white frame: not shifted
    return small


@pytest.fixture(scope="module")
def run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mlp"
    assert (
        main(
            [
                "train",
                "vae",
                "--preset",
                "mlp",
                "--dataset",
                "mnist",
                "--data-dir",
                str(mnist_dir),
                "--split",
                "test",
                "--max-steps",
                "30",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize(
    "what,flags,size",
    [
        ("reconstruct", ["--n", "6"], grid_size(2, 6)),
        ("interpolate", ["--n", "3", "--steps", "5", "--mode", "slerp"], grid_size(3, 5 + 2)),
        ("traverse", ["--n", "4", "--steps", "7"], grid_size(4, 7)),
        ("manifold", ["--n", "5"], grid_size(5, 5)),
        ("scatter", ["--n", "500"], None),
    ],
)
def test_each_picture_is_a_png_of_the_expected_size(run, what, flags, size):
    assert main(["explore", str(run), "--what", what, *flags, "--quiet"]) == 0
    out = run / f"explore-{what}.png"
    assert out.read_bytes()[:8] == PNG
    with Image.open(out) as im:
        im.load()
        if size is not None:  # 28-px digits are drawn 3x, with words above and beside
            assert grid_at_1_to_1(im, size).shape == size[::-1]
        else:
            assert im.size[0] > 300 and im.size[1] > 300  # a matplotlib figure


def test_explore_refuses_to_overwrite_and_writes_where_told(run, tmp_path, capsys):
    target = tmp_path / "r.png"
    assert main(["explore", str(run), "--what", "reconstruct", "--out", str(target), "--quiet"]) == 0
    before = target.read_bytes()
    assert main(["explore", str(run), "--what", "reconstruct", "--out", str(target), "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == before
    assert (
        main(
            [
                "explore",
                str(run),
                "--what",
                "reconstruct",
                "--out",
                str(target),
                "--seed",
                "1",
                "--overwrite",
                "--quiet",
            ]
        )
        == 0
    )
    assert target.read_bytes() != before


@pytest.fixture(scope="module")
def gan_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dcgan"
    assert (
        main(
            [
                "train",
                "gan",
                "--preset",
                "dcgan",
                "--dataset",
                "mnist",
                "--data-dir",
                str(mnist_dir),
                "--split",
                "test",
                "--max-steps",
                "3",
                "--set",
                "model.width=8",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize(
    "what,flags,size",
    [
        ("interpolate", ["--n", "3", "--steps", "5", "--mode", "slerp"], grid_size(3, 5)),
        ("traverse", ["--n", "4", "--steps", "7"], grid_size(4, 7)),
    ],
)
def test_a_gan_is_a_latent_model_it_interpolates_and_traverses(gan_run, what, flags, size, tmp_path, capsys):
    out = tmp_path / f"{what}.png"
    assert main(["explore", str(gan_run), "--what", what, *flags, "--out", str(out)]) == 0
    assert grid_at_1_to_1(Image.open(out), size).shape == size[::-1]
    if what == "traverse":  # no encoder and no KL: ranked by how much each axis changes the image
        assert "image change per unit step" in capsys.readouterr().out


@pytest.mark.parametrize("what", ["reconstruct", "scatter", "manifold"])
def test_a_gan_has_no_encoder_and_says_so(gan_run, what, tmp_path, capsys):
    assert main(["explore", str(gan_run), "--what", what, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs a model with an encoder (an EncoderModel" in err, err
    assert not (tmp_path / "x.png").exists()


# -- the pure functions ------------------------------------------------------------------------
def test_slerp_starts_and_ends_at_the_inputs_latents():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    for mode in ("lerp", "slerp"):
        path = interpolation_latents(z0, z1, steps=7, mode=mode)
        assert path.shape == (4, 7, 8)
        assert torch.allclose(path[:, 0], z0, atol=1e-5) and torch.allclose(path[:, -1], z1, atol=1e-5)
    # Along the great circle, the norm interpolates between the end norms' range; a straight line shrinks.
    mid_s = slerp(z0, z1, torch.tensor([0.5]))[:, 0].norm(dim=-1)
    mid_l = interpolation_latents(z0, z1, 3, "lerp")[:, 1].norm(dim=-1)
    assert (mid_s > mid_l).all()
    # Parallel vectors fall back to the straight line instead of dividing by sin(0).
    same = slerp(z0[:1], 2 * z0[:1], torch.linspace(0, 1, 3))
    assert torch.isfinite(same).all() and torch.allclose(same[0, 1], 1.5 * z0[0], atol=1e-5)


def test_each_traversal_row_changes_only_its_own_coordinate():
    z0 = torch.randn(6)
    values = torch.linspace(-3, 3, 5)
    z = traversal_latents(z0, [1, 4], values)
    assert z.shape == (2, 5, 6)
    for row, j in enumerate([1, 4]):
        changed = (z[row] != z0).any(0).nonzero().flatten().tolist()
        assert changed == [j]
        assert torch.allclose(z[row, :, j], z0[j] + values)


def _model(latent_dim):
    torch.manual_seed(0)
    return build_model("vae", VAEConfig(hidden=(16,), latent_dim=latent_dim)).eval()


def test_pictures_have_the_documented_layout():
    model = _model(5)
    x = torch.rand(3, 1, 28, 28)
    rec = reconstruct(model, x)
    assert rec.shape == (6, 1, 28, 28) and torch.equal(rec[:3], x)
    assert traverse(model, x[:1], dims=[0, 2], values=torch.linspace(-3, 3, 4)).shape == (8, 1, 28, 28)
    mu = torch.randn(200, 5) * torch.tensor([3.0, 0.1, 1.0, 0.1, 0.1])
    grid = manifold(model, 4, mu=mu)
    assert grid.shape == (16, 1, 28, 28) and 0 <= grid.min() and grid.max() <= 1
    assert manifold(_model(2), 3).shape == (9, 1, 28, 28)


def test_pca_finds_the_widest_directions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2000, 4, generator=g) * torch.tensor([0.1, 5.0, 0.1, 2.0])
    _, comps, std = pca_2d(mu)
    assert comps[0].abs().argmax() == 1 and comps[1].abs().argmax() == 3
    assert torch.allclose(std, torch.tensor([5.0, 2.0]), rtol=0.1)
    assert project_2d(mu).shape == (2000, 2) and torch.equal(project_2d(mu[:, :2]), mu[:, :2])


# -- the words around the pictures ------------------------------------------------------------
@pytest.fixture
def labelled(monkeypatch):
    """Every labelled grid explore writes: (images, nrow, labels) by file name."""
    import genlab.sample as sample

    written: dict[str, tuple] = {}
    real = sample.save_labelled_grid

    def keep(images, path, nrow, **labels):
        written[Path(path).name] = (images, nrow, labels)
        real(images, path, nrow, **labels)

    monkeypatch.setattr(sample, "save_labelled_grid", keep)
    return written


def test_traverse_rows_are_the_most_informative_dims_first_and_say_so(run, mnist_dir, labelled, tmp_path, capsys):
    from genlab.checkpoint import load_run
    from genlab.data import load_dataset
    from genlab.explore import _pick, informativeness

    out = tmp_path / "t.png"
    assert main(["explore", str(run), "--what", "traverse", "--n", "6", "--steps", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    model, _ = load_run(run)
    x, y = _pick(load_dataset("mnist", "test", data_dir=mnist_dir), 1000, 0)
    ranking = informativeness(model.eval(), x, y)
    dims = ranking.order()[:6]
    assert f"latent dims {dims} (most informative first" in printed
    assert dims != sorted(dims), "a 20-d VAE's KL ranking is not its index order; the picture would prove nothing"
    _, nrow, labels = labelled["t.png"]
    assert nrow == 5 and labels["col_labels"] == ["-3", "-1.5", "0", "+1.5", "+3"]
    assert [label.split("\n")[0] for label in labels["row_labels"]] == [f"z[{j}]" for j in dims]
    kls = [float(label.split()[-1]) for label in labels["row_labels"]]
    assert kls == sorted(kls, reverse=True) and labels["row_labels"][0].split("\n")[1].startswith("KL ")
    assert "training images (the test split this run trained on)" in labels["title"]


def test_reconstruct_marks_each_original_and_its_reconstruction(run, labelled, tmp_path):
    out = tmp_path / "r.png"
    assert main(["explore", str(run), "--what", "reconstruct", "--n", "12", "--out", str(out), "--quiet"]) == 0
    images, nrow, labels = labelled["r.png"]
    assert nrow == 10 and images.shape[0] == 40  # two pairs of rows: 10 + 2 originals, each above its reconstruction
    assert labels["row_labels"] == ["original", "reconstruction", "original", "reconstruction"]
    assert "12 training images" in labels["title"] and "held-out" not in labels["title"]
    grid = grid_at_1_to_1(Image.open(out), grid_size(4, 10))
    first = (images[0, 0] * 255).round().byte().numpy()
    assert np.array_equal(grid[2:30, 2:30], first)  # the first original, pixel for pixel


def test_a_run_trained_on_train_calls_the_test_images_held_out(run, labelled, tmp_path):
    import json

    config = json.loads((run / "config.json").read_text())
    other = tmp_path / "run"
    other.mkdir()
    for name in ("model.safetensors", "config.json"):
        (other / name).write_bytes((run / name).read_bytes())
    config["data"]["split"] = "train"  # as if it had trained on the train split
    (other / "config.json").write_text(json.dumps(config))
    assert main(["explore", str(other), "--what", "reconstruct", "--n", "3", "--quiet"]) == 0
    assert labelled["explore-reconstruct.png"][2]["title"].startswith("3 held-out images (test split)")
