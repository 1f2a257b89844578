"""GAN sample quality under a fixed wall-clock budget: the tutorial's GAN vs DCGAN vs hinge-SN, and the seed VAE.

    python benchmarks/gan_quality.py                      # 15 minutes per model, 10,000 samples, on val
    python benchmarks/gan_quality.py --final              # the same, on the test split: the figure to report
    python benchmarks/gan_quality.py --minutes 4 -n 5000  # reduced budget (~25 min on a 2-core CPU)
    python benchmarks/gan_quality.py --minutes 0.1 -n 500 --presets gan:seed,vae:seed   # smoke mode (~1 min)
    python benchmarks/gan_quality.py --presets vae:vamp,gan:dcgan,gan:fast --seeds 0,1,2 --minutes 5 \
        --final --preset-epochs --second-judge      # issue #20's comparison, as a user runs each preset
    python benchmarks/gan_quality.py --presets gan:dcgan:width=32:train.lr=8e-4:augment=translation+cutout
    python benchmarks/gan_quality.py --runs runs/ddpm-45min --final --second-judge   # score trained runs

A preset may carry settings after its name, ``KEY=VALUE`` for model fields and ``train.KEY=VALUE``
for training fields (values read as JSON where they parse; list DiffAugment policies with ``+``).
``--seeds`` repeats every model per seed and adds a summary (mean and spread over seeds).
``--preset-epochs`` keeps each preset's epoch count, as ``genlab train --max-minutes M`` does (a
preset that finishes its epochs early stops early), instead of letting the budget alone stop
training. ``--second-judge`` adds FID and recall on an independently trained feature network
(``second_judge.py``), so a gain cannot be one classifier's artefact. ``--runs DIR,...`` scores
runs trained elsewhere instead of training (for example one trained 15 minutes, scored, then resumed
for 30 more with ``genlab train --resume``, which continues exactly); their split must be the one
``--final`` implies. ``--sampler``/``--steps`` choose how models with a configurable sampler (the
diffusion family) draw; the others ignore them. Every row records the sampler and its step count
and the sampling time per 1,000 images.

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
covered) under the extractor's name, ending with a real-data row: ``-n`` real training images scored
as if they were samples, the best any model can expect of each figure at this ``n`` (recall, for
one, stays below 1 for real data too), and writes OUT/results.json (all metrics, including density,
class KL and KS) and OUT/samples-<family>-<preset>.png (a 10x10 grid of the evaluated samples) per
model; the genlab runs stay in OUT/<family>-<preset>/ for ``genlab evaluate`` / ``compare``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import BIG, auto_device, budget_parser, print_table, real_images, split_settings, warm_up
from genlab.checkpoint import load_run
from genlab.config import DataConfig, RunConfig, TrainConfig
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.evaluate import evaluate_samples, prepare_reference
from genlab.metrics.frechet import fid_from_features
from genlab.metrics.prdc import prdc
from genlab.models import get_preset, sampling_settings
from genlab.models.base import ConfigurableSampler, config_from_dict
from genlab.sample import generate, save_grid
from genlab.seeding import set_seed
from genlab.training import train

METRICS = ("fid", "kid", "is", "pr", "ks", "modes")  # everything but memorisation (slow, not a quality figure)


def parse_presets(text: str) -> list[tuple[str, str, dict, dict]]:
    """'gan:dcgan,gan:dcgan:augment="cutout":train.lr=4e-4' -> [(family, preset, model fields, train fields)].

    After FAMILY:PRESET, ``KEY=VALUE`` sets a model field and ``train.KEY=VALUE`` a training field,
    as ``genlab train --set`` would (values read as JSON, else kept as text).
    """
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        family, sep, rest = item.partition(":")
        preset, *settings = rest.split(":")
        if not sep or not family or not preset:
            raise SystemExit(f"--presets: expected FAMILY:PRESET[:KEY=VALUE...] (e.g. gan:dcgan), got {item!r}")
        get_preset(family, preset)  # fail now on a typo, not after an hour of training
        model, train_fields = split_settings(settings, f"--presets {item!r}")
        out.append((family, preset, model, train_fields))
    if not out:
        raise SystemExit("--presets: give at least one FAMILY:PRESET")
    return out


def label(family: str, preset: str, model: dict, train_fields: dict) -> str:
    extra = [f"{k}={v}" for k, v in model.items()] + [f"train.{k}={v}" for k, v in train_fields.items()]
    return ":".join([f"{family}:{preset}", *extra])


def train_one(spec: tuple, data, test, minutes: float, device: str, seed: int, run_dir: Path, preset_epochs: bool):
    family, preset, model_fields, train_fields = spec
    p = get_preset(family, preset)
    model_cfg = config_from_dict(type(p.model), {**dataclasses.asdict(p.model), **model_fields}, "model")
    # --preset-epochs: the preset's own epoch count, stopped by the budget if it comes first, as
    # `genlab train FAMILY --preset P --max-minutes M` does; otherwise the budget alone stops training
    epochs = {} if preset_epochs else {"epochs": BIG}
    train_cfg = dataclasses.replace(
        TrainConfig(),
        **{**p.train, **train_fields, **epochs},
        max_minutes=minutes,
        checkpoint_every=BIG,
        log_every=500,
        seed=seed,
        device=device,
    )
    run = RunConfig(family, preset, model_cfg, DataConfig(data.name, data.split), train_cfg)
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


def run_row(run_dir: Path, data, device: str) -> dict:
    """A run trained elsewhere, in the shape :func:`train_one` returns (``--runs``)."""
    try:
        model, cfg = load_run(run_dir, device=device)
    except GenlabError as e:
        raise SystemExit(f"gan_quality.py: {e.message}") from None
    if cfg.data.dataset != data.name or cfg.data.split != data.split:
        raise SystemExit(
            f"{run_dir}: trained on {cfg.data.dataset} {cfg.data.split}, but this comparison is for {data.name} "
            f"{data.split} (--final: the whole train split; without it: fit)"
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "name": f"{cfg.family}:{cfg.preset}",
        "seed": cfg.train.seed,
        "model": model,
        "epochs": summary["steps"] * cfg.train.batch_size / len(data),
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "images_per_second": summary["images_per_second"],
        "warnings": summary.get("warnings", []),
    }


def trained_models(args, specs, names, seeds, data, test, device, out: Path):
    """(name, seed, run directory, train_one's answer) per model to score: the runs given with
    ``--runs``, or each preset trained in turn for the budget, seed by seed, in this process."""
    if args.runs:
        for run_dir in map(Path, args.runs.split(",")):
            t = run_row(run_dir, data, device)
            yield t["name"], t["seed"], run_dir, t
        return
    for seed in seeds:
        for spec, name in zip(specs, names):
            set_seed(seed)
            tag = name.replace(":", "-").replace("=", "").replace('"', "")
            run_dir = out / f"{tag}-seed{seed}"
            t = train_one(spec, data, test, args.minutes, device, seed, run_dir, args.preset_epochs)
            print(
                f"  trained {name} (seed {seed}): {t['steps']} steps, {t['epochs']:.2f} epochs in {t['seconds']:.0f} s",
                file=sys.stderr,
            )
            yield name, seed, run_dir, t


def sampler_of(model) -> str:
    """How the model draws: a diffusion model's sampler and step count, else one network pass."""
    how = sampling_settings(model)  # the capability, not the diffusion model's own attribute
    return f"{how['sampler']} {how['steps']}" if how else "1 pass"


def timed_samples(model, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """``n`` seed-fixed samples and the seconds per 1,000 they took."""
    start = time.perf_counter()
    samples = generate(model, n, generator=torch.Generator().manual_seed(seed))
    return samples, 1000 * (time.perf_counter() - start) / n


def score(samples, test, args, device, extractors, name: str, judge) -> dict:
    """All metrics of one model's samples, as one flat row. ``judge`` is ``(second judge, its features of
    the test images)`` or None."""
    ev = evaluate_samples(
        samples.numpy(),
        args.dataset,
        metrics=METRICS,
        data_dir=args.data_dir,
        seed=args.seed,
        device=device,
        train_split="train" if args.final else "fit",
        source={"benchmark": "gan_quality", "model": name, "n": args.n},
        test=test,
        extractors=extractors,
        baselines=False,
    )
    m = {r["key"]: r for r in ev.result["summary"]}
    ks, modes = ev.result["details"]["ks"], ev.result["details"]["modes"]
    row = {
        "extractor": m["fid"]["extractor"],
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
    }
    if judge is not None:
        row.update(judge_scores(*judge, samples))
    return row


def judge_scores(judge, real_features, samples) -> dict:
    """FID and precision/recall (k=5, as genlab's) in the second judge's features: a recall that is not
    the shipped classifier's view of diversity alone."""
    fake_features = judge.features(samples.numpy())
    pr = prdc(real_features, fake_features, k=5)
    return {
        "judge2": judge.name,
        "fid_judge2": fid_from_features(fake_features, real_features),
        "precision_judge2": pr["precision"],
        "recall_judge2": pr["recall"],
    }


def real_row(data, test, args, device, extractors, judge) -> dict:
    """The ceiling every model is read against: ``-n`` real images of the training split (drawn without
    replacement, seed-fixed), scored against the test split exactly as samples are."""
    images = real_images(data, args.n, args.seed)
    name = f"real data ({data.split} split)"
    return {
        "model": name,
        "seed": args.seed,
        "sampler": "-",
        **score(images, test, args, device, extractors, name, judge),
    }


def format_row(r: dict, j2: bool) -> str:
    """One table line; the real-data row has no training or sampling figures."""
    trained = "train_seconds" in r
    return (
        f"{r['model']:<34} {r['seed']:>4} "
        + (
            f"{r['train_seconds'] / 60:>5.1f} {r['epochs']:>7.2f} {r['images_per_second']:>9,.0f} "
            f"{r['sampler']:>10} {r['sample_seconds_per_1k']:>6.1f}"
            if trained
            else f"{'-':>5} {'-':>7} {'-':>9} {'-':>10} {'-':>6}"
        )
        + f" {r['fid']:>8.2f}"
        + (f" {r['fid_judge2']:>6.2f}" if j2 else "")
        + f" {r['kid']:>8.4f} {r['is']:>6.2f} {r['precision']:>9.3f} {r['recall']:>7.3f}"
        + (f" {r['recall_judge2']:>9.3f}" if j2 else "")
        + f" {r['coverage']:>8.3f} {r['classes_covered']:>4}/{r['num_classes']:<2}"
    )


def summarise(rows: list[dict]) -> list[dict]:
    """Per model over seeds: the mean and sample standard deviation of each headline figure."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        summary: dict = {"model": name, "seeds": [r["seed"] for r in mine]}
        for key in (
            "images_per_second",
            "epochs",
            "fid",
            "fid_judge2",
            "kid",
            "precision",
            "recall",
            "recall_judge2",
            "coverage",
        ):
            values = [r[key] for r in mine if key in r]
            if values:
                summary[key] = statistics.fmean(values)
                summary[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary["classes_covered_min"] = min(r["classes_covered"] for r in mine)
        summary["num_classes"] = mine[0]["num_classes"]
        out.append(summary)
    return out


def main(argv=None) -> int:
    ap = budget_parser(__doc__, minutes=15.0, out="runs/bench-gan-quality")
    ap.add_argument(
        "--presets",
        default="gan:seed,gan:dcgan,gan:hinge-sn,vae:seed",
        help="comma-separated FAMILY:PRESET[:KEY=VALUE...] list (default gan:seed,gan:dcgan,gan:hinge-sn,vae:seed)",
    )
    ap.add_argument("-n", type=int, default=10_000, help="samples drawn and scored per model (default 10000)")
    ap.add_argument("--seeds", default=None, help="comma-separated training seeds (default: --seed)")
    ap.add_argument(
        "--preset-epochs",
        action="store_true",
        help="keep each preset's epoch count, the budget stopping training if it comes first: what "
        "`genlab train ... --max-minutes M` does (default: only the budget stops training)",
    )
    ap.add_argument(
        "--second-judge",
        action="store_true",
        help="also report FID and recall on an independently trained feature network (benchmarks/second_judge.py; "
        "trained once, a few minutes, then cached)",
    )
    ap.add_argument(
        "--final",
        action="store_true",
        help="train on the whole train split and score against the test split: the figure to report, once "
        "(default: train on 'fit', score against 'val', for choosing settings)",
    )
    ap.add_argument("--runs", help="comma-separated run directories to score instead of training models")
    ap.add_argument("--sampler", help="sampler of models that take one (ddpm | ddim | dpm-solver++)")
    ap.add_argument("--steps", type=int, help="sampler steps of models that take them")
    ap.add_argument(
        "--no-real-row",
        action="store_true",
        help="skip the reference row: -n real training images scored like samples, the best a model can "
        "expect of each metric at this n (about 40 s)",
    )
    args = ap.parse_args(argv)

    for run_dir in map(Path, args.runs.split(",") if args.runs else []):  # before minutes of loading data
        if not (run_dir / "config.json").is_file() or not (run_dir / "summary.json").is_file():
            raise SystemExit(f"gan_quality.py: {run_dir} is not a finished genlab run (config.json, summary.json)")
    specs = parse_presets(args.presets)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    device = auto_device() if args.device == "auto" else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, "train" if args.final else "fit", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test" if args.final else "val", data_dir=args.data_dir)
    names = [label(*spec) for spec in specs]
    print(
        f"{args.dataset}: {len(data)} {data.split}, {len(test)} {test.split} images; "
        f"{'trained runs' if args.runs else f'{args.minutes:g} min per model'} on "
        f"{device} ({torch.get_num_threads()} CPU threads); {args.n} samples each; seeds {seeds}; "
        f"models: {args.runs or ', '.join(names)}",
        file=sys.stderr,
    )

    _, extractors, _ = prepare_reference(args.dataset, args.data_dir, None, None, device=device)
    judge = None
    if args.second_judge:
        from second_judge import load_or_train_judge

        loaded = load_or_train_judge(args.dataset, args.data_dir)
        judge = (loaded, loaded.features(test.images))
    warm_up(device)
    t_start = time.perf_counter()
    rows = []
    for name, seed, run_dir, t in trained_models(args, specs, names, seeds, data, test, device, out):
        model = t["model"]
        if isinstance(model, ConfigurableSampler) and (args.sampler or args.steps):
            try:
                model.set_sampling(sampler=args.sampler, steps=args.steps)
            except GenlabError as e:  # the trained run stays in --out: score it again with --runs
                raise SystemExit(f"gan_quality.py: {run_dir}: {e.message}") from None
        samples, s_per_1k = timed_samples(model, args.n, seed)
        grid = out / f"samples-{run_dir.name}.png"
        save_grid(samples[:100], grid, nrow=10)
        t_eval = time.perf_counter()
        scores = score(samples, test, args, device, extractors, name, judge)
        sampler = sampler_of(model)
        del t["model"], model, samples
        print(
            f"  sampled with {sampler} at {s_per_1k:.1f} s per 1,000; evaluated {name} in "
            f"{time.perf_counter() - t_eval:.0f} s",
            file=sys.stderr,
        )
        rows.append(
            {
                "model": name,
                "seed": seed,
                "epochs": round(t["epochs"], 3),
                "steps": t["steps"],
                "train_seconds": round(t["seconds"], 1),
                "images_per_second": round(t["images_per_second"], 1),
                "sampler": sampler,
                "sample_seconds_per_1k": round(s_per_1k, 2),
                **scores,
                "grid": str(grid),
                "run_dir": str(run_dir),
                "warnings": t["warnings"],
            }
        )

    reference = None if args.no_real_row else real_row(data, test, args, device, extractors, judge)
    j2 = judge is not None
    header = (
        f"{'model':<34} {'seed':>4} {'min':>5} {'epochs':>7} {'images/s':>9} {'sampler':>10} {'s/1k':>6} {'FID':>8}"
        f"{' FID-j2' if j2 else ''} {'KID':>8} {'IS':>6} {'precision':>9} {'recall':>7}"
        f"{' recall-j2' if j2 else ''} {'coverage':>8} {'classes':>7}"
    )
    print(f"\nextractor: {rows[0]['extractor']}" + (f"; second judge: {judge[0].name}" if j2 else ""))
    print(
        f"{args.dataset}: trained on {data.split}, scored against the {test.split} split; {args.n} samples per model; "
        + (
            f"the runs {args.runs}"
            if args.runs
            else f"{args.minutes:g} min of training each" + ("; the presets' own epochs" if args.preset_epochs else "")
        )
    )
    print_table(
        header,
        [format_row(r, j2) for r in rows] + ([format_row(reference, j2)] if reference else []),
        "min: training minutes; s/1k: sampling seconds per 1,000 images. "
        "FID, KID: lower is better; IS (1..10), precision, recall, coverage (0..1), classes covered: higher. "
        + ("-j2: in the second judge's features. " if j2 else "")
        + (
            "The real-data row scores real training images as samples: the best a model can expect. "
            if reference
            else ""
        )
        + "Density, class KL and KS tests differing are in results.json.",
    )
    summary = summarise(rows)
    if len(seeds) > 1:
        print()
        print_table(
            f"{'model':<34} {'images/s':>15} {'FID':>15}{' ' * 4 + 'FID-j2' + ' ' * 6 if j2 else ''} "
            f"{'recall':>13} {'classes':>7}",
            [
                f"{s['model']:<34} {s['images_per_second']:>8,.0f} +-{s['images_per_second_std']:>4,.0f} "
                f"{s['fid']:>8.2f} +-{s['fid_std']:>4.1f}"
                + (f" {s['fid_judge2']:>8.2f} +-{s['fid_judge2_std']:>4.1f}" if j2 else "")
                + f" {s['recall']:>6.3f} +-{s['recall_std']:.3f} {s['classes_covered_min']:>4}/{s['num_classes']:<2}"
                for s in summary
            ],
            f"Mean +- sample standard deviation over seeds {seeds}; classes: the fewest covered by any seed.",
        )
    (out / "results.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "device": device,
                "extractor": rows[0]["extractor"],
                "second_judge": judge[0].name if judge is not None else None,
                "metrics": list(METRICS),
                "total_seconds": round(time.perf_counter() - t_start, 1),
                "rows": rows,
                "real_data": reference,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out / 'results.json'} and {len(rows)} sample grids", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
