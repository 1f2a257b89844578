"""GAN sample quality under a fixed wall-clock budget: the tutorial's GAN vs DCGAN vs hinge-SN, and the seed VAE.

    python benchmarks/gan_quality.py                      # 15 minutes per model, 10,000 samples, on val
    python benchmarks/gan_quality.py --final              # the same, on the test split: the figure to report
    python benchmarks/gan_quality.py --minutes 4 -n 5000  # reduced budget (~25 min on a 2-core CPU)
    python benchmarks/gan_quality.py --minutes 0.1 -n 500 --presets gan:seed,vae:seed   # smoke mode (~1 min)

Settings are chosen on validation data: by default every model trains on the 'fit' split
(Fashion-MNIST's training images but the last 5,000) and is scored against the 'val' split
(those 5,000; ``genlab.data.DERIVED_SPLITS``). ``--final`` trains on the whole train split and
scores against the test split: run it once, for the figure you report. (The shipped classifier
whose features are compared was trained on the whole train split, val included; it extracts
features, it does not choose between models.)

Every model trains with its preset's own settings (batch
size, learning rate, loss) for the same wall-clock budget (``TrainConfig.max_minutes``; the
epoch count is set out of reach). By default: ``gan:seed`` (the tutorial's MLP GAN),
``gan:dcgan``, ``gan:hinge-sn`` (the best of the other presets) and ``vae:seed`` (the tutorial's
other model). Each then draws ``-n`` samples (seed-fixed noise) that one and the same code,
:func:`genlab.evaluate.evaluate_samples`, scores against the real split: FID and KID on the
shipped Fashion-MNIST classifier's features, Inception Score from its class probabilities,
precision/recall/density/coverage (k=5), classes covered (mode statistics) and the fraction of
KS tests differing from the real data.

Prints one table (epochs done, images/s, FID, KID, IS, precision, recall, coverage, classes
covered) under the extractor's name, and writes OUT/results.json (all metrics, including density,
class KL and KS) and OUT/samples-<family>-<preset>.png (a 10x10 grid of the evaluated samples) per
model; the genlab runs stay in OUT/<family>-<preset>/ for ``genlab evaluate`` / ``compare``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from common import BIG, auto_device, budget_parser, print_table, warm_up
from genlab.checkpoint import load_run
from genlab.config import DataConfig, RunConfig, TrainConfig
from genlab.data import load_dataset
from genlab.evaluate import evaluate_samples, prepare_reference
from genlab.models import get_preset
from genlab.sample import generate, save_grid
from genlab.seeding import set_seed
from genlab.training import train

METRICS = ("fid", "kid", "is", "pr", "ks", "modes")  # everything but memorisation (slow, not a quality figure)


def parse_presets(text: str) -> list[tuple[str, str]]:
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        family, sep, preset = item.partition(":")
        if not sep or not family or not preset:
            raise SystemExit(f"--presets: expected FAMILY:PRESET (e.g. gan:dcgan), got {item!r}")
        get_preset(family, preset)  # fail now on a typo, not after an hour of training
        out.append((family, preset))
    if not out:
        raise SystemExit("--presets: give at least one FAMILY:PRESET")
    return out


def train_one(family: str, preset: str, data, test, minutes: float, device: str, seed: int, out: Path) -> dict:
    p = get_preset(family, preset)
    train_cfg = dataclasses.replace(
        TrainConfig(),
        **{**p.train, "epochs": BIG},
        max_minutes=minutes,
        checkpoint_every=BIG,
        log_every=500,
        seed=seed,
        device=device,
    )
    run = RunConfig(family, preset, p.model, DataConfig(data.name, data.split), train_cfg)
    run_dir = out / f"{family}-{preset}"
    result = train(run, run_dir, overwrite=True, quiet=True, data=data, heldout=test)
    model, _ = load_run(run_dir, device=device)
    return {
        "model": model,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "warnings": result.summary.get("warnings", []),
    }


def main(argv=None) -> int:
    ap = budget_parser(__doc__, minutes=15.0, out="runs/bench-gan-quality")
    ap.add_argument(
        "--presets",
        default="gan:seed,gan:dcgan,gan:hinge-sn,vae:seed",
        help="comma-separated FAMILY:PRESET list (default gan:seed,gan:dcgan,gan:hinge-sn,vae:seed)",
    )
    ap.add_argument("-n", type=int, default=10_000, help="samples drawn and scored per model (default 10000)")
    ap.add_argument(
        "--final",
        action="store_true",
        help="train on the whole train split and score against the test split: the figure to report, once "
        "(default: train on 'fit', score against 'val', for choosing settings)",
    )
    args = ap.parse_args(argv)

    presets = parse_presets(args.presets)
    device = auto_device() if args.device == "auto" else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, "train" if args.final else "fit", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test" if args.final else "val", data_dir=args.data_dir)
    print(
        f"{args.dataset}: {len(data)} {data.split}, {len(test)} {test.split} images; {args.minutes:g} min per model on "
        f"{device} ({torch.get_num_threads()} CPU threads); {args.n} samples each; "
        f"models: {', '.join(f'{f}:{p}' for f, p in presets)}",
        file=sys.stderr,
    )

    _, extractors = prepare_reference(args.dataset, args.data_dir, None, None, device=device)
    warm_up(device)
    t_start = time.perf_counter()
    rows, extractor = [], None
    for family, preset in presets:  # sequentially, one process
        name = f"{family}:{preset}"
        set_seed(args.seed)
        t = train_one(family, preset, data, test, args.minutes, device, args.seed, out)
        print(
            f"  trained {name}: {t['steps']} steps, {t['epochs']:.2f} epochs in {t['seconds']:.0f} s", file=sys.stderr
        )
        g = torch.Generator().manual_seed(args.seed)
        samples = generate(t["model"], args.n, generator=g)
        grid = out / f"samples-{family}-{preset}.png"
        save_grid(samples[:100], grid, nrow=10)
        t_eval = time.perf_counter()
        ev = evaluate_samples(
            samples.numpy(),
            args.dataset,
            metrics=METRICS,
            data_dir=args.data_dir,
            seed=args.seed,
            device=device,
            train_split=data.split,
            source={"benchmark": "gan_quality", "model": name, "n": args.n},
            test=test,
            extractors=extractors,
        )
        del t["model"], samples
        print(f"  evaluated {name} in {time.perf_counter() - t_eval:.0f} s", file=sys.stderr)
        m = {r["key"]: r for r in ev.result["summary"]}
        extractor = extractor or m["fid"]["extractor"]
        ks = ev.result["details"]["ks"]
        modes = ev.result["details"]["modes"]
        rows.append(
            {
                "model": name,
                "epochs": round(t["epochs"], 3),
                "steps": t["steps"],
                "train_seconds": round(t["seconds"], 1),
                "images_per_second": round(t["images_per_second"], 1),
                "fid": m["fid"]["value"],
                "kid": m["kid"]["value"],
                "kid_std": m["kid"]["std"],
                "is": m["is"]["value"],
                "is_std": m["is"]["std"],
                "precision": m["precision"]["value"],
                "recall": m["recall"]["value"],
                "density": m["density"]["value"],
                "coverage": m["coverage"]["value"],
                "classes_covered": modes["classes_covered"],
                "num_classes": modes["num_classes"],
                "missing_classes": modes.get("missing_classes"),
                "class_kl": m["class_kl"]["value"],
                "ks_differing": ks["n_differing"],
                "ks_tests": ks["n_tests"],
                "ks_fraction_differing": round(ks["n_differing"] / max(ks["n_tests"], 1), 4),
                "grid": str(grid),
                "run_dir": str(out / f"{family}-{preset}"),
                "warnings": t["warnings"],
            }
        )

    header = (
        f"{'model':<14} {'epochs':>7} {'images/s':>9} {'FID':>8} {'KID':>8} {'IS':>6} {'precision':>9} "
        f"{'recall':>7} {'coverage':>8} {'classes':>7}"
    )
    print(f"\nextractor: {extractor}")
    print(
        f"{args.dataset}: trained on {data.split}, scored against the {test.split} split; {args.n} samples per model; "
        f"{args.minutes:g} min of training each"
    )
    print_table(
        header,
        [
            f"{r['model']:<14} {r['epochs']:>7.2f} {r['images_per_second']:>9,.0f} {r['fid']:>8.2f} "
            f"{r['kid']:>8.4f} {r['is']:>6.2f} {r['precision']:>9.3f} {r['recall']:>7.3f} "
            f"{r['coverage']:>8.3f} {r['classes_covered']:>4}/{r['num_classes']:<2}"
            for r in rows
        ],
        "FID, KID: lower is better; IS (1..10), precision, recall, coverage (0..1), classes covered: higher. "
        "Density, class KL and KS tests differing are in results.json.",
    )
    (out / "results.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "device": device,
                "extractor": extractor,
                "metrics": list(METRICS),
                "total_seconds": round(time.perf_counter() - t_start, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out / 'results.json'} and {len(rows)} sample grids", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
