"""benchmarks/make_emoji_dataset.py: the colour dataset drawn from Debian's Noto Color Emoji.

The font is required, not optional: CI installs fonts-noto-color-emoji (.ci/run), so a missing
font fails here rather than silently skipping the checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genlab.data import load_dataset
from genlab.folders import is_heldout

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_emoji_dataset.py"
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
PER_CLASS = 5


def make(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True, timeout=120
    )


def files(root: Path) -> list[str]:
    """Every file under ``root``, relative, sorted (hidden ones included: nothing may be left behind)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def emoji32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not FONT.is_file():
        pytest.fail(f"{FONT} not found; apt-get install fonts-noto-color-emoji")
    out = tmp_path_factory.mktemp("emoji") / "emoji32"
    done = make(out, "--limit-per-class", str(PER_CLASS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"{len(files(out))} images of 32x32 in ")
    return out


def test_classes_and_images(emoji32: Path) -> None:
    classes = sorted(p.name for p in emoji32.iterdir())
    assert {"flags", "pictographs", "emoticons", "supplemental", "transport"} <= set(classes)
    assert len(classes) >= 7
    white_borders = 0
    for name in classes:
        pngs = sorted((emoji32 / name).iterdir())
        assert len(pngs) == PER_CLASS, name
        for path in pngs:
            assert path.suffix == ".png" and path.stem.startswith("u"), path
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32)), path
                pixels = np.asarray(image, dtype=np.float64)
            assert pixels.std() > 8, f"{path} looks blank"
            border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).min(axis=1)
            white_borders += bool(np.median(border) >= 240)
    # Cropped to its ink, a square picture (a keycap, a landscape) fills its frame, but most are on
    # white; alpha composited on black instead would leave none.
    assert white_borders >= 0.6 * len(classes) * PER_CLASS
    flags = [p.stem for p in (emoji32 / "flags").iterdir()]
    assert all(len(stem.split("-")) >= 2 for stem in flags), flags  # sequences, not lone letters


def test_names_and_pixels_are_stable_and_64_works(emoji32: Path, tmp_path: Path) -> None:
    again = make(tmp_path / "again", "--limit-per-class", str(PER_CLASS))
    assert again.returncode == 0, again.stderr
    assert files(tmp_path / "again") == files(emoji32)
    first = sorted(emoji32.rglob("*.png"))[0]
    assert (tmp_path / "again" / first.relative_to(emoji32)).read_bytes() == first.read_bytes()
    big = make(tmp_path / "big", "--size", "64", "--limit-per-class", "2")
    assert big.returncode == 0, big.stderr
    names = files(tmp_path / "big")
    assert names and set(names) <= set(files(emoji32))  # same names, whatever the size
    for name in names:
        with Image.open(tmp_path / "big" / name) as image:
            assert (image.mode, image.size) == ("RGB", (64, 64)), name


def test_refuses_a_non_empty_folder_and_overwrites_on_request(emoji32: Path, tmp_path: Path) -> None:
    out = tmp_path / "emoji"
    (out / "old-class").mkdir(parents=True)
    (out / "old-class" / "stale.png").write_bytes(b"x")
    refused = make(out, "--limit-per-class", "1")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "--overwrite" in refused.stderr
    assert files(out) == ["old-class/stale.png"]  # untouched
    replaced = make(out, "--limit-per-class", "1", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "old-class" not in {p.name for p in out.iterdir()}
    assert len(files(out)) == len(list(emoji32.iterdir()))  # one per class
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emoji"]  # no temporary folder left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make(empty, "--limit-per-class", "1").returncode == 0  # an empty folder is filled


def test_missing_font_exits_2_with_one_line(tmp_path: Path) -> None:
    done = make(tmp_path / "out", "--font", str(tmp_path / "no-such-font.ttf"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "fonts-noto-color-emoji" in done.stderr
    assert not (tmp_path / "out").exists()


def test_genlab_loads_it_as_a_labelled_folder_dataset(
    emoji32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    classes = sorted(p.name for p in emoji32.iterdir())
    paths = files(emoji32)
    train = load_dataset(f"folder:{emoji32}", "train")
    n_train = sum(not is_heldout(rel) for rel in paths)
    assert tuple(train.images.shape) == (n_train, 3, 32, 32)
    assert train.num_classes == len(classes) and train.class_names == tuple(classes)
    assert sorted(set(train.labels.tolist())) == list(range(len(classes)))
