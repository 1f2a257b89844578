"""One selection run: a preset with overrides, a wall-clock budget on one thread, scored on val.

    python benchmarks/quality_trial.py NAME FAMILY PRESET MINUTES [model.KEY=VALUE | train.KEY=VALUE ...]
    python benchmarks/quality_trial.py w32-b64 gan dcgan 4 model.width=32 train.batch_size=64 train.precision=bf16

The run trains on the 'fit' split (Fashion-MNIST's training images but the last 5,000) for MINUTES of
wall clock with one CPU thread (so two selection runs can share a 2-core machine, one per core, pinned
with ``taskset -c 0`` and ``taskset -c 1``), draws 5,000 samples with seed 0, and scores them against
the 'val' split (those 5,000): FID and KID on the shipped classifier's features, precision/recall/
coverage (k = 5), classes covered. Values are read as JSON where they parse (``model.betas=[0.0,0.99]``)
and kept as text otherwise (``model.augment=translation,cutout``). The epoch count is set out of
reach, so the budget alone stops training.

Prints one JSON line and appends it to ``--log`` (default runs/quality-trials.jsonl); the run itself
stays in runs/quality-trials/NAME with its 10x10 sample grid beside it. These choose settings; the
figures to report come from ``gan_quality.py --final``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import genlab
from common import split_settings
from genlab.data import load_dataset
from genlab.evaluate import evaluate_samples
from genlab.sample import generate, save_grid

BIG = 10**6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name")
    ap.add_argument("family")
    ap.add_argument("preset")
    ap.add_argument("minutes", type=float)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--log", default="runs/quality-trials.jsonl")
    ap.add_argument("--out", default="runs/quality-trials")
    args = ap.parse_args()
    model_fields, train_fields = split_settings(args.overrides, "overrides")
    torch.set_num_threads(1)
    run_dir = Path(args.out) / args.name
    result = genlab.train(
        args.family,
        preset=args.preset,
        dataset="fashion-mnist",
        split="fit",
        out=run_dir,
        overwrite=True,
        quiet=True,
        epochs=BIG,
        max_minutes=args.minutes,
        sample_every=BIG,
        checkpoint_every=BIG,
        log_every=200,
        model=model_fields or None,
        **train_fields,
    )
    samples = generate(genlab.load(run_dir), 5000, generator=torch.Generator().manual_seed(0))
    save_grid(samples[:100], Path(args.out) / f"{args.name}.png", nrow=10)
    val = load_dataset("fashion-mnist", "val")
    ev = evaluate_samples(
        samples.numpy(),
        "fashion-mnist",
        metrics=("fid", "kid", "pr", "modes"),
        train_split="fit",
        test=val,
        baselines=False,
    )
    rows = {r["key"]: r["value"] for r in ev.result["summary"]}
    line = {
        "name": args.name,
        "preset": f"{args.family}:{args.preset}",
        "minutes": args.minutes,
        "overrides": args.overrides,
        "steps": result.steps,
        "epochs": round(result.epochs, 2),
        "images_per_second": round(result.images_per_second),
        "fid": round(rows["fid"], 2),
        "kid": round(rows["kid"], 4),
        "precision": round(rows["precision"], 3),
        "recall": round(rows["recall"], 3),
        "coverage": round(rows["coverage"], 3),
        "classes": ev.result["details"]["modes"]["classes_covered"],
    }
    print(json.dumps(line))
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
