"""Sample quality against the number of sampler steps, from one trained diffusion run.

    python benchmarks/ddpm_steps.py RUN                                    # DDIM at 10, 20, 50, 100, 250 steps
    python benchmarks/ddpm_steps.py RUN --sampler dpm-solver++ --steps 5,10,20 -n 1000
    python benchmarks/ddpm_steps.py RUN --steps 50 --eta 1                 # stochastic DDIM
    python benchmarks/ddpm_steps.py RUN --final                            # against the test split, once

Every step count draws the same ``-n`` initial noises (seed ``--seed``), so the rows differ only by
the sampler's discretisation. Each set is scored by :func:`genlab.evaluate.evaluate_samples` (FID,
KID, precision/recall with the shipped classifier's features) against the 'val' split (the
training split's last 5,000 images) by default, or the test split with ``--final``. Prints one
row per step count with the sampling time per 1,000 images, then a real-data row (``-n`` real
training images that are not in the scored split, 'fit' against 'val' and 'train' against 'test',
scored the same way: the figures a model that matched the data would expect at this ``n``), and
writes OUT/steps.json and OUT/steps.png (FID against steps, log scale).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import real_images
from genlab.checkpoint import load_run
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.evaluate import evaluate_samples, prepare_reference
from genlab.models import configure_sampling
from genlab.plots import save_figure
from genlab.sample import generate

METRICS = ("fid", "kid", "pr")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained run directory of a model with sampling options (a diffusion model)")
    ap.add_argument("--sampler", default="ddim", help="ddim (default) | ddpm | dpm-solver++")
    ap.add_argument("--steps", default="10,20,50,100,250", help="comma-separated step counts")
    ap.add_argument("--eta", type=float, default=None, help="DDIM noise (default: the run's, 0)")
    ap.add_argument("-n", type=int, default=2000, help="samples per step count (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--final", action="store_true", help="score against the test split (default: val)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="where steps.json and steps.png go (default RUN/steps-SAMPLER)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    options = {"sampler": args.sampler} | ({} if args.eta is None else {"eta": args.eta})
    eta_tag = "" if args.eta is None else f"-eta{args.eta:g}"
    out = Path(args.out) if args.out else Path(args.run) / f"steps-{args.sampler}{eta_tag}"

    try:  # the run and every option checked once, before minutes of sampling
        model, run = load_run(Path(args.run))
        configure_sampling(model, options | {"steps": max(steps)}, args.run)
    except GenlabError as e:
        raise SystemExit(f"ddpm_steps.py: {e.message}") from None
    out.mkdir(parents=True, exist_ok=True)
    dataset, data_dir = run.data.dataset, run.data.data_dir
    real = load_dataset(dataset, "test" if args.final else "val", data_dir=data_dir)
    _, extractors, _ = prepare_reference(dataset, data_dir, None, None)
    if real.split == "val" and run.data.split == "train":
        print(
            f"note: {args.run} trained on the whole train split, val included: these rows compare samplers "
            "with each other; --final scores against images it never saw",
            file=sys.stderr,
        )
    print(
        f"{args.run}: {run.family}/{run.preset}, {args.sampler}{eta_tag}, {args.n} samples per row (seed {args.seed}), "
        f"scored against {dataset} {real.split} with {extractors[0].name}; {torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    rows = []
    for s in steps:
        configure_sampling(model, options | {"steps": s}, args.run)
        t0 = time.perf_counter()
        samples = generate(model, args.n, generator=torch.Generator().manual_seed(args.seed), batch_size=500)
        seconds = time.perf_counter() - t0
        m = score(samples, dataset, data_dir, args.seed, real, extractors, run.data.split)
        rows.append(
            {
                "steps": s,
                "seconds_per_1000": round(1000 * seconds / args.n, 1),
                **{k: m[k] for k in ("fid", "kid", "precision", "recall")},
            }
        )
        print(f"  {s} steps: FID {m['fid']:.2f} ({rows[-1]['seconds_per_1000']:.0f} s per 1,000)", file=sys.stderr)

    # Real images from outside the split scored against: the 'fit' images when that is 'val' (val is
    # the train split's last 5,000, so drawing from all of train would score some images against themselves).
    train = load_dataset(dataset, "fit" if real.split == "val" else "train", data_dir=data_dir)
    m = score(real_images(train, args.n, args.seed), dataset, data_dir, args.seed, real, extractors, run.data.split)
    reference = {
        "images": f"{args.n} real images of {dataset} {train.split}",
        **{k: m[k] for k in ("fid", "kid", "precision", "recall")},
    }

    header = f"{'steps':>6} {'s / 1,000':>10} {'FID':>9} {'KID':>9} {'precision':>9} {'recall':>7}"
    print(f"\n{args.sampler}{eta_tag} on {args.run}; {args.n} samples each, against {dataset} {real.split}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['steps']:>6} {r['seconds_per_1000']:>10.1f} {r['fid']:>9.2f} {r['kid']:>9.3f} "
            f"{r['precision']:>9.3f} {r['recall']:>7.3f}"
        )
    r = reference
    print(f"{'real':>6} {'-':>10} {r['fid']:>9.2f} {r['kid']:>9.3f} {r['precision']:>9.3f} {r['recall']:>7.3f}")
    print(
        "FID, KID in the shipped classifier's features (lower is better); the same noises in every row. "
        f"real: {r['images']} scored as samples, what a perfect model would expect at this n."
    )
    (out / "steps.json").write_text(
        json.dumps({"args": vars(args), "split": real.split, "rows": rows, "real_data": reference}, indent=2)
    )
    shown = args.sampler + ("" if args.eta is None else f" (eta {args.eta:g})")
    _plot(rows, reference["fid"], shown, out / "steps.png")
    return 0


def score(images, dataset, data_dir, seed, real, extractors, train_split) -> dict:
    """FID, KID, precision and recall of ``images`` (float, in [0, 1]) against the ``real`` split."""
    ev = evaluate_samples(
        images.numpy(),
        dataset,
        metrics=METRICS,
        data_dir=data_dir,
        seed=seed,
        test=real,
        extractors=extractors,
        train_split=train_split,
        baselines=False,
    )
    return {r["key"]: r["value"] for r in ev.result["summary"]}


def _plot(rows: list[dict], real_fid: float, sampler: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    ax.plot([r["steps"] for r in rows], [r["fid"] for r in rows], marker="o", label="samples")
    ax.axhline(real_fid, color="grey", linestyle="--", label="real images, same n")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel(f"{sampler} steps (network evaluations per sample)")
    ax.set_ylabel("FID (classifier features)")
    ax.set_title("sample quality against sampler steps")
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
