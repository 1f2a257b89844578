"""Metrics for folder datasets: `genlab train-classifier --dataset folder:PATH`, `evaluate --classifier`,
`compare` across extractors and `fid` on colour images of another size, through the real CLI.

The data is a labelled RGB folder drawn on the fly with Pillow: three classes of coloured shapes
(circles, squares, triangles) at 32x32 on light backgrounds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from genlab.cli import main
from genlab.data import load_dataset
from genlab.evaluate import Extractor, shipped_classifier_path
from genlab.metrics.classifier import extract_features, load_classifier, predict_proba

CLASSES = ("circle", "square", "triangle")
SIZE = 32


@pytest.fixture(scope="module", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory):
    """Folder caches and reference statistics go under tmp for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("cache")
        mp.setenv("XDG_CACHE_HOME", str(home))
        yield home


def _draw_shapes(root: Path, per_class: int = 70, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            background = tuple(int(v) for v in rng.integers(170, 256, 3))
            colour = tuple(int(v) for v in rng.integers(0, 150, 3))
            im = Image.new("RGB", (SIZE, SIZE), background)
            draw = ImageDraw.Draw(im)
            r = float(rng.uniform(7, 12))
            cx, cy = (float(v) for v in rng.uniform(r + 1, SIZE - r - 1, 2))
            box = (cx - r, cy - r, cx + r, cy + r)
            if cls == "circle":
                draw.ellipse(box, fill=colour)
            elif cls == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            im.save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return _draw_shapes(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def classifier(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifiers") / "shapes-cnn.safetensors"
    args = ["train-classifier", "--dataset", f"folder:{shapes}", "--image-size", str(SIZE), "--max-steps", "30"]
    args += ["--batch-size", "32"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae-shapes"
    args = ["train", "vae", "--preset", "conv", "--dataset", f"folder:{shapes}", "--image-size", str(SIZE)]
    assert (
        main([*args, "--max-steps", "20", "--batch-size", "16", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    )
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("genlab: error:") and err.count("\n") == 1, err
    return err


# -- train-classifier ---------------------------------------------------------------------------------
def test_train_classifier_learns_the_folder_and_records_what_evaluate_checks(shapes, classifier, capsys):
    side = json.loads(classifier.with_suffix(".json").read_text())
    assert side["config"]["channels"] == 3 and (side["config"]["height"], side["config"]["width"]) == (SIZE, SIZE)
    assert side["config"]["num_classes"] == 3
    meta = side["meta"]
    assert meta["class_names"] == list(CLASSES) and meta["image_size"] == SIZE and meta["max_steps"] == 30
    test = load_dataset(f"folder:{shapes}", "test", image_size=SIZE)
    assert meta["folder_key"] == Path(test.sources["cache"]).stem and meta["n_test"] == len(test)
    model, _ = load_classifier(classifier)
    pred = predict_proba(model, test.images.numpy()).argmax(axis=1)
    accuracy = float((pred == test.labels.numpy()).mean())
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-4)
    assert accuracy > 0.6, f"30 steps on three shapes should beat chance (1/3) clearly, got {accuracy}"
    with pytest.raises(Exception, match="must be 32x32"):  # the network reads the size it was trained at
        extract_features(model, np.zeros((2, 3, 28, 28), np.uint8))


def test_train_classifier_refuses_an_unlabelled_folder(tmp_path, capsys):
    folder = tmp_path / "loose"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (SIZE, SIZE), (i * 20, 0, 0)).save(folder / f"{i}.png")
    out = tmp_path / "c.safetensors"
    assert main(["train-classifier", "--dataset", f"folder:{folder}", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "no class sub-folders" in err and "no classes to learn" in err
    assert not out.exists()


# -- evaluate -----------------------------------------------------------------------------------------
def test_evaluate_a_folder_run_with_its_classifier(shapes, classifier, run, capsys):
    assert main(["evaluate", str(run), "--classifier", str(classifier), "-n", "60", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "metrics.json").read_text())
    sha = __import__("hashlib").sha256(classifier.read_bytes()).hexdigest()
    name = f"genlab-cnn-folder-shapes-v1-{sha[:8]}"
    assert result["dataset"] == f"folder:{shapes}" and result["reference"]["image_shape"] == [3, SIZE, SIZE]
    assert list(result["extractors"]) == [name]
    described = result["extractors"][name]
    assert described["input_shape"] == [3, SIZE, SIZE] and described["folder_key"]
    rows = {r["key"]: r for r in result["summary"]}
    assert {"fid", "kid", "is", "precision", "classes_covered", "ks_distance", "memo_copies"} <= set(rows)
    assert {r["extractor"] for r in result["summary"]} == {name, "pixels"}
    assert 1.0 <= rows["is"]["value"] <= 3.0 and 0 <= rows["classes_covered"]["value"] <= 3
    assert result["details"]["modes"]["class_names"] == list(CLASSES)
    assert all(np.isfinite(r["value"]) for r in result["summary"])
    assert name in printed and (run / "report.html").is_file()


def test_evaluate_a_folder_run_without_a_classifier_says_how_to_get_one(shapes, run, capsys):
    assert main(["evaluate", str(run), "-n", "20"]) == 2
    err = _one_error_line(capsys)
    assert f"genlab train-classifier --dataset folder:{shapes}" in err and "--inception FILE" in err


def _train_small_classifier(folder: Path, out: Path, *extra: str) -> Path:
    args = ["train-classifier", "--dataset", f"folder:{folder}", "--max-steps", "1", "--batch-size", "8"]
    args += ["--out", str(out), *extra]
    assert main([*args, "--device", "cpu"]) == 0
    return out


def test_evaluate_refuses_a_classifier_of_other_images(shapes, run, tmp_path, capsys):
    # a shipped 28x28 grayscale classifier of another dataset
    shipped = shipped_classifier_path("fashion-mnist")
    assert main(["evaluate", str(run), "--classifier", str(shipped), "-n", "20"]) == 2
    err = _one_error_line(capsys)
    assert "was trained on fashion-mnist, not on the images of folder:" in err
    # the same folder at another size
    at_16 = _train_small_classifier(shapes, tmp_path / "at16.safetensors", "--image-size", "16")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--classifier", str(at_16), "-n", "20"]) == 2
    err = _one_error_line(capsys)
    assert "reads 3x16x16 images" in err and "gives 3x32x32 images" in err and "--image-size 32" in err
    # the right size, but other files: the content key differs
    fewer = tmp_path / "fewer"
    shutil.copytree(shapes, fewer)
    (fewer / "circle" / "000.png").unlink()
    other = _train_small_classifier(fewer, tmp_path / "fewer.safetensors", "--image-size", str(SIZE))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--classifier", str(other), "-n", "20"]) == 2
    err = _one_error_line(capsys)
    assert "was trained on other images than" in err and "content key" in err


def test_samples_in_a_file_are_read_at_the_classifier_size(shapes, classifier, tmp_path, capsys):
    train = load_dataset(f"folder:{shapes}", "train", image_size=SIZE)
    npy = tmp_path / "real.npy"
    np.save(npy, train.images.numpy()[:50])  # real images, scored against the held-out ones
    args = ["evaluate", str(npy), "--dataset", f"folder:{shapes}", "--classifier", str(classifier)]
    assert main([*args, "--metrics", "fid,is", "--quiet"]) == 0
    result = json.loads((tmp_path / "real-metrics.json").read_text())
    rows = {r["key"]: r for r in result["summary"]}
    assert rows["fid"]["value"] > 0 and 1.0 <= rows["is"]["value"] <= 3.0
    assert result["reference"]["image_shape"] == [3, SIZE, SIZE] and result["source"]["kind"] == "npy"
    np.save(npy, np.zeros((20, 1, 28, 28), np.uint8))
    assert main([*args, "--metrics", "fid", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "it must have shape (N, 3, 32, 32)" in _one_error_line(capsys)


def test_inception_alone_scores_a_folder_run_without_class_metrics(run, monkeypatch, tmp_path):
    """--inception without --classifier: FID and the other feature metrics, IS and classes covered left
    out with a note (a toy stands in for the 100 MB network)."""
    import genlab.evaluate as ev

    w = np.random.default_rng(0).standard_normal((3 * SIZE * SIZE, 16))

    def toy(path, *, device="cpu"):
        return Extractor(
            name="inception-v3-toy", sha256="ab" * 32, path=str(path), features=lambda x: x.reshape(len(x), -1) @ w
        )

    monkeypatch.setattr(ev, "inception_extractor", toy)
    out = tmp_path / "inc"
    assert main(["evaluate", str(run), "--inception", "toy.pth", "-n", "40", "--quiet", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    keys = {r["key"] for r in result["summary"]}
    assert "fid" in keys and not keys & {"is", "classes_covered"}
    assert {r["extractor"] for r in result["summary"]} == {"inception-v3-toy", "pixels"}
    assert any("is, modes left out" in note for note in result["notes"])


# -- compare ------------------------------------------------------------------------------------------
def test_compare_never_sets_figures_of_different_extractors_side_by_side(
    classifier, run, monkeypatch, tmp_path, capsys
):
    import genlab.evaluate as ev

    if not (run / "metrics.json").is_file():  # the evaluate test did not run first (-k)
        assert main(["evaluate", str(run), "--classifier", str(classifier), "-n", "60", "--quiet"]) == 0
    twin = tmp_path / "vae-twin"
    shutil.copytree(run, twin)
    w = np.random.default_rng(1).standard_normal((3 * SIZE * SIZE, 8))
    toy = Extractor(name="inception-v3-toy", sha256="ef" * 32, path="toy", features=lambda x: x.reshape(len(x), -1) @ w)
    monkeypatch.setattr(ev, "inception_extractor", lambda path, *, device="cpu": toy)
    assert main(["evaluate", str(twin), "--inception", "toy.pth", "-n", "60", "--quiet"]) == 0
    out = tmp_path / "compare.html"
    assert main(["compare", str(run), str(twin), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "different feature extractors" in printed and "inception-v3-toy" in printed
    assert "Need at least two runs with comparable metrics" not in printed  # the pixel-space rows are shared
    page = out.read_text()
    fid_rows = [row for row in page.split("<tr>") if row.startswith('<td title="Fréchet')]
    assert len(fid_rows) == 2  # one FID row per extractor, each with one run's value and a dash
    for row in fid_rows:  # each has one run's value and a dash, and no winner
        assert row.count('<td class="num">—</td>') >= 1 and 'class="num best"' not in row
    # a folder run without metrics.json is not evaluated on the fly: compare has no classifier for it
    (twin / "metrics.json").unlink()
    assert main(["compare", str(run), str(twin), "--out", str(tmp_path / "again.html")]) == 2
    assert "cannot evaluate a run of folder:" in _one_error_line(capsys)


# -- fid ----------------------------------------------------------------------------------------------
def test_fid_on_colour_images_needs_a_classifier_of_their_shape(shapes, classifier, tmp_path, capsys):
    train = load_dataset(f"folder:{shapes}", "train", image_size=SIZE).images.numpy()
    a = tmp_path / "a"
    a.mkdir()
    for i, im in enumerate(train[:40]):
        Image.fromarray(im.transpose(1, 2, 0)).save(a / f"{i:03d}.png")
    b = tmp_path / "b.npy"
    np.save(b, train[40:100])
    assert main(["fid", str(a), str(b), "--classifier", str(classifier), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["extractor"]["name"].startswith("genlab-cnn-folder-shapes-v1-") and result["fid"] > 0
    assert result["a"]["n"] == 40 and result["b"]["n"] == 60
    assert main(["fid", str(a), str(b)]) == 2  # the shipped mnist classifier reads 1x28x28
    err = _one_error_line(capsys)
    assert "images must be 28x28" in err and "genlab-cnn-mnist-v1 reads 1x28x28 images" in err
    assert "--classifier FILE" in err and "--inception FILE" in err


# -- the shipped classifiers are unchanged ----------------------------------------------------------------
def _network_as_it_was(num_classes: int = 10) -> nn.Module:
    """genlab's 28x28 grayscale CNN as written before sizes varied (Flatten where the adaptive pool is now)."""
    net = nn.Module()
    net.body = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
    )
    net.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))
    return net.eval()


# Recorded with the code before this change (mnist test images 0-3): sum and sum of squares of the
# 128-d features, and the predicted classes.
RECORDED = {
    "mnist": (838.1486723013222, 8166.47451563309, [7, 2, 1, 0]),
    "fashion-mnist": (509.2542518506525, 3345.2670212453436, [5, 8, 1, 8]),
}


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@torch.no_grad()
def test_shipped_weights_give_the_features_they_always_did(dataset, mnist_dir):
    from safetensors.torch import load_file

    path = shipped_classifier_path(dataset)
    model, meta = load_classifier(path)
    assert model.config.input_shape == (1, 28, 28) and model.config.num_classes == 10  # sidecar defaults
    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:4].numpy()
    features = extract_features(model, images)
    old = _network_as_it_was()
    old.load_state_dict(load_file(str(path)), strict=True)  # the same weight names and shapes as ever
    x = torch.from_numpy(images).float() / 255
    expected = old.body(x * 2.0 - 1.0)
    assert np.array_equal(features, expected.double().numpy()), "features differ from the old layout's"
    probs = predict_proba(model, images)
    old_probs = torch.softmax(old.head(expected).double(), dim=1).numpy()
    assert np.array_equal(probs, old_probs)
    total, squares, classes = RECORDED[dataset]
    assert float(features.sum()) == pytest.approx(total, rel=1e-6)
    assert float((features**2).sum()) == pytest.approx(squares, rel=1e-6)
    assert probs.argmax(axis=1).tolist() == classes
