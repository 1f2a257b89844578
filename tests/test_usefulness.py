"""Tests for genlab.usefulness: CAS and the augmentation gain.

The "generators" here are stand-ins built from real Fashion-MNIST training images (a trained
model would take minutes): one that returns images of the asked class is as good as real data,
one that ignores the label is useless, one that never draws a class loses that class. A tiny
recipe (a few dozen steps) and 1,500 test images keep the file fast on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.usefulness as use
from genlab.cli import main
from genlab.data import load_dataset

TINY = use.Recipe(steps=30, batch_size=32, lr=2e-3)
N = 1000  # generated (and real) images per CAS: 100 a class


class RealImages(torch.nn.Module):
    """A stand-in conditional generator: asked for class c, it returns a real training image of class
    ``source[c]`` (by default c itself), drawn with the caller's generator; ``ignore_labels``: of any class."""

    conditional = True
    num_classes = 10
    device = torch.device("cpu")

    def __init__(self, train, *, source: dict[int, int] | None = None, ignore_labels: bool = False):
        super().__init__()
        self.images = train.images.float() / 255.0
        labels = train.labels
        self.pools = {c: torch.nonzero(labels == c).flatten() for c in range(10)}
        self.everything = torch.arange(len(labels))
        self.source = source or {}
        self.ignore_labels = ignore_labels

    def sample(self, n, labels=None, generator=None):
        out = []
        for c in labels.tolist():
            pool = self.everything if self.ignore_labels else self.pools[self.source.get(c, c)]
            out.append(pool[torch.randint(len(pool), (1,), generator=generator)])
        return self.images[torch.cat(out)]


@pytest.fixture(scope="module")
def fashion(fashion_dir):
    train = load_dataset("fashion-mnist", "train", data_dir=fashion_dir)
    test = load_dataset("fashion-mnist", "test", data_dir=fashion_dir)
    small = dataclasses.replace(test, images=test.images[:1500], labels=test.labels[:1500])
    # the stand-in generators draw from the first half of train, the real arm from all of it
    half = dataclasses.replace(train, images=train.images[:30000], labels=train.labels[:30000])
    return {"train": train, "test": small, "pool": half}


def cas(fashion, model, **kw):
    return use.classification_accuracy_score(model, fashion["train"], fashion["test"], n=N, recipe=TINY, **kw)


@pytest.fixture(scope="module")
def honest(fashion):
    """CAS of a generator that returns real training images of the asked class, with every classifier
    input recorded."""
    seen = []
    real_fit = use.fit_classifier

    def spy(images, labels, **kw):
        seen.append((np.array(images), np.array(labels)))
        return real_fit(images, labels, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(use, "fit_classifier", spy)
    try:
        result = cas(fashion, RealImages(fashion["pool"]), seed=0)
    finally:
        mp.undo()
    return result, seen


def test_training_never_touches_test_images(honest, fashion):
    result, seen = honest
    train, test = fashion["train"], fashion["test"]
    assert train.split == "train" and all("train-" in Path(p).name for p in train.sources.values())
    assert all("t10k" in Path(p).name for p in test.sources.values())
    assert len(seen) == 2  # one classifier on samples, one on real images; nothing else is trained
    generated, real = seen
    idx = use.per_class_draw(train.labels.numpy(), result["per_class_count"], 0)
    assert np.array_equal(real[0], train.images.numpy()[idx]) and np.array_equal(real[1], train.labels.numpy()[idx])
    assert generated[0].dtype == np.float32 and len(generated[0]) == N
    assert np.bincount(generated[1], minlength=10).tolist() == [N // 10] * 10  # class-balanced
    assert result["real_from"].startswith("fashion-mnist train")
    assert result["tested_on"].startswith("fashion-mnist test")


def test_real_images_as_the_generator_score_about_the_real_accuracy(honest):
    result, _ = honest
    assert result["real_accuracy"] > 0.6  # the tiny recipe still learns
    assert abs(result["cas"] - result["real_accuracy"]) < 0.06
    assert len(result["per_class"]["generated"]) == 10


def test_a_generator_that_ignores_the_label_scores_chance(fashion):
    result = cas(fashion, RealImages(fashion["pool"], ignore_labels=True), seed=0)
    assert result["cas"] < 0.2  # chance is 0.1 for 10 classes
    assert result["real_accuracy"] > 0.6


def test_a_dropped_class_shows_in_its_per_class_accuracy(fashion):
    # asked for trousers (1), the model draws sneakers (7): it never produces a trouser
    result = cas(fashion, RealImages(fashion["pool"], source={1: 7}), seed=0)
    per_class = result["per_class"]["generated"]
    assert per_class[1] < 0.05
    assert result["per_class"]["real"][1] > 0.7
    assert np.median([p for c, p in enumerate(per_class) if c not in (1, 7)]) > 0.6


def test_same_seed_same_figures(honest, fashion):
    again = cas(fashion, RealImages(fashion["pool"]), seed=0)
    first = {k: v for k, v in honest[0].items() if k != "seconds"}
    assert {k: v for k, v in again.items() if k != "seconds"} == first


def test_unconditional_models_are_refused_naming_the_conditional_presets(tmp_path, mnist_dir, capsys):
    run = tmp_path / "vae"
    args = ["train", "vae", "--preset", "mlp", "--data-dir", str(mnist_dir), "--split", "test"]
    assert main([*args, "--max-steps", "2", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["evaluate", str(run), "--cas", "-n", "100"], ["augment", str(run), "--real-per-class", "10"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("genlab: error:"), err
        assert "unconditional" in err[0]
        for name in use.conditional_presets():
            assert name in err[0]
    assert {"vae/cvae", "gan/cgan"} <= set(use.conditional_presets())


def test_augment_caches_arms_and_reruns_without_redoing_them(fashion, tmp_path, monkeypatch):
    model = RealImages(fashion["pool"])
    recipe = use.Recipe(steps=10, batch_size=32)
    calls = []
    real_train = use.train_and_score

    def counting(images, labels, test, **kw):
        calls.append((np.array(images), kw["seed"]))
        return real_train(images, labels, test, **kw)

    monkeypatch.setattr(use, "train_and_score", counting)
    test = dataclasses.replace(
        fashion["test"], images=fashion["test"].images[:500], labels=fashion["test"].labels[:500]
    )
    kw = dict(seeds=2, out=tmp_path, identity={"run": "stand-in"}, recipe=recipe)
    first = use.augmentation_gain(model, fashion["train"], test, real_per_class=[2, 5], synthetic_per_class=4, **kw)
    assert len(calls) == 8  # 2 k x 2 seeds x 2 arms
    # at each (k, seed) both arms share the real images, first in the pooled training set
    by = {(len(x), s): x for x, s in calls}
    for k in (2, 5):
        for s in (0, 1):
            assert np.array_equal(by[(10 * (k + 4), s)][: 10 * k], by[(10 * k, s)])
    assert len(list((tmp_path / "arms").glob("*.json"))) == 8
    saved = json.loads((tmp_path / "augment.json").read_text())
    assert saved == first and [r["real_per_class"] for r in saved["rows"]] == [2, 5]
    assert (tmp_path / "augment.png").read_bytes().startswith(b"\x89PNG")
    row = saved["rows"][0]
    gains = [100 * (b - a) for a, b in zip(row["real"]["values"], row["real+generated"]["values"], strict=True)]
    assert row["gain_points"]["mean"] == pytest.approx(np.mean(gains))

    calls.clear()
    again = use.augmentation_gain(model, fashion["train"], test, real_per_class=[2, 5], synthetic_per_class=4, **kw)
    assert calls == [] and again == first  # every arm came from the cache

    (tmp_path / "arms" / "k5-seed1-aug4.json").unlink()  # as if interrupted before that arm finished
    use.augmentation_gain(model, fashion["train"], test, real_per_class=[2, 5], synthetic_per_class=4, **kw)
    assert [(len(x), s) for x, s in calls] == [(90, 1)]

    calls.clear()  # another M: only the arms with generated images are trained again
    use.augmentation_gain(model, fashion["train"], test, real_per_class=[2, 5], synthetic_per_class=6, **kw)
    assert sorted(len(x) for x, _ in calls) == [80, 80, 110, 110]


def test_evaluate_cas_writes_metrics_and_a_report_section(tmp_path, fashion_dir, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(use, "DEFAULT_RECIPE", use.Recipe(steps=5, batch_size=32, test_batch=1000))
    real_train = use.train_and_score
    trained_on = []

    def on_fewer_test_images(images, labels, test, **kw):  # scoring all 10,000 would dominate the test's time
        trained_on.append((np.array(images), np.array(labels)))
        return real_train(
            images, labels, dataclasses.replace(test, images=test.images[:1000], labels=test.labels[:1000]), **kw
        )

    monkeypatch.setattr(use, "train_and_score", on_fewer_test_images)
    run = tmp_path / "cvae"
    args = ["train", "vae", "--preset", "cvae", "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir)]
    assert main([*args, "--max-steps", "3", "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--cas", "-n", "50", "--metrics", "is"]) == 0
    assert "CAS (top-1 accuracy) (%)" in capsys.readouterr().out
    result = json.loads((run / "metrics.json").read_text())
    row = next(r for r in result["summary"] if r["key"] == "cas")
    assert row["value"] == result["cas"]["cas"] and row["baselines"] == {"real": result["cas"]["real_accuracy"]}
    assert result["cas"]["per_class_count"] == [5] * 10 and len(result["cas"]["per_class"]["real"]) == 10
    page = (run / "report.html").read_text()
    assert "Classification Accuracy Score</h2>" in page and 'alt="CAS per class"' in page
    # CAS trains on the very samples the other metrics scored: what `genlab sample` draws with the same seed
    assert result["cas"]["samples"].startswith("the evaluation's")
    assert main(["sample", str(run), "-n", "50", "--seed", "0", "--out", str(tmp_path / "s.npy"), "--quiet"]) == 0
    generated, labels = trained_on[0]
    np.testing.assert_array_equal(generated, np.load(tmp_path / "s.npy"))
    np.testing.assert_array_equal(labels, np.arange(50) % 10)


def test_a_diffusion_run_is_scored_and_augmented_as_its_sampling_flags_say(tmp_path, fashion_dir, monkeypatch):
    """CAS and augment draw with --sampler/--steps/--guidance, record them, and never reuse an arm whose
    generated images were drawn another way."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real_train = use.train_and_score

    def tiny_and_counted(images, labels, test, **kw):
        calls.append(len(images))
        small = dataclasses.replace(test, images=test.images[:500], labels=test.labels[:500])
        return real_train(images, labels, small, **{**kw, "recipe": use.Recipe(steps=5, batch_size=32)})

    monkeypatch.setattr(use, "train_and_score", tiny_and_counted)
    run = tmp_path / "ddpm-cond"
    tiny = ["--set", "model.channels=8", "--set", "model.channel_mult=[1,2]", "--set", "model.timesteps=100"]
    tiny += ["--set", "model.attention=false", "--set", "model.preview_steps=1", "--set", "model.sample_steps=2"]
    args = ["train", "ddpm", "--preset", "ddpm-cond", "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir)]
    assert main([*args, *tiny, "--max-steps", "2", "--batch-size", "8", "--out", str(run), "--quiet"]) == 0

    drawn = {"sampler": "ddim", "steps": 3, "eta": 0.0, "guidance": 1.5}
    assert (
        main(["evaluate", str(run), "--cas", "-n", "20", "--metrics", "is", "--steps", "3", "--guidance", "1.5"]) == 0
    )
    result = json.loads((run / "metrics.json").read_text())
    assert result["source"]["sampling"] == drawn and result["cas"]["sampling"] == drawn
    assert result["cas"]["samples"].startswith("the evaluation's")
    assert "sampled with ddim, 3 steps, eta 0, guidance 1.5" in (run / "report.html").read_text()

    augment = ["augment", str(run), "--real-per-class", "2", "--synthetic-per-class", "2", "--seeds", "1", "--quiet"]
    calls.clear()
    assert main([*augment, "--steps", "3"]) == 0
    assert sorted(calls) == [20, 40]  # the real arm and the mixed one
    assert json.loads((run / "augment" / "augment.json").read_text())["sampling"] == {**drawn, "guidance": 2.0}
    calls.clear()
    assert main([*augment, "--steps", "3"]) == 0
    assert calls == []  # both arms from the cache
    assert main([*augment, "--steps", "4"]) == 0
    assert calls == [40]  # generated images drawn another way: that arm again; the real arm still cached
