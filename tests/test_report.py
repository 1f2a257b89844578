"""Tests for genlab.report: number formatting, picking the best run, and self-contained pages.

Built on small hand-made results so they run in a second; test_evaluate.py covers real runs.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from genlab.evaluate import Evaluation
from genlab.report import (
    VERDICT_HEADING,
    best_runs,
    comparability_warnings,
    compare_html,
    evaluation_html,
    fmt,
    metrics_table_text,
    score,
    training_curves_png,
    verdict,
    write_metrics_json,
)


def _row(key, value, better, extractor="genlab-cnn-mnist-v1", **extra):
    return {
        "key": key,
        "label": key.upper(),
        "value": value,
        "better": better,
        "extractor": extractor,
        "explain": f"what {key} means",
        **extra,
    }


def _result(fid, precision, density, copies, n=500, dataset="mnist", notes=()):
    return {
        "genlab_version": "0.1.0",
        "dataset": dataset,
        "n": n,
        "seed": 0,
        "seconds": 1.0,
        "reference": {"split": "test", "n": 10000, "n_subset": n},
        "source": {"kind": "run", "name": "x"},
        "notes": list(notes),
        "extractors": {
            "genlab-cnn-mnist-v1": {
                "name": "genlab-cnn-mnist-v1",
                "sha256": "0" * 64,
                "test_accuracy": 0.98,
                "accuracy_on": "mnist test[8000:10000]",
            }
        },
        "summary": [
            _row("fid", fid, "lower"),
            _row("precision", precision, "higher"),
            _row("density", density, "target:1"),
            _row("memo_copies", copies, "target:0.01", "pixels"),
        ],
        "details": {},
    }


def test_fmt_and_score():
    assert fmt(None) == "n/a" and fmt(3) == "3" and fmt(12.34567) == "12.35" and fmt(0.0) == "0"
    assert fmt(1.5e-5) == "1.50e-05"
    assert score(_row("fid", 2.0, "lower")) == -2.0
    assert score(_row("p", 0.7, "higher")) == 0.7
    assert score(_row("d", 1.3, "target:1")) == pytest.approx(-0.3)
    assert score(_row("r", None, "target:1")) is None and score(_row("b", True, "higher")) is None


def test_best_run_per_metric_and_the_verdict():
    runs = [
        {"name": "vae-mlp", "family": "vae", "result": _result(fid=30.0, precision=0.6, density=0.7, copies=0.01)},
        {"name": "gan-dcgan", "family": "gan", "result": _result(fid=10.0, precision=0.8, density=1.5, copies=0.2)},
    ]
    best = best_runs(runs)
    assert best["fid@genlab-cnn-mnist-v1"] == ["gan-dcgan"]
    assert best["precision@genlab-cnn-mnist-v1"] == ["gan-dcgan"]
    assert best["density@genlab-cnn-mnist-v1"] == ["vae-mlp"]  # |0.7 - 1| < |1.5 - 1|
    assert best["memo_copies@pixels"] == ["vae-mlp"]
    text = " ".join(verdict(runs, best))
    assert "is best on 2 of 4 metrics" in text and "GAN wins 2" in text and "VAE wins 2" in text
    assert "On FID (genlab-cnn-mnist-v1) the best is gan-dcgan" in text
    runs[1]["result"]["summary"][0]["value"] = 30.0  # now FID is a tie: nobody's win
    assert (
        verdict(runs, best_runs(runs))[0] == "vae-mlp (vae) is best on 2 of 4 metrics; then gan-dcgan (gan): 1; 1 tied."
    )
    assert verdict(runs[:1], best_runs(runs[:1])) == [
        "Need at least two runs with comparable metrics to name a winner."
    ]


def test_metric_table_text_lists_every_headline_number():
    result = _result(fid=12.5, precision=0.75, density=0.9, copies=0.02)
    result["summary"].append(_row("kid", 0.0123, "lower", std=0.001))
    text = metrics_table_text(result)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "value", "better", "extractor"]
    assert len(lines) == 2 + len(result["summary"])
    assert "12.5" in text and "closer to 1" in text and "0.0123 ± 0.001" in text and "pixels" in text


def test_metrics_json_is_strict_json(tmp_path):
    result = _result(fid=1.0, precision=0.5, density=1.0, copies=0.0)
    write_metrics_json(result, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == result
    result["summary"][0]["value"] = float("nan")
    with pytest.raises(ValueError):  # NaN is not JSON: better to fail than to write it
        write_metrics_json(result, tmp_path / "bad.json")


def test_evaluation_page_embeds_its_images_and_explains_each_metric():
    rng = np.random.default_rng(0)
    samples = rng.random((20, 1, 28, 28), dtype=np.float32)
    result = _result(fid=3.0, precision=0.9, density=1.0, copies=0.01, notes=["a <note> to show"])
    result["details"] = {
        "modes": {
            "histogram": [0.1] * 10,
            "real_histogram": [0.1] * 10,
            "class_names": list("0123456789"),
            "normalized_entropy": 1.0,
            "missing_classes": [],
        },
        "memo": {
            "closest": [{"sample_index": 0, "train_index": 5, "distance": 1.5}],
            "train_set": "mnist train",
            "threshold": 2.0,
            "quantile": 0.01,
            "n_copies": 1,
        },
        "ks": {
            "tests": [
                {
                    "statistic": "ink_area",
                    "real_mean": 0.2,
                    "fake_mean": 0.3,
                    "ks": 0.4,
                    "p_adjusted": 1e-9,
                    "differs": True,
                }
            ]
        },
    }
    page = evaluation_html(Evaluation(result=result, samples=samples, pairs=(samples[:1], samples[1:2])))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 3  # grid, histogram, pairs
    for text in ("what fid means", "closer to 0.01", "ink_area", "a &lt;note&gt; to show", "test accuracy 0.98"):
        assert text in page, text
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_compare_page_marks_the_best_and_says_what_was_evaluated_on_the_fly(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)) + "\n"
    )
    runs = [
        {
            "name": "a",
            "family": "vae",
            "preset": "mlp",
            "dir": str(tmp_path),
            "on_the_fly": False,
            "samples_png": None,
            "result": _result(fid=5.0, precision=0.5, density=1.0, copies=0.01),
        },
        {
            "name": "b",
            "family": "gan",
            "preset": "dcgan",
            "dir": str(tmp_path / "nowhere"),
            "on_the_fly": True,
            "samples_png": None,
            "result": _result(fid=4.0, precision=0.4, density=1.0, copies=0.01, n=200),
        },
    ]
    page = compare_html(runs)
    assert "Which run is best, by metric" in page and "evaluated on the fly with n=200" in page
    assert VERDICT_HEADING == "Which run is best, by metric" and "VAE or GAN" not in page
    assert "different sample counts" in page
    assert page.count('class="num best"') >= 2 and "data:image/png;base64," in page  # training curves
    assert page.count("no samples.png") == 2


def test_a_cas_row_alone_is_no_reason_to_warn_of_different_feature_extractors():
    plain = _result(fid=5.0, precision=0.5, density=1.0, copies=0.01)
    with_cas = _result(fid=4.0, precision=0.4, density=1.0, copies=0.01)
    with_cas["summary"].append({"key": "cas", "label": "CAS", "value": 0.8, "better": "higher", "extractor": None})
    runs = [{"name": "a", "result": plain}, {"name": "b", "result": with_cas}]
    assert comparability_warnings(runs) == []
    other = _result(fid=4.0, precision=0.4, density=1.0, copies=0.01)
    other["summary"][0] = {**other["summary"][0], "extractor": "inception-v3"}
    (warning,) = comparability_warnings([*runs, {"name": "c", "result": other}])
    assert "different feature extractors" in warning and "c: genlab-cnn-mnist-v1, inception-v3, pixels" in warning
    assert "None" not in warning


def test_evaluation_page_names_the_likelihood_by_what_was_measured():
    samples = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    result = _result(fid=3.0, precision=0.9, density=1.0, copies=0.01)
    result["nll"] = {"iwae_nll_nats": 91.5, "iwae_nll_sem": 0.4, "k": 100, "n_images": 50, "likelihood": "bernoulli"}
    page = evaluation_html(Evaluation(result=result, samples=samples))
    assert "<h2>Test log-likelihood (importance-weighted bound)</h2>" in page and "91.5" in page
    assert "(VAE)" not in page


def test_training_curves_plot_every_logged_figure_of_any_family(tmp_path, monkeypatch):
    """Each run's own figures get a panel (a GAN's loss_d, a VAE's recon...), bookkeeping keys none."""
    import genlab.plots as plots
    from genlab.io import read_jsonl

    vae, gan = tmp_path / "vae.jsonl", tmp_path / "gan.jsonl"
    vae.write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "epoch": s / 10,
                    "loss": 1.0 / s,
                    "recon": 0.5,
                    "kl": 0.1,
                    "kl_per_dim": [0.1, 0.2],
                    "applied": 1.0,
                    "lr": 1e-3,
                    "seconds": 0.1,
                }
            )
            + "\n"
            for s in range(1, 6)
        )
        + "{broken line\n"
    )
    gan.write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "loss_d": 1.0,
                    "loss_g": 2.0,
                    "d_real": 0.7,
                    "collapsed": 1.0,
                    "pairwise_l2": 0.4,
                    "diversity": 0.3,
                    "skipped_steps": 0,
                    "ok": True,
                }
            )
            + "\n"
            for s in range(1, 6)
        )
    )
    panels = []
    real_grid = plots.panel_grid
    monkeypatch.setattr(plots, "panel_grid", lambda n: panels.append(n) or real_grid(n))
    assert training_curves_png([("v", vae), ("g", gan)]).startswith(b"\x89PNG")
    assert plots.curve_keys(read_jsonl(vae) + read_jsonl(gan)) == [
        "loss",
        "loss_d",
        "loss_g",
        "recon",
        "kl",
        "d_real",
        "diversity",
    ]
    assert panels == [7]
    assert training_curves_png([("none", tmp_path / "missing.jsonl")]) is None


def test_loss_plot_is_family_agnostic_and_never_too_wide(tmp_path):
    """Rows of at most 4 panels: 9 figures make a 3-row figure under 15 inches wide, with room for the title."""
    from PIL import Image

    from genlab.plots import MAX_COLUMNS, panel_grid, plot_losses

    log = tmp_path / "metrics.jsonl"
    names = ["d_real", "loss_g", "gp", "loss_d", "d_fake", "diversity", "grad_norm", "fid_proxy", "ema_gap"]
    log.write_text(
        "".join(
            json.dumps({"step": s, "seconds": 1.0, **{k: float(s + i) for i, k in enumerate(names)}}) + "\n"
            for s in range(0, 300, 10)
        )
    )
    plot_losses(log, tmp_path / "loss.png", title="a long title: some family / some preset")
    with Image.open(tmp_path / "loss.png") as im:
        width, height = im.size
    assert width / 110 < 15.5 and height > width / 3  # 110 dpi: three rows, not nine columns
    fig, axes = panel_grid(9)
    assert len(axes) == 9 and sum(ax.get_visible() for ax in fig.axes) == 9 and MAX_COLUMNS == 4
    assert len(fig.axes) == 12  # 3 rows of 4; the 3 spare cells hidden
    plot_losses(tmp_path / "empty.jsonl", tmp_path / "empty.png")  # nothing logged yet: still a figure
    assert (tmp_path / "empty.png").stat().st_size > 0
