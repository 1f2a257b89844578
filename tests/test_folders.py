"""Folder datasets (``--dataset folder:PATH``): decoding, the cache, bad files, and training through the CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main
from genlab.config import DataConfig
from genlab.data import load_dataset
from genlab.errors import ConfigError, DataError
from genlab.folders import is_heldout, load_folder


@pytest.fixture
def cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder cache goes under tmp (the cache is found through XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "genlab" / "datasets" / "folders"


def _noise_images(folder: Path, n: int, size: tuple[int, int], seed: int, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}{suffix if i % 3 else '.jpg'}")


@pytest.fixture(scope="module")
def mnist_pngs(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST test digits 0 and 1 re-saved as PNGs, one sub-folder per class."""
    root = tmp_path_factory.mktemp("digits")
    test = load_dataset("mnist", "test", data_dir=mnist_dir, download=False)
    for digit, name in ((0, "zero"), (1, "one")):
        (root / name).mkdir()
        rows = (test.labels == digit).nonzero().flatten()[:60]
        for i in rows.tolist():
            Image.fromarray(test.images[i, 0].numpy(), "L").save(root / name / f"{i}.png")
    return root


def test_labelled_folder_trains_a_conditional_model_through_the_cli(mnist_pngs, cache_env, tmp_path, monkeypatch):
    monkeypatch.chdir(mnist_pngs.parent)
    out = tmp_path / "run"
    common = ["--max-steps", "20", "--batch-size", "16", "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(["train", "gan", "--preset", "cgan", "--dataset", f"folder:{mnist_pngs.name}", *common]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dataset"] == f"folder:{mnist_pngs}"  # stored absolute
    assert config["model"]["image_shape"] == [1, 28, 28]  # every PNG is grayscale: one channel
    assert config["model"]["num_classes"] == 2 and config["model"]["conditional"]
    assert {"model.safetensors", "samples.png", "config.json"} <= {p.name for p in out.iterdir()}
    assert main(["sample", str(out), "-n", "4", "--label", "1", "--out", str(tmp_path / "ones.png")]) == 0
    assert Image.open(tmp_path / "ones.png").mode in ("L", "RGB")


def test_unlabelled_colour_folder_trains_an_unconditional_model(cache_env, tmp_path):
    folder = tmp_path / "photos"
    _noise_images(folder, 40, (48, 40), seed=1)
    out = tmp_path / "run"
    args = ["train", "vae", "--preset", "conv", "--dataset", f"folder:{folder}", "--image-size", "32"]
    args += ["--max-steps", "20", "--batch-size", "16", "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["image_shape"] == [3, 32, 32]
    assert config["data"]["image_size"] == 32
    assert not config["model"]["conditional"]
    assert Image.open(out / "samples.png").mode == "RGB"


def test_conditional_preset_on_an_unlabelled_folder_is_refused(cache_env, tmp_path, capsys):
    folder = tmp_path / "photos"
    _noise_images(folder, 12, (32, 32), seed=2)
    args = ["train", "gan", "--preset", "cgan", "--dataset", f"folder:{folder}", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "no class sub-folders" in capsys.readouterr().err


def test_a_size_the_network_cannot_take_names_what_fits(cache_env, tmp_path, capsys):
    folder = tmp_path / "photos"
    _noise_images(folder, 12, (48, 48), seed=3)
    args = ["train", "gan", "--preset", "dcgan", "--dataset", f"folder:{folder}", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "DCGAN supports 28x28, 32x32 and 64x64" in err and "48x48 with 3 channel(s)" in err and "--image-size" in err


def _all_rows(folder: Path, **options) -> dict[str, np.ndarray]:
    data = load_folder(folder, **options)
    return {name: np.asarray(data.images[i]) for i, name in enumerate(data.files)}


def test_mixed_png_jpeg_rgba_and_grayscale_decode_to_the_right_values(cache_env, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (8, 8), 100).save(folder / "gray.png")
    Image.new("RGB", (8, 8), (200, 30, 60)).save(folder / "rgb.jpg", quality=95)
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(folder / "clear.png")  # fully transparent: the white page
    Image.new("RGBA", (8, 8), (0, 0, 0, 128)).save(folder / "half.png")  # half black over white
    Image.new("LA", (8, 8), (0, 255)).save(folder / "la.png")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(folder / "deep.png")  # 16-bit gray
    (folder / "notes.txt").write_text("not read: only .png/.jpg/.jpeg files are")
    rows = _all_rows(folder)
    assert set(rows) == {"gray.png", "rgb.jpg", "clear.png", "half.png", "la.png", "deep.png"}
    assert all(r.shape == (3, 8, 8) and r.dtype == np.uint8 for r in rows.values())  # one colour image: 3 channels
    assert (rows["gray.png"] == 100).all()
    assert np.abs(rows["rgb.jpg"].astype(int) - np.array([200, 30, 60])[:, None, None]).max() <= 3
    assert (rows["clear.png"] == 255).all()
    assert (np.abs(rows["half.png"].astype(int) - 127) <= 1).all()
    assert (rows["la.png"] == 0).all()
    assert (rows["deep.png"] == 40000 >> 8).all()


def test_all_grayscale_gives_one_channel_and_resize_keeps_the_centre(cache_env, tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    wide = np.zeros((20, 40), dtype=np.uint8)
    wide[:, 10:30] = 200  # the centre square of the 40x20 image is all 200
    Image.fromarray(wide, "L").save(folder / "wide.png")
    Image.new("L", (30, 30), 50).save(folder / "square.jpg")
    rows = _all_rows(folder, image_size=10)
    assert rows["wide.png"].shape == (1, 10, 10)
    centre = rows["wide.png"].astype(int)
    assert (np.abs(centre[..., 2:8] - 200) <= 2).all() and centre.mean() > 185  # the black sides were cropped
    assert (np.abs(rows["square.jpg"].astype(int) - 50) <= 2).all()


def test_images_of_different_sizes_need_image_size(cache_env, tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    Image.new("RGB", (10, 10)).save(folder / "a.png")
    Image.new("RGB", (12, 10)).save(folder / "b.png")
    with pytest.raises(DataError, match="2 different sizes") as e:
        load_folder(folder)
    assert any("--image-size" in line for line in e.value.hint)


def test_split_is_by_path_hash_and_adding_files_moves_nothing(cache_env, tmp_path):
    folder = tmp_path / "set"
    _noise_images(folder, 60, (8, 8), seed=4)
    data = load_folder(folder)
    split_of = {name: ("train" if i < data.n_train else "test") for i, name in enumerate(data.files)}
    assert all(split_of[n] == ("test" if is_heldout(n) else "train") for n in split_of)
    assert 0 < len(data.files) - data.n_train < 20  # about 10 % held out
    Image.new("RGB", (8, 8)).save(folder / "new-one.png")
    grown = load_folder(folder)
    split_after = {name: ("train" if i < grown.n_train else "test") for i, name in enumerate(grown.files)}
    assert {n: split_after[n] for n in split_of} == split_of
    test = load_dataset(f"folder:{folder}", "test")
    assert len(test) == len(grown.files) - grown.n_train


def test_cache_is_reused_and_rebuilt_when_a_file_changes(cache_env, tmp_path, monkeypatch):
    folder = tmp_path / "set"
    _noise_images(folder, 10, (8, 8), seed=5)
    first = load_folder(folder)
    assert sorted(p.suffix for p in cache_env.iterdir()) == [".json", ".npy"]
    import genlab.folders as folders

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    with monkeypatch.context() as m:
        m.setattr(folders, "_build", no_rebuild)
        again = load_folder(folder)
    assert again.cache == first.cache and np.array_equal(again.images, first.images)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "img001.png")  # same name, new content
    changed = load_folder(folder)
    assert changed.cache != first.cache
    row = changed.files.index("img001.png")
    assert (np.asarray(changed.images[row])[0] == 255).all()
    assert load_folder(folder, image_size=4).cache not in (first.cache, changed.cache)  # settings are in the key


def _bomb_png() -> bytes:
    """A valid PNG header claiming 50,000 x 50,000 pixels, in a few dozen bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bad_folder(root: Path) -> Path:
    folder = root / "bad"
    _noise_images(folder, 12, (16, 16), seed=6)
    (folder / "empty.png").write_bytes(b"")
    whole = (folder / "img001.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("this is not a picture\n")
    Image.new("RGB", (16, 16)).save(folder / "gif.png", format="GIF")
    (folder / "bomb.png").write_bytes(_bomb_png())
    return folder


def test_every_bad_file_is_named_with_its_reason(cache_env, tmp_path):
    folder = _bad_folder(tmp_path)
    with pytest.raises(DataError, match="5 bad image file") as e:
        load_folder(folder)
    reasons = dict(line.split(": ", 1) for line in e.value.hint[:-1])
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["cut.png"].startswith("truncated or corrupt")
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["gif.png"] == "a GIF image; genlab reads PNG and JPEG"
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert "--skip-bad-images" in e.value.hint[-1]
    assert not cache_env.exists() or not list(cache_env.iterdir())  # nothing half-written


def test_skip_bad_images_trains_on_the_rest_with_a_warning(cache_env, tmp_path, capsys):
    folder = _bad_folder(tmp_path)
    out = tmp_path / "run"
    args = ["train", "gan", "--preset", "dcgan", "--dataset", f"folder:{folder}", "--image-size", "32"]
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    assert "5 bad image file(s)" in capsys.readouterr().err
    common = ["--skip-bad-images", "--max-steps", "2", "--batch-size", "4", "--device", "cpu"]
    assert main([*args, *common, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "5 bad image file(s)" in err and "skipped" in err and "bomb.png: decompression bomb" in err
    assert json.loads((out / "config.json").read_text())["data"]["skip_bad_images"] is True


def test_two_processes_building_one_cache_end_with_one_valid_cache(cache_env, tmp_path):
    folder = tmp_path / "set"
    _noise_images(folder, 150, (24, 24), seed=7)
    # Each process says it is ready, then waits for the other, so both builds run at the same time.
    script = (
        "import sys, time, pathlib; from genlab.folders import load_folder\n"
        "gate = pathlib.Path(sys.argv[2]); (gate / sys.argv[3]).touch()\n"
        "while len(list(gate.iterdir())) < 2: time.sleep(0.005)\n"
        "d = load_folder(sys.argv[1], image_size=16); print(d.cache, int(d.images.astype('int64').sum()))"
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(folder), str(gate), str(i)], env=env, stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1]
    assert sorted(p.name for p in cache_env.iterdir()) == sorted(
        Path(outputs[0][0]).stem + s for s in (".json", ".npy")
    )
    reread = load_folder(folder, image_size=16)
    assert int(reread.images.astype("int64").sum()) == int(outputs[0][1])


def test_data_config_keeps_folder_settings_to_folders():
    DataConfig(dataset="folder:/x", image_size=32, skip_bad_images=True).validate()
    with pytest.raises(ConfigError, match="folder datasets"):
        DataConfig(dataset="mnist", image_size=32).validate()
    with pytest.raises(ConfigError, match="train, test"):
        DataConfig(dataset="folder:/x", split="val").validate()


def test_default_run_directory_names_the_folder_not_its_path():
    from genlab.api import run_config
    from genlab.runs import default_run_dir

    run = run_config("vae", preset="mlp")
    run.data.dataset = "folder:/home/me/my-icons"
    assert default_run_dir(run).parent.name == "runs"
    assert default_run_dir(run).name.startswith("vae-mlp-my-icons-")
