"""Tests for genlab.metrics: closed-form answers, real-data sanity, and refusal of bad input.

Every metric is shown able to fail: real held-out data scores near the floor while noise,
blur, a collapsed generator (one image repeated) and a two-class generator score clearly
worse on the metrics that should see them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from genlab.errors import CheckpointError, GenlabError
from genlab.metrics import (
    check_images,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    holm_bonferroni,
    image_statistics,
    inception_score,
    kernel_inception_distance,
    ks_tests,
    memorization,
    mode_statistics,
    prdc,
)
from genlab.metrics.classifier import (
    accuracy,
    extract_features,
    load_classifier,
    predict_proba,
    save_classifier,
    train_classifier,
)
from genlab.metrics.inception import FIDInceptionV3, inception_features, load_fid_inception


def read_idx(path: Path, offset: int) -> np.ndarray:
    """Minimal IDX reader (offset 16 for images, 8 for labels); independent of genlab.data."""
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def sets(mnist) -> dict[str, np.ndarray]:
    """Real reference (2000), held-out real (1000) and four broken 'generators' (1000 each)."""
    images, labels = mnist
    x = images.astype(np.float32) / 255.0
    heldout = x[2000:3000]
    rng = np.random.default_rng(0)
    two = np.flatnonzero(np.isin(labels[2000:], [0, 1]))[:1000] + 2000
    return {
        "real": x[:2000],
        "heldout": heldout,
        "noise": rng.random(heldout.shape, dtype=np.float32),
        "blur": ndimage.uniform_filter(heldout, size=(1, 1, 5, 5)),
        "collapse": np.repeat(heldout[:1], 1000, axis=0),
        "two_classes": x[two],
    }


@pytest.fixture(scope="module")
def classifier(mnist):
    images, labels = mnist
    # 1 epoch on 4000 images disjoint from the evaluation sets: a few seconds on 2 cores.
    return train_classifier(images[6000:], labels[6000:], epochs=1, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def feats(classifier, sets) -> dict[str, np.ndarray]:
    return {k: extract_features(classifier, v) for k, v in sets.items()}


@pytest.fixture(scope="module")
def probs(classifier, sets) -> dict[str, np.ndarray]:
    return {k: predict_proba(classifier, v) for k, v in sets.items()}


BROKEN = ("noise", "blur", "collapse", "two_classes")


# ---------------------------------------------------------------- Fréchet distance / FID


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


def test_frechet_equal_covariances_is_squared_mean_distance():
    rng = np.random.default_rng(1)
    mu1, mu2, s = rng.normal(size=8), rng.normal(size=8), random_spd(rng, 8)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    want = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-6)


def frechet_reference(mu1, s1, mu2, s2) -> float:
    """An independent float64 computation: Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), the
    second a symmetric PSD matrix, so both square roots come from eigh (no scipy.linalg.sqrtm)."""

    def sqrt_psd(a):
        w, v = np.linalg.eigh(a)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = sqrt_psd(s1)
    cross = np.trace(sqrt_psd(r1 @ s2 @ r1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_frechet_non_commuting_covariances_match_an_independent_computation(seed):
    """Random SPD covariances do not commute, so the classic bug Tr(S1^(1/2) S2^(1/2)) gives another value."""
    from scipy import linalg

    rng = np.random.default_rng(seed)
    d = 6
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), random_spd(rng, d), random_spd(rng, d)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    want = frechet_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    wrong = float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1) @ linalg.sqrtm(s2)).real
    )
    assert abs(wrong - want) > 1e-3 * abs(want)  # the bug would be caught at this tolerance


def test_frechet_of_identical_gaussians_is_zero_not_a_hidden_negative():
    rng = np.random.default_rng(6)
    mu, s = rng.normal(size=6), random_spd(rng, 6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_singular_covariances_stay_finite():
    # Rank-1 covariances: the product's square root is not well defined without the offset.
    v = np.array([[1.0, 2.0, 0.0]])
    s = v.T @ v
    d = frechet_distance(np.zeros(3), s, np.ones(3), s)
    assert np.isfinite(d) and d == pytest.approx(3.0, abs=1e-3)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(GenlabError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(3).normal(size=(500, 16))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    mu, sigma = feature_statistics(f)
    assert mu.shape == (16,) and sigma.shape == (16, 16)


def test_fid_real_data(feats):
    base = fid_from_features(feats["real"], feats["heldout"])
    for name in BROKEN:
        worse = fid_from_features(feats["real"], feats[name])
        assert worse > 3 * base, (name, worse, base)


# ---------------------------------------------------------------- KID


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same = kernel_inception_distance(a, b, n_subsets=20, subset_size=300, seed=0)
    shifted = kernel_inception_distance(a, b + 0.5, n_subsets=20, subset_size=300, seed=0)
    assert abs(same["mean"]) < 0.02
    assert shifted["mean"] > 0.2 and shifted["mean"] > 10 * same["std"]
    assert same["subset_size"] == 300


def test_kid_is_seeded_and_caps_subset_size():
    f = np.random.default_rng(5).normal(size=(50, 4))
    a = kernel_inception_distance(f, f[::-1] + 0.1, n_subsets=5, seed=7)
    b = kernel_inception_distance(f, f[::-1] + 0.1, n_subsets=5, seed=7)
    assert a == b and a["subset_size"] == 50


def test_kid_real_data(feats):
    base = kernel_inception_distance(feats["real"], feats["heldout"], n_subsets=10)
    assert base["mean"] < 3 * base["std"] + 0.01
    for name in BROKEN:
        worse = kernel_inception_distance(feats["real"], feats[name], n_subsets=10)
        assert worse["mean"] > base["mean"] + 10 * base["std"] + 0.01, (name, worse, base)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_known_answers():
    assert inception_score(np.full((100, 10), 0.1), splits=5)["mean"] == pytest.approx(1.0)
    onehot = np.tile(np.eye(10), (100, 1))  # every chunk of 100 holds each class 10 times
    res = inception_score(onehot, splits=10)
    assert res["mean"] == pytest.approx(10.0) and res["std"] == pytest.approx(0.0, abs=1e-9)
    assert inception_score(np.tile(np.eye(10)[:1], (100, 1)), splits=1)["mean"] == pytest.approx(1.0)


def test_inception_score_real_data(probs):
    scores = {k: inception_score(p)["mean"] for k, p in probs.items()}
    assert scores["heldout"] > 6
    assert scores["collapse"] < 1.5
    assert scores["two_classes"] < 2.5


# ---------------------------------------------------------------- precision / recall / density / coverage


def test_prdc_identical_sets():
    f = np.random.default_rng(6).normal(size=(300, 8))
    r = prdc(f, f, k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    # each point lies in its own ball and its k neighbours': density = (k + 1) / k
    assert r["density"] == pytest.approx(6 / 5)


def test_prdc_chunking_does_not_change_results():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.3, 1, size=(150, 8))
    assert prdc(a, b, chunk_size=17) == prdc(a, b, chunk_size=1000)


def test_prdc_real_data(feats):
    base = prdc(feats["real"], feats["heldout"])
    assert base["precision"] > 0.6 and base["recall"] > 0.6 and base["coverage"] > 0.8
    collapse = prdc(feats["real"], feats["collapse"])
    assert collapse["recall"] < 0.05 and collapse["coverage"] < 0.05
    noise = prdc(feats["real"], feats["noise"])
    assert noise["precision"] < 0.1 and noise["density"] < 0.1
    two = prdc(feats["real"], feats["two_classes"])
    assert two["recall"] < 0.5 * base["recall"] and two["coverage"] < 0.5 * base["coverage"]


# ---------------------------------------------------------------- KS tests on image statistics


def test_holm_bonferroni_known_answer():
    got = holm_bonferroni([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_bonferroni_properties(p):
    adj = holm_bonferroni(p)
    p = np.asarray(p)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= 0)  # step-down keeps the order of the raw p-values


def test_image_statistics_of_a_single_pixel():
    img = np.zeros((1, 1, 28, 28), np.float32)
    img[0, 0, 5, 20] = 1.0
    s = image_statistics(img)
    assert s["center_x"][0] == 20 and s["center_y"][0] == 5
    assert s["ink_area"][0] == pytest.approx(1 / 784) and s["spread"][0] == 0
    blank = image_statistics(np.zeros((1, 28, 28), np.float32))
    assert blank["center_x"][0] == 13.5 and blank["mean_intensity"][0] == 0


def test_ks_real_data(sets, feats):
    base = ks_tests(sets["real"], sets["heldout"], real_features=feats["real"], fake_features=feats["heldout"])
    assert base["n_tests"] == 10 and base["n_differing"] <= 1
    noise = ks_tests(sets["real"], sets["noise"])
    flagged = {r["statistic"] for r in noise["tests"] if r["differs"]}
    assert {"ink_area", "mean_intensity", "edge_energy"} <= flagged
    blur = ks_tests(sets["real"], sets["blur"])
    assert next(r for r in blur["tests"] if r["statistic"] == "edge_energy")["differs"]
    assert blur["fraction_differing"] > base["fraction_differing"]
    json.dumps(noise)  # report-ready


# ---------------------------------------------------------------- modes


def test_mode_statistics_known_answers():
    uniform = mode_statistics(np.arange(1000) % 10)
    assert uniform["classes_covered"] == 10 and uniform["normalized_entropy"] == pytest.approx(1.0)
    assert uniform["kl_to_real"] == pytest.approx(0.0, abs=1e-12)
    two = mode_statistics(np.arange(1000) % 2, real_labels=np.arange(1000) % 10)
    assert two["classes_covered"] == 2 and two["kl_to_real"] == pytest.approx(np.log(5))
    assert two["missing_classes"] == [2, 3, 4, 5, 6, 7, 8, 9]


def test_mode_statistics_real_data(probs, mnist):
    _, labels = mnist
    res = {k: mode_statistics(p, real_labels=labels[:2000]) for k, p in probs.items()}
    assert res["heldout"]["classes_covered"] == 10 and res["heldout"]["kl_to_real"] < 0.05
    assert res["two_classes"]["classes_covered"] == 2
    assert res["collapse"]["classes_covered"] == 1 and res["collapse"]["normalized_entropy"] < 0.05


# ---------------------------------------------------------------- memorisation


def test_memorization_flags_training_copies(sets, mnist):
    train, heldout = sets["real"], sets["heldout"]
    copied = memorization(train[:300], train, heldout)
    assert copied["fraction_copies"] == 1.0 and copied["space"] == "pixel"
    assert copied["closest"][0]["distance"] == 0.0
    first = copied["closest"][0]
    assert first["train_index"] == first["sample_index"]
    unseen = mnist[0][3000:3300]  # real images in neither train nor heldout
    fresh = memorization(unseen, train, heldout)
    assert fresh["fraction_copies"] < 0.05 and fresh["median_ratio"] > 0.5


def test_memorization_in_feature_space(feats):
    res = memorization(feats["real"][:200], feats["real"], feats["heldout"], n_closest=3)
    assert res["space"] == "features" and res["fraction_copies"] == 1.0 and len(res["closest"]) == 3


# ---------------------------------------------------------------- classifier


def test_classifier_learns_and_round_trips(classifier, mnist, sets, tmp_path):
    images, labels = mnist
    acc = accuracy(classifier, images[:2000], labels[:2000])
    assert acc > 0.85
    path = tmp_path / "clf.safetensors"
    save_classifier(classifier, path, {"extractor": "genlab-cnn-mnist-test", "test_accuracy": acc})
    model, meta = load_classifier(path)
    assert meta["extractor"] == "genlab-cnn-mnist-test"
    np.testing.assert_allclose(
        extract_features(model, sets["heldout"][:50]), extract_features(classifier, sets["heldout"][:50])
    )
    assert extract_features(model, sets["heldout"][:4]).shape == (4, 128)


def test_load_classifier_refuses_non_safetensors(tmp_path, classifier):
    path = tmp_path / "clf.safetensors"
    save_classifier(classifier, path, {})
    torch.save({"x": torch.zeros(1)}, path)  # a pickle where safetensors is expected
    with pytest.raises(CheckpointError, match="cannot read"):
        load_classifier(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- FID Inception


def test_inception_layout_and_loading(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3()
    state = model.state_dict()
    for key in (
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_4a_3x3.bn.running_var",
        "Mixed_5b.branch5x5_2.conv.weight",
        "Mixed_6e.branch7x7dbl_5.bn.bias",
        "Mixed_7a.branch7x7x3_4.conv.weight",
        "Mixed_7c.branch3x3dbl_3b.bn.running_mean",
    ):
        assert key in state
    assert sum(k.endswith(".conv.weight") for k in state) == 94  # Inception-v3 trunk convs
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)

    # Mimic pytorch-fid's file: plain tensors, an unused fc layer, no BatchNorm counters.
    saved = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    saved["fc.weight"], saved["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    pth = tmp_path / "pt_inception.pth"
    torch.save(saved, pth)
    loaded = load_fid_inception(pth)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    out = inception_features(loaded, x)
    assert out.shape == (2, 2048) and np.isfinite(out).all()

    from safetensors.torch import save_file

    st = tmp_path / "pt_inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    from_st = load_fid_inception(st).state_dict()
    assert all(torch.equal(from_st[k], v) for k, v in loaded.state_dict().items())

    del saved["Mixed_6b.branch1x1.conv.weight"]
    saved["extra.weight"] = torch.zeros(1)
    torch.save(saved, pth)
    with pytest.raises(CheckpointError, match=r"1 missing .*Mixed_6b\.branch1x1\.conv\.weight.*1 unexpected"):
        load_fid_inception(pth)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 3, 28, 28), np.float32), "grayscale"),
        (np.zeros((28, 28), np.float32), "shape"),
        (np.zeros((4, 1, 32, 32), np.float32), "28x28"),
        (np.full((4, 1, 28, 28), np.nan, np.float32), "NaN"),
        (np.full((4, 1, 28, 28), np.inf, np.float32), "infinite"),
        (np.full((4, 1, 28, 28), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((4, 1, 28, 28), -0.1, np.float32), r"\[0, 1\]"),
        (np.zeros((4, 1, 28, 28), np.int32), "int32"),
        ([[0.0]], "numpy array"),
    ],
)
def test_check_images_rejects(bad, match):
    with pytest.raises(GenlabError, match=match):
        check_images(bad, "fake", metric="FID")


def test_check_images_accepts_uint8_and_3d():
    x = check_images(np.full((2, 28, 28), 255, np.uint8))
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32 and x.max() == 1.0
    assert check_images(torch.zeros(3, 1, 28, 28)).shape == (3, 1, 28, 28)


def test_too_few_samples_name_the_metric_and_minimum():
    f = np.zeros((5, 4))
    with pytest.raises(GenlabError, match="FID needs at least 2 samples"):
        fid_from_features(f[:1], f)
    with pytest.raises(GenlabError, match=r"k=5 needs at least 6 samples"):
        prdc(f, np.ones((10, 4)))
    with pytest.raises(GenlabError, match="KID needs at least 2"):
        kernel_inception_distance(f[:1], f)
    with pytest.raises(GenlabError, match="Inception Score needs at least 10"):
        inception_score(np.full((5, 10), 0.1))


def test_metrics_reject_bad_arrays():
    with pytest.raises(GenlabError, match="NaN"):
        fid_from_features(np.full((4, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(GenlabError, match="same extractor"):
        prdc(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(GenlabError, match="logits"):
        inception_score(np.random.default_rng(0).normal(size=(20, 10)))
    with pytest.raises(GenlabError, match=r"\[0, 1\]"):
        ks_tests(np.zeros((4, 1, 28, 28), np.float32), np.full((4, 1, 28, 28), 2.0, np.float32))
    with pytest.raises(GenlabError, match="labels must lie"):
        mode_statistics(np.array([0, 11]))
    with pytest.raises(GenlabError, match="all three"):
        memorization(np.zeros((3, 4)), np.zeros((3, 1, 2, 2)), np.zeros((3, 4)))
