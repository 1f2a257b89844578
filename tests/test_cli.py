"""The real CLI, end to end, on the real MNIST test split (short runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main

RUN_FILES = {
    "config.json",
    "model.safetensors",
    "metrics.jsonl",
    "samples.png",
    "loss.png",
    "summary.json",
    "latent.png",
    "manifold.png",
}


def train_seed(mnist_dir: Path, out: Path, *extra: str) -> int:
    return main(
        [
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
            "--max-steps",
            "60",
            "--log-every",
            "20",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def seed_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "seed"
    assert train_seed(mnist_dir, out) == 0
    return out


def test_train_writes_the_run_directory(seed_run):
    names = {p.name for p in seed_run.iterdir()}
    assert RUN_FILES <= names, RUN_FILES - names
    assert any((seed_run / "tensorboard").iterdir())
    config = json.loads((seed_run / "config.json").read_text())
    assert config["family"] == "vae" and config["preset"] == "seed"
    assert config["data"]["split"] == "test"
    assert config["data"]["sources"]["images"].endswith("t10k-images-idx3-ubyte.gz")
    assert config["model"]["latent_dim"] == 2 and config["train"]["batch_size"] == 16
    lines = [json.loads(x) for x in (seed_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [20, 40, 60]
    assert {"loss", "recon", "kl", "kl_per_dim"} <= set(lines[-1])
    assert len(lines[-1]["kl_per_dim"]) == 2
    summary = json.loads((seed_run / "summary.json").read_text())
    assert "active_units" in summary


def test_sample_npy_and_png(seed_run, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", str(seed_run), "-n", "300", "--out", str(out), "--quiet"]) == 0
    arr = np.load(out)
    assert arr.shape == (300, 1, 28, 28) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    again = tmp_path / "again.npy"
    main(["sample", str(seed_run), "-n", "300", "--out", str(again), "--quiet"])
    assert np.array_equal(arr, np.load(again)), "same seed must give the same samples"
    png = tmp_path / "grid.png"
    assert main(["sample", str(seed_run), "-n", "16", "--out", str(png), "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_bit_identical_weights(mnist_dir, seed_run, tmp_path):
    twin = tmp_path / "twin"
    assert train_seed(mnist_dir, twin) == 0
    assert (twin / "model.safetensors").read_bytes() == (seed_run / "model.safetensors").read_bytes()
    other = tmp_path / "other"
    assert train_seed(mnist_dir, other, "--seed", "1") == 0
    assert (other / "model.safetensors").read_bytes() != (seed_run / "model.safetensors").read_bytes()


def test_existing_run_is_not_overwritten(mnist_dir, seed_run, capsys):
    before = (seed_run / "model.safetensors").read_bytes()
    assert train_seed(mnist_dir, seed_run) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (seed_run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "args, words",
    [
        (["--lr", "-1"], "lr"),
        (["--batch-size", "0"], "batch_size"),
        (["--latent-dim", "0"], "latent_dim"),
        (["--preset", "nope"], "unknown vae preset"),
        (["--set", "model.colour=1"], "unknown key"),
        (["--on-nonfinite", "ignore"], "on_nonfinite"),
        (["--lr-schedule", "step"], "lr_schedule"),
        (["--warmup-steps", "-1"], "warmup_steps"),
        (["--lr-clock", "wall"], "lr_clock"),
        (["--lr-clock", "time"], "--max-minutes"),  # nothing to decay over
        (["--set", "model.top_latent_dim=-2"], "top_latent_dim"),
    ],
)
def test_bad_settings_give_one_clear_error(mnist_dir, tmp_path, capsys, args, words):
    code = train_seed(mnist_dir, tmp_path / "r", *args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("genlab: error:") and words in err, err
    assert not (tmp_path / "r").exists()


def test_unknown_dataset_and_missing_split(mnist_dir, tmp_path, capsys):
    code = main(["train", "vae", "--dataset", "cifar", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "a")])
    assert code == 2 and "cifar" in capsys.readouterr().err
    code = main(
        [
            "train",
            "vae",
            "--dataset",
            "mnist",
            "--data-dir",
            str(mnist_dir),
            "--split",
            "train",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--split test" in err


def test_corrupt_data_file_is_reported(tmp_path, capsys, mnist_dir):
    bad = tmp_path / "data"
    bad.mkdir()
    raw = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    code = main(["train", "vae", "--data-dir", str(bad), "--split", "test", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "t10k-images-idx3-ubyte.gz" in err


def test_sample_errors(seed_run, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.npy")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["sample", str(seed_run), "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["sample", str(seed_run), "--label", "3", "--out", str(tmp_path / "x.npy")]) == 2
    assert "conditional" in capsys.readouterr().err


def test_console_entry_point_and_exit_code(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    ok = subprocess.run([sys.executable, "-m", "genlab", "presets"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "vae seed" in ok.stdout and "vae seed-sum" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "genlab", "sample", str(tmp_path), "--out", "x.npy"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("genlab: error:") and "Traceback" not in bad.stderr


def test_datasets_command_lists_where_files_are(mnist_dir, capsys):
    assert main(["datasets", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "fashion-mnist" in out and "ok" in out and "missing" in out


def test_resume_accepts_exactly_the_flags_the_resume_policy_allows(seed_run, capsys):
    """One policy (config.RESUME_MAY_CHANGE) decides both which flags --resume takes and which
    checkpoint differences are refused: the CLI's list is derived from it, never kept beside it."""
    from genlab.cli import TRAIN_FLAGS
    from genlab.config import RESUME_MAY_CHANGE, resume_may_change

    allowed = {flag for flag, (field, _, _) in TRAIN_FLAGS.items() if resume_may_change(f"train.{field}")}
    assert {"--epochs", "--max-steps", "--max-minutes", "--device", "--log-every"} <= allowed
    assert {f"train.{TRAIN_FLAGS[f][0]}" for f in allowed} <= RESUME_MAY_CHANGE
    assert not allowed & {"--lr", "--batch-size", "--seed", "--precision", "--lr-schedule"}
    for flag, value in (("--lr", "0.1"), ("--latent-dim", "3"), ("--set", "train.lr=0.1")):
        assert main(["train", "--resume", str(seed_run), flag, value]) == 2
        err = capsys.readouterr().err
        assert "cannot change a run being resumed" in err and "--epochs" in err, err
