"""The user surface, as a new user meets it: progress in a log file, an honest resume summary,
metrics that know which weights they scored, inputs refused before any work, and ``genlab fid``.

Real CLI on the real MNIST test split; runs are a few dozen steps of the tiny ``seed`` VAE.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main
from genlab.data import load_dataset
from genlab.progress import INTERVAL_ENV, Progress, format_duration, interval_seconds

BATCH = 500  # 20 steps per epoch of the 10,000 test images: epoch ends come quickly


@pytest.fixture(scope="module", autouse=True)
def stats_cache(tmp_path_factory):
    """Reference statistics go to a temporary cache shared by this file's tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()


def train_args(mnist_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "vae",
        "--preset",
        "seed",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--split",
        "test",
        "--batch-size",
        str(BATCH),
        "--max-steps",
        str(steps),
        "--out",
        str(out),
        *extra,
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mnist_images(mnist_dir) -> np.ndarray:
    return load_dataset("mnist", "test", data_dir=mnist_dir).images.numpy()  # (10000, 1, 28, 28) uint8


# -- progress when stderr is a log file ---------------------------------------------------------
def test_train_into_a_log_file_prints_plain_progress_lines(mnist_dir, tmp_path):
    """`genlab train ... > log 2>&1`: plain lines (step/total, epoch, loss, images/s, ETA), no bar."""
    log = tmp_path / "log"
    env = {**os.environ, INTERVAL_ENV: "0"}  # a line at every step, not every 30 s
    with open(log, "w") as fh:
        rc = subprocess.run(
            [sys.executable, "-m", "genlab", *train_args(mnist_dir, tmp_path / "run", 30)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
        ).returncode
    text = log.read_text()
    assert rc == 0, text
    lines = [ln for ln in text.splitlines() if ln.startswith("train: ")]
    assert lines[0].startswith("train: step 0/30 (0%), epoch 0.00 | "), text  # the run has begun
    lines = lines[1:]
    assert len(lines) == 30, text  # then one per step at interval 0
    pattern = re.compile(
        r"^train: step (\d+)/30 \(\d+%\), epoch \d+\.\d\d(, loss \S+)? \| [\d,.]+ images/s, "
        r"\d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d$"
    )
    assert all(pattern.match(ln) for ln in lines), lines
    assert [int(pattern.match(ln).group(1)) for ln in lines] == list(range(1, 31))
    assert "loss " in lines[-1] and "epoch 1.50" in lines[-1]
    assert "\r" not in text  # no bar redraws in a log file
    assert "trained 30 steps (1.50 epochs)" in text


def test_a_long_interval_still_prints_each_epoch_end(mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    assert main(train_args(mnist_dir, tmp_path / "run", 60)) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train: ")]
    assert lines[0].startswith("train: step 0/60 (0%)")
    lines = lines[1:]
    assert [ln.split(",")[0] for ln in lines] == [
        "train: step 20/60 (33%)",
        "train: step 40/60 (67%)",
        "train: step 60/60 (100%)",
    ]
    assert [ln.split(", ")[1] for ln in lines] == ["epoch 1.00", "epoch 2.00", "epoch 3.00"]


def test_quiet_prints_nothing(mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert main(train_args(mnist_dir, tmp_path / "run", 20, "--quiet")) == 0
    captured = capsys.readouterr()
    assert "train: " not in captured.err and captured.out == ""


def test_progress_helper_uses_a_bar_in_a_terminal_and_lines_elsewhere(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv(INTERVAL_ENV, "0")
    term, log = Terminal(), io.StringIO()
    for stream in (term, log):
        with Progress(4, desc="job", unit="item", stream=stream) as p:
            for i in range(1, 5):
                p.set_figures(loss=1.0 / i)
                p.update(i)
    assert "\r" in term.getvalue() and "job: item" not in term.getvalue()  # tqdm's bar, no plain lines
    assert log.getvalue().splitlines()[0].startswith("job: item 1/4 (25%), loss 1 | ")
    assert len(log.getvalue().splitlines()) == 4 and "ETA 0:00:00" in log.getvalue().splitlines()[-1]
    for value, expected in (("0.5", 0.5), ("-1", 30.0), ("soon", 30.0), ("nan", 30.0)):
        monkeypatch.setenv(INTERVAL_ENV, value)
        assert interval_seconds() == expected
    assert format_duration(3725.2) == "1:02:05"


# -- a resumed run's summary ------------------------------------------------------------------
def test_resume_summary_separates_this_call_from_the_run(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(mnist_dir, run, 40)) == 0
    first = capsys.readouterr().out
    assert re.search(r"^trained 40 steps \(2\.00 epochs\) in [\d.]+s, [\d,]+ images/s -> ", first, re.M), first
    assert main(["train", "--resume", str(run), "--max-steps", "100"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.match(
        r"trained 60 steps \(3\.00 epochs\) in [\d.]+s, [\d,]+ images/s \(resumed at step 40\); "
        r"the run now has 100 steps \(5\.00 epochs\), [\d.]+s of training -> ",
        line,
    ), line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 100  # the run's total, as before
    assert summary["this_call"]["start_step"] == 40 and summary["this_call"]["steps"] == 60
    assert summary["seconds"] >= summary["this_call"]["seconds"] > 0


# -- metrics.json records the weights it scored -------------------------------------------------
def test_compare_and_evaluate_notice_metrics_of_weights_since_replaced(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(mnist_dir, run, 20, "--quiet")) == 0
    assert main(["evaluate", str(run), "-n", "60", "--metrics", "fid,kid", "--quiet"]) == 0
    scored = json.loads((run / "metrics.json").read_text())
    assert scored["source"]["step"] == 20 and scored["source"]["weights_file"] == "model.safetensors"
    assert scored["source"]["weights_sha256"] == sha256(run / "model.safetensors")
    page = (run / "report.html").read_text()
    assert "Scored weights: model.safetensors at step 20" in page

    # fresh metrics are used as they are
    out = tmp_path / "compare.html"
    assert main(["compare", str(run), "-n", "60", "--out", str(out)]) == 0
    assert "out of date" not in capsys.readouterr().err and "evaluated on the fly" not in out.read_text()

    assert main(["train", "--resume", str(run), "--max-steps", "40", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run), "-n", "60", "--out", str(out), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'metrics.json'} is out of date: it scored step 20" in err, err
    assert "now holds step 40" in err and f"genlab evaluate {run}" in err
    assert "metrics.json was out of date" in out.read_text()
    assert json.loads((run / "metrics.json").read_text()) == scored  # compare never writes into a run

    assert main(["evaluate", str(run), "-n", "60", "--metrics", "fid"]) == 0
    assert "is out of date (it scored step 20" in capsys.readouterr().err
    rescored = json.loads((run / "metrics.json").read_text())["source"]
    assert rescored["step"] == 40 and rescored["weights_sha256"] == sha256(run / "model.safetensors")


def test_an_older_metrics_json_without_a_hash_is_stale_when_the_weights_are_newer(mnist_dir, tmp_path):
    from genlab.evaluate import stale_metrics

    run = tmp_path / "run"
    assert main(train_args(mnist_dir, run, 20, "--quiet")) == 0
    legacy = {"source": {"kind": "run", "path": str(run)}}
    (run / "metrics.json").write_text(json.dumps(legacy))
    weights = run / "model.safetensors"
    os.utime(run / "metrics.json", (weights.stat().st_mtime + 10,) * 2)
    assert stale_metrics(run, legacy) is None
    os.utime(run / "metrics.json", (weights.stat().st_mtime - 10,) * 2)
    assert "records no weights hash" in stale_metrics(run, legacy)
    assert stale_metrics(run, {"source": {"kind": "npy"}}) is None  # samples from a file: no weights to check


# -- every input is checked before any work ---------------------------------------------------
@pytest.fixture(scope="module")
def small_run(mnist_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    assert main(train_args(mnist_dir, run, 20, "--quiet")) == 0
    return run


@pytest.mark.parametrize(
    "args, words",
    [
        (["--inception", "/nope.pth"], "Inception weights not found: /nope.pth"),
        (["--classifier", "/nope.safetensors"], "no classifier weights for mnist at /nope.safetensors"),
        (["--dataset", "cifar10"], "unknown dataset 'cifar10'"),
        (["--out", "/etc/passwd/reports"], "cannot write into /etc/passwd/reports: /etc/passwd is not a directory"),
        (["-n", "5", "--metrics", "fid"], "fid need at least 10 samples, got 5"),
    ],
)
def test_evaluate_refuses_bad_inputs_before_drawing_a_sample(small_run, monkeypatch, capsys, args, words):
    import genlab.sample

    drawn = []
    monkeypatch.setattr(genlab.sample, "generate", lambda *a, **k: drawn.append(1))
    assert main(["evaluate", str(small_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and words in err, err
    assert drawn == []


# -- nll and sample report progress too -----------------------------------------------------------
def test_nll_and_sample_report_progress_in_a_log(small_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert main(["nll", str(small_run), "--k", "2", "-n", "200", "--batch-size", "50"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("nll (k=2): ")]
    assert [ln.split(" |")[0].split(",")[0] for ln in lines] == [
        f"nll (k=2): image {i}/200 ({i // 2}%)" for i in (0, 50, 100, 150, 200)
    ]
    assert all("nll_so_far" in ln and "images/s" in ln and "ETA" in ln for ln in lines[1:])
    assert main(["sample", str(small_run), "-n", "300", "--out", str(tmp_path / "s.npy")]) == 0
    assert "sample: image 300/300 (100%)" in capsys.readouterr().err
    assert main(["sample", str(small_run), "-n", "30", "--out", str(tmp_path / "q.npy"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# -- genlab fid A B ----------------------------------------------------------------------------
def _png_folder(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[0]).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def fid_sets(mnist_images, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fid")
    np.save(root / "real_b.npy", mnist_images[5000:5300])
    np.save(root / "noise.npy", np.random.default_rng(0).random((300, 1, 28, 28), dtype=np.float32))
    return {
        "real_a": _png_folder(root / "real_a", mnist_images[:300]),
        "real_b": root / "real_b.npy",
        "noise": root / "noise.npy",
    }


def test_fid_of_two_sets_names_its_extractor_and_separates_real_from_noise(fid_sets, capsys):
    assert main(["fid", str(fid_sets["real_a"]), str(fid_sets["real_b"])]) == 0
    out = capsys.readouterr().out
    assert "features  genlab-cnn-mnist-v1 (sha256 " in out and "300 PNG images" in out
    assert re.search(r"^KID       \S+ \+/- \S+  \(mean \+/- std over 100 subsets of 300 images\)$", out, re.M), out
    real = float(re.search(r"^FID\s+(\S+)$", out, re.M).group(1))
    assert main(["fid", str(fid_sets["real_a"]), str(fid_sets["noise"]), "--json", "--quiet"]) == 0
    noise = json.loads(capsys.readouterr().out)
    assert noise["extractor"]["name"] == "genlab-cnn-mnist-v1" and noise["a"]["n"] == noise["b"]["n"] == 300
    assert real < 0.1 * noise["fid"] and noise["kid"] > 0
    # the two-set function agrees with itself in either order (FID is symmetric)
    from genlab.fid import two_set_metrics

    ab = two_set_metrics(fid_sets["real_a"], fid_sets["real_b"], kid=False)
    ba = two_set_metrics(fid_sets["real_b"], fid_sets["real_a"], kid=False)
    assert ab["fid"] == pytest.approx(real, abs=1e-3) and ba["fid"] == pytest.approx(ab["fid"], rel=1e-6)


def _mixed_sizes(t: Path) -> str:
    from PIL import Image

    folder = _png_folder(t / "mixed", np.zeros((12, 1, 28, 28), np.uint8))
    Image.new("L", (32, 32)).save(folder / "0100.png")
    return str(folder)


def _with_text_file(t: Path) -> str:
    folder = _png_folder(t / "notes", np.zeros((12, 1, 28, 28), np.uint8))
    (folder / "README.txt").write_text("samples")
    return str(folder)


def _fake_png(t: Path) -> str:
    folder = _png_folder(t / "fake", np.zeros((12, 1, 28, 28), np.uint8))
    (folder / "0099.png").write_text("not a picture")
    return str(folder)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda t: str(t / "missing"), "A: " + "{t}/missing: no such folder or .npy file"),
        (lambda t: (t / "empty").mkdir() or str(t / "empty"), "A: {t}/empty holds no .png images"),
        (_mixed_sizes, "0100.png: images must be 28x28, this one is 32x32"),
        (_with_text_file, "holds 1 file(s) that are not .png images (README.txt)"),
        (_fake_png, "0099.png: not a readable PNG image"),
        (
            lambda t: _png_folder(t / "few", np.zeros((4, 1, 28, 28), np.uint8)) and str(t / "few"),
            "FID needs at least 10",
        ),
    ],
)
def test_fid_bad_input_is_one_clear_error(fid_sets, tmp_path, capsys, make, words):
    a = make(tmp_path)
    assert main(["fid", a, str(fid_sets["real_b"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and words.format(t=tmp_path) in err, err


def test_fid_refuses_a_missing_inception_file_before_reading_images(fid_sets, monkeypatch, capsys):
    import genlab.evaluate

    monkeypatch.setattr(genlab.evaluate, "load_samples", lambda *a, **k: pytest.fail("images were read"))
    assert main(["fid", str(fid_sets["real_a"]), str(fid_sets["real_b"]), "--inception", "/nope.pth"]) == 2
    assert "Inception weights not found: /nope.pth" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{run}", "--out", "/etc/passwd/s.png"],
        ["explore", "{run}", "--what", "interpolate", "--out", "/etc/passwd/e.png"],
        ["compare", "{run}", "--out", "/etc/passwd/c.html"],
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(small_run, capsys, command):
    assert main([part.format(run=small_run) for part in command]) == 2
    err = capsys.readouterr().err
    assert err == "genlab: error: cannot write into /etc/passwd: /etc/passwd is not a directory\n", err


def test_compare_checks_every_run_it_must_evaluate_before_evaluating_any(small_run, tmp_path, monkeypatch, capsys):
    import shutil

    import genlab.evaluate

    broken = tmp_path / "broken"
    shutil.copytree(small_run, broken, ignore=shutil.ignore_patterns("metrics.json", "checkpoints"))
    (broken / "model.safetensors").write_bytes(b"\0" * 16)
    (small_run / "metrics.json").unlink(missing_ok=True)
    monkeypatch.setattr(genlab.evaluate, "evaluate_path", lambda *a, **k: pytest.fail("a run was evaluated"))
    assert main(["compare", str(small_run), str(broken), "--out", str(tmp_path / "c.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlab: error:") and "broken/model.safetensors" in err and err.count("\n") == 1, err
