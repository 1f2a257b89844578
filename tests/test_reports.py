"""What a person reads: TensorBoard's event files, the reference points beside every metric,
the units and formats of report.html, and what compare highlights and warns about.

The events are read back with TensorBoard's own ``EventAccumulator``, as ``tensorboard`` would.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main


# -- TensorBoard -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tb_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tb") / "vae"
    args = ["train", "vae", "--preset", "mlp", "--dataset", "mnist", "--data-dir", str(mnist_dir)]
    args += ["--split", "test", "--max-steps", "20", "--log-every", "10", "--sample-every", "10"]
    assert main([*args, "--latent-dim", "8", "--out", str(out), "--quiet"]) == 0
    return out


def test_tensorboard_has_the_rate_the_grids_the_settings_and_one_kl_histogram(tb_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tb_run / "tensorboard"
    # one run in `tensorboard --logdir runs`: no sub-folder per latent dimension or per add_hparams call
    assert [p for p in folder.iterdir() if p.is_dir()] == []
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss", "kl", "lr"} <= set(tags["scalars"])
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([1e-3, 1e-3])  # the preset's constant rate
    assert [e.step for e in acc.Scalars("lr")] == [10, 20]
    assert tags["histograms"] == ["kl_per_dim"]
    kl = acc.Histograms("kl_per_dim")
    assert [e.step for e in kl] == [10, 20] and kl[-1].histogram_value.num == 8  # one value per latent dimension
    logged = [json.loads(x) for x in (tb_run / "metrics.jsonl").read_text().splitlines()]
    assert kl[-1].histogram_value.sum == pytest.approx(sum(logged[-1]["kl_per_dim"]), rel=1e-6)
    assert tags["images"] == ["samples"]
    grids = acc.Images("samples")
    assert [g.step for g in grids] == [10, 20] and grids[0].width >= 8 * 28 * 2  # 8 per row, enlarged
    assert "config/text_summary" in tags["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"preset": "mlp"' in text and '"latent_dim": 8' in text
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" in plugin
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.latent_dim"].number_value == 8 and start.hparams["train.lr"].number_value == 1e-3
    assert start.hparams["preset"].string_value == "mlp"


# -- reference points beside every metric -----------------------------------------------------------
@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """Reference statistics and points go to a temporary cache shared by this file's tests."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("xdg-cache")
    mp.setenv("XDG_CACHE_HOME", str(root))
    yield root
    mp.undo()


SCORED = ["fid", "kid", "pr", "is", "ks", "modes", "memo"]


@pytest.fixture(scope="module")
def mnist_eval(mnist_dir, cache_root):
    """200 real MNIST test images scored as samples (MNIST here has no train split: the half-test floor)."""
    from genlab.data import load_dataset
    from genlab.evaluate import evaluate_samples

    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:200].numpy()
    return evaluate_samples(images, "mnist", metrics=SCORED, data_dir=str(mnist_dir))


def test_every_metric_but_memorisation_has_a_real_floor_and_a_blurred_mark(mnist_eval, cache_root):
    result = mnist_eval.result
    rows = {r["key"]: r for r in result["summary"]}
    for key, row in rows.items():
        if key.startswith("memo"):  # its own yardstick is real held-out data already
            assert "baselines" not in row
        else:
            assert set(row["baselines"]) == {"real", "blurred"}, key
    real = {k: r["baselines"]["real"] for k, r in rows.items() if "baselines" in r}
    bad = {k: r["baselines"]["blurred"] for k, r in rows.items() if "baselines" in r}
    # the floor is far below the blurred mark on the distances, and above it on fidelity and coverage
    assert real["fid"] < 0.5 * bad["fid"] and real["kid"] < 0.5 * bad["kid"]
    assert real["ks_distance"] < bad["ks_distance"] and real["ks_differing"] <= bad["ks_differing"]
    assert real["recall"] > bad["recall"] and real["coverage"] > bad["coverage"]
    assert real["precision"] >= bad["precision"]  # blurred digits still sit near real ones: a tie at n=200
    assert real["is"] > bad["is"] and abs(real["density"] - 1) < abs(bad["density"] - 1)
    points = result["reference_points"]
    # no train split: the second half of test is scored against the first, never against itself
    assert points["real"]["images"] == "200 of one random half of mnist test"
    assert points["real"]["against"] == "the other half, 5000 images"
    assert points["real"]["n"] == points["blurred"]["n"] == 200 and "blur" in points["blurred"]["images"]
    from genlab.report import metrics_table_text

    text = metrics_table_text(result)
    assert text.splitlines()[0].split()[:5] == ["metric", "value", "real", "data", "blurred"]
    assert "How to read: 'real data' is what unseen real images (200 of one random half of mnist test" in text


def test_reference_points_are_computed_once_per_dataset_extractor_and_n(mnist_dir, cache_root, monkeypatch):
    import genlab.evaluate as ev
    from genlab.data import load_dataset

    test = load_dataset("mnist", "test", data_dir=mnist_dir)
    cnn = ev.classifier_extractor("mnist")
    first = ev.reference_points(test, [cnn], ["fid", "memo"], n=50, dataset="mnist", data_dir=str(mnist_dir))
    assert set(first["real"]["values"]) == {"fid@genlab-cnn-mnist-v1"}
    calls = []
    monkeypatch.setattr(ev, "run_metrics", lambda *a, **k: calls.append(a) or [])
    again = ev.reference_points(test, [cnn], ["fid"], n=50, dataset="mnist", data_dir=str(mnist_dir))
    assert again == first and calls == []  # read from the cache
    other_n = ev.reference_points(test, [cnn], ["fid"], n=60, dataset="mnist", data_dir=str(mnist_dir))
    assert len(calls) == 2 and other_n["real"]["n"] == 60  # another n is another entry: real and blurred scored
    files = sorted(p.name for p in ev.stats_cache_dir().glob("mnist-reference-points-*.json"))
    assert any("-n50-" in f for f in files) and any("-n60-" in f for f in files)


def test_the_train_split_is_the_floor_where_there_is_one(fashion_dir, cache_root):
    import genlab.evaluate as ev
    from genlab.data import load_dataset

    test = load_dataset("fashion-mnist", "test", data_dir=fashion_dir)
    images, against, described = ev._reference_point_sets(test, "fashion-mnist", str(fashion_dir), 300)
    assert against is test and described == {"images": "fashion-mnist train (300 drawn)", "n": 300}
    val = dataclasses.replace(test, split="val")  # carved from train: train is no unseen floor for it
    _, against, described = ev._reference_point_sets(val, "fashion-mnist", str(fashion_dir), 300)
    assert len(against) == 5000 and against.split == "val-half-a" and described["n"] == 300
    assert images.shape == (300, 1, 28, 28) and images.dtype == np.uint8


def test_blur_keeps_the_range_and_softens_edges():
    import genlab.evaluate as ev

    x = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    x[:, :, 10:18, 10:18] = 255
    b = ev.blur(x)
    assert b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1
    assert np.abs(np.diff(b, axis=-1)).max() < 0.5 < np.abs(np.diff(x / 255.0, axis=-1)).max()


# -- units and formats -------------------------------------------------------------------------------
def _result(rows, n=500, **extra):
    return {
        "genlab_version": "0",
        "dataset": "mnist",
        "n": n,
        "seed": 0,
        "seconds": 1.0,
        "reference": {"split": "test", "n": 10000, "n_subset": n},
        "source": {"kind": "run", "path": "runs/vae-mlp", "name": "vae-mlp", "family": "vae", "preset": "mlp"},
        "notes": [],
        "extractors": {},
        "summary": rows,
        "details": {},
        **extra,
    }


def _row(key, value, better="lower", extractor="genlab-cnn-mnist-v1", **extra):
    return {"key": key, "label": key, "value": value, "better": better, "extractor": extractor, "explain": key} | extra


def test_kid_in_inception_features_is_shown_times_a_thousand(mnist_dir, cache_root, monkeypatch):
    import genlab.evaluate as ev
    from genlab.data import load_dataset
    from genlab.report import metrics_table_text

    def toy(path, *, device="cpu"):
        w = np.random.default_rng(0).standard_normal((784, 16)) / 300
        features = lambda x: x.reshape(len(x), -1).astype(np.float64) @ w  # noqa: E731
        return ev.Extractor(name="inception-v3-toy", sha256="cd" * 32, path=str(path), features=features)

    monkeypatch.setattr(ev, "inception_extractor", toy)
    images = load_dataset("mnist", "test", data_dir=mnist_dir).images[:60].numpy()
    result = ev.evaluate_samples(
        images, "mnist", metrics=["kid"], data_dir=str(mnist_dir), inception="w.pth", baselines=False
    ).result
    cnn_kid, inc_kid = result["summary"]
    assert "display_scale" not in cnn_kid  # the classifier's KIDs are of order 1..1000 already
    assert inc_kid["display_scale"] == 1000 and inc_kid["unit"] == "×10³"
    raw = inc_kid["value"]  # metrics.json keeps the raw MMD^2
    line = next(x for x in metrics_table_text(result).splitlines() if "inception-v3-toy" in x)
    assert line.startswith("KID (×10³)") and f"{raw * 1000:.4g}" in line


def test_copies_are_a_percentage_against_a_percentage():
    from genlab.report import better_text, label_text, metrics_table_text

    row = _row("memo_copies", 0.0, "target:0.01", "pixels", display_scale=100, unit="%")
    row["label"] = "likely copies"
    assert label_text(row) == "likely copies (%)" and better_text(row["better"], row) == "closer to 1 %"
    assert "likely copies (%)  0      closer to 1 %" in metrics_table_text(_result([row]))


def test_ks_reports_effect_sizes_and_no_floating_point_noise(mnist_dir, cache_root):
    from genlab.data import load_dataset
    from genlab.evaluate import Evaluation, evaluate_samples
    from genlab.metrics import ks_tests
    from genlab.report import evaluation_html

    real = load_dataset("mnist", "test", data_dir=mnist_dir).images.numpy()
    same, darker = real[:300], (real[300:600] * 0.6).astype(np.uint8)
    for fake, big in ((same, False), (darker, True)):
        ks = ks_tests(real[5000:5300], fake)
        ink = next(t for t in ks["tests"] if t["statistic"] == "mean_intensity")
        assert (ink["effect"] < -1.0) == big and abs(ink["effect"]) > 0.0
        assert ks["mean_ks"] == pytest.approx(np.mean([t["ks"] for t in ks["tests"]]))
    result = evaluate_samples(darker, "mnist", metrics=["ks"], data_dir=str(mnist_dir), baselines=False).result
    assert [r["key"] for r in result["summary"]] == ["ks_distance", "ks_differing"]
    assert 0 < result["summary"][0]["value"] < 1
    page = evaluation_html(Evaluation(result=result, samples=darker.astype(np.float32) / 255))
    table = page[page.index("Kolmogorov-Smirnov") :]
    assert "shift (real SDs)" in table and "< 1e-10" in table  # an astronomically small p reads as such
    assert not re.search(r"\de-(1[1-9]|[2-9]\d|\d{3})<", table)  # pc means of centred data print as 0
    assert re.search(r"<td>pc1</td><td class=\"num\">0</td>", table)


def test_the_header_names_what_was_scored_in_words():
    from genlab.evaluate import Evaluation
    from genlab.report import evaluation_html

    samples = np.zeros((4, 1, 28, 28), np.float32)
    page = evaluation_html(Evaluation(result=_result([_row("fid", 3.0)]), samples=samples))
    assert "Source: {" not in page and "{&quot;" not in page
    assert "Scored: run <code>runs/vae-mlp</code> (vae / mlp)." in page


# -- compare ------------------------------------------------------------------------------------------
def test_ties_are_no_ones_best_even_at_the_bottom():
    from genlab.report import best_runs, compare_html, verdict

    runs = [
        {"name": name, "family": fam, "preset": "p", "dir": "/nowhere", "samples_png": None, "on_the_fly": False}
        | {"result": _result([_row("fid", fid), _row("coverage", cov, "higher")])}
        for name, fam, fid, cov in (("a", "vae", 5.0, 0.0), ("b", "gan", 5.0, 0.0), ("c", "gan", 4.0, 0.5))
    ]
    page = compare_html(runs)
    cells = re.findall(r'<td class="num( best)?">([^<]*)</td>', page)
    highlighted = [v for best, v in cells if best]
    assert highlighted == ["4", "0.5"]  # c's strict wins only
    runs[2]["result"]["summary"][0]["value"] = 5.0  # all three tie on FID now
    runs[2]["result"]["summary"][1]["value"] = 0.0  # and on coverage: the worst possible value
    page = compare_html(runs)
    assert 'class="num best"' not in page and "tie: a, b, c" in page
    assert "On FID (genlab-cnn-mnist-v1) a and b and c tie." in verdict(runs, best_runs(runs))


def _hand_made_run(folder: Path, family: str, n: int, fid: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"family": family, "preset": "p"}))
    (folder / "metrics.json").write_text(json.dumps(_result([_row("fid", fid)], n=n)))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "seconds": s / 10, "loss": 1 / s, "diversity": 0.5}) + "\n" for s in (10, 20))
    )
    (folder / "summary.json").write_text(json.dumps({"steps": 20, "seconds": 2.0, "images_per_second": 160.0}))
    return folder


def test_the_command_line_verdict_warns_when_the_runs_were_scored_at_different_n(tmp_path, capsys):
    a = _hand_made_run(tmp_path / "vae-a", "vae", 2000, 30.0)
    b = _hand_made_run(tmp_path / "gan-b", "gan", 500, 20.0)
    out = tmp_path / "compare.html"
    assert main(["compare", str(a), str(b), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    out.unlink()
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    warning = next(x for x in printed.splitlines() if x.startswith("warning:"))
    assert "different sample counts (vae-a n=2000, gan-b n=500)" in warning and "-n" in warning
    page = out.read_text()
    assert "vae-a n=2000, gan-b n=500" in page  # the page says the same
    # across families: one table of steps, time and speed, and one figure both runs are drawn in
    assert "<h2>Training</h2>" in page and "160" in page and "Every run: speed, time" in page
    assert "VAE losses" in page and "GAN losses" in page
