"""Tests for genlab.evaluate: real data beats noise on every metric, the CLI writes its files,
bad input is refused with one line and exit code 2, and the shipped classifiers are as good as
their JSON says.

Kept small (a few hundred samples) so the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.evaluate import (
    Extractor,
    evaluate_path,
    parse_metrics,
    reference_statistics,
    shipped_classifier_path,
    stats_cache_dir,
)
from genlab.metrics.classifier import accuracy, load_classifier

N = 400  # samples per evaluation: enough for every metric to separate real data from noise


@pytest.fixture(scope="module", autouse=True)
def stats_cache(tmp_path_factory):
    """Reference statistics go to a temporary cache shared by this file's tests (computed once)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("xdg-cache")
    mp.setenv("XDG_CACHE_HOME", str(root))
    yield root
    mp.undo()


# -- real images against noise ----------------------------------------------------------------
@pytest.fixture(scope="module")
def real_and_noise(fashion_dir, tmp_path_factory):
    """Evaluations of real Fashion-MNIST images (train split: unseen by the test reference) and of noise."""
    folder = tmp_path_factory.mktemp("fashion")
    real = load_dataset("fashion-mnist", "train", data_dir=fashion_dir).images[:N].numpy()  # uint8
    noise = np.random.default_rng(0).random((N, 1, 28, 28), dtype=np.float32)
    np.save(folder / "real.npy", real)
    np.save(folder / "noise.npy", noise)
    return {
        name: {r["key"]: r for r in ev.result["summary"]} | {"_result": ev.result}
        for name in ("real", "noise")
        for ev in [evaluate_path(folder / f"{name}.npy", dataset="fashion-mnist", data_dir=str(fashion_dir))]
    }


def test_every_metric_is_clearly_worse_for_noise(real_and_noise):
    real, noise = real_and_noise["real"], real_and_noise["noise"]
    # The CNN's features are unnormalised ReLUs, so distances are judged relative to each other
    # (measured: FID 14.9 vs 1469, KID 0.78 vs 1016 at n=400).
    assert real["fid"]["value"] < 0.05 * noise["fid"]["value"]
    assert real["kid"]["value"] < 0.01 * noise["kid"]["value"]
    assert real["is"]["value"] > 5 > 2 > noise["is"]["value"]
    for key in ("precision", "recall", "coverage"):
        assert real[key]["value"] > 0.8 and noise[key]["value"] < 0.5, key
    assert abs(real["density"]["value"] - 1) < 0.3 < abs(noise["density"]["value"] - 1)
    assert real["classes_covered"]["value"] == 10 > noise["classes_covered"]["value"]
    assert real["class_kl"]["value"] < 0.1 < noise["class_kl"]["value"]
    assert real["ks_differing"]["value"] <= 1 and noise["ks_differing"]["value"] >= 8
    # Noise is far from every training image; the real images ARE training images, and are caught.
    assert noise["memo_nn_ratio"]["value"] > 2 and noise["memo_copies"]["value"] == 0
    assert real["memo_copies"]["value"] == 1.0 and real["memo_nn_ratio"]["value"] < 0.01


def test_every_number_names_its_extractor_and_the_result_says_what_was_compared(real_and_noise):
    result = real_and_noise["real"]["_result"]
    assert result["dataset"] == "fashion-mnist" and result["n"] == N and result["seed"] == 0
    assert result["reference"]["split"] == "test" and result["genlab_version"]
    for row in result["summary"]:
        assert row["extractor"] in (*result["extractors"], "pixels"), row
    assert result["details"]["memo"]["train_set"] == "fashion-mnist train"
    json.dumps(result, allow_nan=False)  # metrics.json must be strict JSON


def test_reference_statistics_are_cached_by_extractor_and_content(tmp_path):
    calls = []

    def features(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, 300:308].astype(np.float64) + np.arange(len(x))[:, None] * 1e-3

    ext = Extractor(name="toy", sha256="ab" * 32, path="-", features=features)
    images = np.random.default_rng(1).integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)
    first = reference_statistics(ext, images, dataset="mnist", split="test")
    again = reference_statistics(ext, images, dataset="mnist", split="test")
    assert calls == [50] and np.allclose(first["mu"], again["mu"]) and again["features"].shape == (50, 8)
    cached = list(stats_cache_dir().glob("mnist-test-toy-abababababab-*.safetensors"))
    assert len(cached) == 1
    cached[0].write_bytes(b"broken")  # a damaged cache file is recomputed, not trusted
    reference_statistics(ext, images, dataset="mnist", split="test")
    reference_statistics(ext, images[:40], dataset="mnist", split="test")  # other content: other key
    assert calls == [50, 50, 40]


# -- the CLI on trained runs ------------------------------------------------------------------
def _train(family: str, preset: str, out: Path, mnist_dir: Path) -> Path:
    assert (
        main(
            [
                "train",
                family,
                "--preset",
                preset,
                "--dataset",
                "mnist",
                "--data-dir",
                str(mnist_dir),
                "--split",
                "test",
                "--max-steps",
                "20",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def runs(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "vae": _train("vae", "mlp", root / "vae-mlp", mnist_dir),
        "gan": _train("gan", "seed", root / "gan-seed", mnist_dir),
    }


def test_evaluate_a_run_writes_metrics_and_a_self_contained_report(runs, capsys):
    run = runs["vae"]
    assert main(["evaluate", str(run), "-n", "300", "--nll", "--k", "4", "--nll-images", "50"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "genlab-cnn-mnist-v1" in out and "note:" in out
    result = json.loads((run / "metrics.json").read_text())
    assert result["dataset"] == "mnist" and result["n"] == 300 and result["source"]["family"] == "vae"
    assert {r["key"] for r in result["summary"]} >= {
        "fid",
        "kid",
        "is",
        "precision",
        "recall",
        "density",
        "coverage",
        "classes_covered",
        "ks_differing",
        "memo_copies",
        "iwae_nll",
    }
    assert result["nll"]["k"] == 4 and result["nll"]["n_images"] == 50
    # The run trained on MNIST's test split, and the report must say what that means.
    assert any("trained on the mnist test split" in n for n in result["notes"])
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # samples, class histogram, closest training images
    for word in (
        "FID",
        "KID",
        "precision",
        "coverage",
        "Inception Score",
        "Kolmogorov",
        "lower",
        "higher",
        "trained on the mnist test split",
    ):
        assert word in page, word
    assert 'src="http' not in page and "<script" not in page  # self-contained


def test_evaluate_png_folder_with_a_metric_subset(tmp_path, mnist_dir, capsys):
    from PIL import Image

    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:60, 0].numpy()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{i:03d}.png")
    assert (
        main(
            [
                "evaluate",
                str(tmp_path),
                "--dataset",
                "mnist",
                "--data-dir",
                str(mnist_dir),
                "--metrics",
                "modes,is",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["key"] for r in result["summary"]] == ["is", "classes_covered", "class_kl"]
    assert result["n"] == 60 and (tmp_path / "report.html").is_file() and capsys.readouterr().out == ""


def test_inception_numbers_come_beside_the_classifier_ones(tmp_path, mnist_dir, monkeypatch):
    """--inception adds rows named after that extractor (a toy stands in for the 100 MB network)."""
    import genlab.evaluate as ev

    def toy(path, *, device="cpu"):
        w = np.random.default_rng(0).standard_normal((784, 16))
        return Extractor(
            name="inception-v3-toy",
            sha256="cd" * 32,
            path=str(path),
            features=lambda x: x.reshape(len(x), -1).astype(np.float64) @ w,
        )

    monkeypatch.setattr(ev, "inception_extractor", toy)
    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:50].numpy()
    result = evaluate_path(
        _npy(tmp_path, images), dataset="mnist", data_dir=str(mnist_dir), metrics=["fid", "ks"], inception="weights.pth"
    ).result
    names = {(r["key"], r["extractor"]) for r in result["summary"]}
    assert names == {
        ("fid", "genlab-cnn-mnist-v1"),
        ("fid_inception", "inception-v3-toy"),
        ("ks_distance", "genlab-cnn-mnist-v1"),
        ("ks_differing", "genlab-cnn-mnist-v1"),
    }
    assert set(result["extractors"]) == {"genlab-cnn-mnist-v1", "inception-v3-toy"}


def test_compare_two_runs(runs, tmp_path, capsys):
    if not (runs["vae"] / "metrics.json").exists():  # the evaluate test did not run first (-k)
        assert main(["evaluate", str(runs["vae"]), "-n", "200", "--quiet"]) == 0
    (runs["gan"] / "metrics.json").unlink(missing_ok=True)
    out = tmp_path / "compare.html"
    assert main(["compare", str(runs["vae"]), str(runs["gan"]), "-n", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "is best on" in printed.out and "evaluating it now with n=200" in printed.err
    page = out.read_text()
    assert "vae-mlp" in page and "gan-seed" in page and "Which run is best, by metric" in page
    assert "evaluated on the fly with n=200" in page
    assert page.count("data:image/png;base64,") >= 3  # two sample grids and the training curves
    assert not (runs["gan"] / "metrics.json").exists()  # compare does not write into the runs


# -- bad input: one line on stderr, exit code 2 --------------------------------------------------
def _npy(tmp_path: Path, array) -> str:
    path = tmp_path / "x.npy"
    np.save(path, array, allow_pickle=True)
    return str(path)


GOOD = np.full((20, 1, 28, 28), 0.5, dtype=np.float32)


@pytest.mark.parametrize(
    "make, args, words",
    [
        (lambda t: _npy(t, np.zeros((20, 3, 28, 28), np.float32)), [], "shape"),
        (lambda t: _npy(t, np.zeros((20, 1, 32, 32), np.float32)), [], "28x28"),
        (lambda t: _npy(t, np.where(np.arange(20)[:, None, None, None] == 3, np.nan, GOOD)), [], "NaN"),
        (lambda t: _npy(t, GOOD * 255), [], "[0, 1]"),
        (lambda t: _npy(t, np.zeros((20, 1, 28, 28), np.int64)), [], "int64"),
        (lambda t: _npy(t, GOOD[:5]), [], "at least 10 samples"),
        (lambda t: _npy(t, np.array([{"a": 1}] * 3, dtype=object)), [], "pickled"),
        (lambda t: _npy(t, GOOD), ["--metrics", "fid,sharpness"], "unknown metric 'sharpness'"),
        (lambda t: _npy(t, GOOD), ["--dataset", "cifar10"], "unknown dataset"),
        (lambda t: str(t), [], "no .png images"),
        (lambda t: str(t / "missing.npy"), [], "no such"),
        (lambda t: _npy(t, GOOD), ["--nll"], "--nll needs a run directory whose model has a likelihood bound"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, capsys, make, args, words):
    target = make(tmp_path)
    rc = main(["evaluate", target, *(["--dataset", "mnist"] if "--dataset" not in args else []), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and words in err, err


def test_png_of_the_wrong_size_is_named(tmp_path, capsys):
    from PIL import Image

    Image.new("L", (32, 32)).save(tmp_path / "a.png")
    assert main(["evaluate", str(tmp_path), "--dataset", "mnist"]) == 2
    assert "a.png: images must be 28x28" in capsys.readouterr().err


def test_nll_without_genlab_nll_is_a_clear_error(monkeypatch, runs):
    import importlib.util

    from genlab.evaluate import Evaluation, add_nll

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "genlab.nll" else real(name, *a))
    ev = Evaluation(result={"dataset": "mnist", "summary": []}, samples=GOOD)
    with pytest.raises(GenlabError, match="genlab.nll"):
        add_nll(ev, runs["vae"], k=2, n_images=10, seed=0, device="cpu", data_dir=None)


def test_nll_on_a_model_without_a_likelihood_names_the_missing_capability(runs, capsys):
    assert main(["evaluate", str(runs["gan"]), "-n", "50", "--nll", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nll needs a model with a likelihood bound (a LikelihoodModel)" in err
    assert f"{runs['gan']} is a gan/seed run" in err
    assert not (runs["gan"] / "metrics.json").exists()  # refused before any sampling


def test_parse_metrics():
    assert parse_metrics("fid, KID,fid") == ["fid", "kid"]
    with pytest.raises(GenlabError, match="choose from"):
        parse_metrics(",")


def test_metric_names_come_from_the_registry():
    import genlab.evaluate as ev

    assert ev.METRICS == tuple(ev.METRIC_REGISTRY) == ("fid", "kid", "is", "pr", "ks", "modes", "memo")
    assert {m.name for m in ev.METRIC_REGISTRY.values() if m.per_extractor} == {"fid", "kid", "pr"}
    assert ev.METRIC_REGISTRY["memo"].min_samples == 2
    with pytest.raises(GenlabError, match="choose from fid,kid,is,pr,ks,modes,memo"):
        parse_metrics("sharpness")


def test_a_registered_metric_plugs_in_and_shared_inputs_are_computed_once(mnist_dir, monkeypatch):
    """A metric added to the registry is parsed, run and reported like the built-in ones; sample
    features and class probabilities are computed once, and only for metrics that need them."""
    import genlab.evaluate as ev

    calls = []
    shipped = ev.classifier_extractor

    def counting(dataset, path=None, *, device="cpu"):
        ext = shipped(dataset, path, device=device)
        features, probs = ext.features, ext.probs
        ext.features = lambda x: calls.append(("features", len(x))) or features(x)
        ext.probs = lambda x: calls.append(("probs", len(x))) or probs(x)
        return ext

    def toy(ctx, ext):
        mean = float(ctx.features(ext).samples.mean())
        return [ev._row("toy", "toy", mean, "higher", ext.name, "mean feature")]

    monkeypatch.setattr(ev, "classifier_extractor", counting)
    monkeypatch.setitem(ev.METRIC_REGISTRY, "toy", ev.Metric("toy", toy, rank=0, per_extractor=True))
    assert parse_metrics("toy, fid") == ["toy", "fid"]
    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:50].numpy()
    result = ev.evaluate_samples(  # no reference points: they score other images through the same network
        images, "mnist", metrics=["fid", "toy", "kid", "is", "modes"], data_dir=str(mnist_dir), baselines=False
    ).result
    assert [r["key"] for r in result["summary"]] == ["toy", "fid", "kid", "is", "classes_covered", "class_kl"]
    assert calls.count(("features", 50)) == 1 and calls.count(("probs", 50)) == 1
    calls.clear()
    ev.evaluate_samples(images, "mnist", metrics=["is", "memo"], data_dir=str(mnist_dir), baselines=False)
    assert calls == [("probs", 50)]  # no metric asked for features: none were computed


# -- the shipped classifiers ------------------------------------------------------------------
@pytest.mark.parametrize("dataset, minimum", [("fashion-mnist", 0.90), ("mnist", 0.95)])
def test_shipped_classifier_matches_its_recorded_accuracy(dataset, minimum, mnist_dir, fashion_dir):
    path = shipped_classifier_path(dataset)
    assert path.stat().st_size < 2_000_000 and path.with_suffix(".json").stat().st_size < 10_000
    model, meta = load_classifier(path)
    assert meta["extractor"] == f"genlab-cnn-{dataset}-v1" and meta["dataset"] == dataset
    test = load_dataset(dataset, "test", data_dir=mnist_dir if dataset == "mnist" else fashion_dir)
    if dataset == "mnist":  # only the test split exists here: trained on its first 8,000 images
        assert meta["trained_on"] == "mnist test[0:8000]" and meta["accuracy_on"] == "mnist test[8000:10000]"
    else:
        assert meta["trained_on"] == "fashion-mnist train" and meta["accuracy_on"] == "fashion-mnist test"
    # Measure on the last 2,000 test images: unseen by both networks, and quick.
    measured = accuracy(model, test.images[8000:], test.labels[8000:])
    assert measured >= minimum and meta["test_accuracy"] >= minimum
    assert abs(measured - meta["test_accuracy"]) < (1e-3 if dataset == "mnist" else 0.02)


def test_train_classifier_refuses_a_bad_or_existing_out(tmp_path, capsys):
    assert main(["train-classifier", "--dataset", "mnist", "--out", str(tmp_path / "c.pt")]) == 2
    (tmp_path / "c.safetensors").write_bytes(b"")
    assert main(["train-classifier", "--dataset", "mnist", "--out", str(tmp_path / "c.safetensors")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "must end in .safetensors" in err[0] and "--overwrite" in err[1]
