"""Does bf16 autocast cost likelihood? The ``mlp`` preset trained in bf16 and in fp32, same seeds.

For each precision and seed, trains the ``mlp`` VAE preset for its 10 epochs on Fashion-MNIST's
train split, then prints its test NLL (the IWAE bound, ``genlab.nll.evaluate_likelihood`` with
``--k`` draws on the first ``--images`` binarised test images) with the standard error over
images, and the paired bf16 - fp32 difference per seed with the standard error of that paired
difference (the same images, so image-to-image spread cancels). On hardware without native bf16
(``genlab.device.native_bf16``), bf16 is emulated: slow, but the figures still compare.

    python benchmarks/precision.py                 # seeds 0 and 1, ~5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import torch

from genlab.checkpoint import load_run
from genlab.config import DataConfig, RunConfig, TrainConfig
from genlab.data import load_dataset
from genlab.models import get_preset
from genlab.models.vae.likelihood import bounds
from genlab.nll import binarize_images
from genlab.training import train


def train_preset(precision: str, seed: int, epochs: int, out: Path) -> Path:
    preset = get_preset("vae", "mlp")
    settings = {**preset.train, "epochs": epochs, "precision": precision, "seed": seed}
    run = RunConfig(
        "vae", "mlp", dataclasses.replace(preset.model), DataConfig("fashion-mnist", "train"), TrainConfig(**settings)
    )
    run_dir = out / f"mlp-{precision}-seed{seed}"
    train(run, run_dir, overwrite=True, quiet=True)
    return run_dir


def per_image_nll(run_dir: Path, images: torch.Tensor, k: int) -> torch.Tensor:
    model, _ = load_run(run_dir)
    model.eval()
    return -bounds(model, images, None, k=k, batch_size=100, generator=torch.Generator().manual_seed(0))["bound"]


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std() / math.sqrt(len(x)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=200, help="importance samples per image (default 200)")
    ap.add_argument("--images", type=int, default=1000, help="first N test images (default 1000)")
    ap.add_argument("--out", default="/tmp/genlab-bench/precision")
    args = ap.parse_args()
    out = Path(args.out)
    test = load_dataset("fashion-mnist", "test")
    images = binarize_images(test.images[: args.images], seed=0)
    print(
        f"mlp preset, {args.epochs} epochs on fashion-mnist train; test NLL (IWAE k={args.k}) on the first "
        f"{args.images} binarised test images, nats +/- standard error over images"
    )
    print(f"{'seed':>4}  {'bf16':>16}  {'fp32':>16}  {'bf16 - fp32 (paired)':>22}")
    for seed in (int(s) for s in args.seeds.split(",")):
        nll = {p: per_image_nll(train_preset(p, seed, args.epochs, out), images, args.k) for p in ("bf16", "fp32")}
        (b, b_se), (f, f_se) = mean_se(nll["bf16"]), mean_se(nll["fp32"])
        d, d_se = mean_se(nll["bf16"] - nll["fp32"])
        print(f"{seed:>4}  {b:>9.2f} +/-{b_se:4.2f}  {f:>9.2f} +/-{f_se:4.2f}  {d:>+13.2f} +/-{d_se:4.2f}")


if __name__ == "__main__":
    main()
