"""VAE quality under a fixed wall-clock budget: genlab's mlp, conv and vamp presets vs pytorch/examples' VAE.

    python benchmarks/vae_quality.py --presets vamp,vamp:flow_steps=0,vamp:train.lr=2e-3   # choose on val
    python benchmarks/vae_quality.py --presets vamp --seeds 0,1,2 --final     # the test figure, once
    python benchmarks/vae_quality.py --minutes 0.2 --eval-images 200 --k 50   # smoke mode (~1-2 min)

Validation protocol: every model trains on the 'fit' split (Fashion-MNIST's training images
but the last 5,000, see ``genlab.data.DERIVED_SPLITS``) and is scored on the 'val' split (those
5,000), which is where presets and settings are chosen. ``--final`` scores on the official test
split instead: run it once, for the figure you report, with several ``--seeds``; the summary
gives the paired NLL difference with the reference trained with the same seed (its standard
error over images and its spread over seeds).

All train dynamically binarised (each step sees
x ~ Bernoulli(intensity), as in the IWAE paper), for the same wall-clock budget each. The
reference is pytorch/examples' ``vae/main.py`` written out as that script has it: torchvision's
per-item MNIST + ``ToTensor`` (``reference_vae.TorchvisionMNIST``) -> ``DataLoader(batch 128,
shuffle)`` -> 784-400-20 MLP
(fc1/fc21/fc22/fc3/fc4), BCE on sigmoid outputs summed over pixels and batch, Adam 1e-3, with
the binarisation added for fairness. All are then evaluated by the same code,
:func:`genlab.nll.evaluate_likelihood`, on the first ``--eval-images`` scored images binarised with seed 0:
test ELBO and IWAE NLL (k importance samples, Burda et al. 2016) in nats.

Prints one table per (model, seed) (epochs done, images/s, ELBO, IWAE NLL) and one summary per
model over seeds, and writes both to OUT/results.json; the genlab runs stay in OUT/ for ``genlab nll`` / ``explore``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import BIG, auto_device, budget_parser, print_table, split_settings, warm_up
from genlab.config import DataConfig, RunConfig, TrainConfig
from genlab.data import load_dataset
from genlab.models import get_preset
from genlab.models.base import config_from_dict
from genlab.models.vae import VAEConfig
from genlab.models.vae.gaussian import active_units
from genlab.models.vae.likelihood import bounds
from genlab.nll import evaluate_likelihood
from genlab.seeding import set_seed
from genlab.training import train
from reference_vae import ExamplesVAE, TorchvisionMNIST, examples_loss


# -- the reference: pytorch/examples vae/main.py (benchmarks/reference_vae.py) ---------------------
def train_reference(data, minutes: float, device: torch.device, seed: int) -> dict:
    torch.manual_seed(seed)
    model = ExamplesVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(TorchvisionMNIST(data.images, data.labels), batch_size=128, shuffle=True)
    images, t0, done = 0, time.perf_counter(), False
    model.train()
    while not done:
        for x, _ in loader:
            x = torch.bernoulli(x.to(device))  # dynamic binarisation, as genlab's binarize=true
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            examples_loss(recon, x, mu, logvar).backward()
            optimizer.step()
            images += x.shape[0]
            if time.perf_counter() - t0 > 60 * minutes:
                done = True
                break
    seconds = time.perf_counter() - t0
    return {"model": model.eval(), "epochs": images / len(data), "images_per_second": images / seconds}


class ExamplesForEvaluation(nn.Module):
    """The reference as a LikelihoodModel (genlab.models.base), so genlab.nll scores it like a preset.

    log p(x|z) = -BCE(sigmoid(fc4(...)), x) summed over pixels, computed from the logits
    (the same number, without sigmoid's rounding at 0 and 1); the bound is genlab's IWAE code.
    """

    conditional = False
    likelihood_name = "bernoulli"
    likelihood_data = "binary"

    def __init__(self, ref: ExamplesVAE):
        super().__init__()
        self.ref = ref

    def encode(self, x, y=None):
        return self.ref.encode(x.flatten(1))

    def log_likelihood(self, x, z, y=None):
        logits = self.ref.fc4(F.relu(self.ref.fc3(z)))  # (S, B, 784)
        x = x.flatten(1).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def likelihood_report(self, x, labels=None, *, k, generator=None, chunk=None):
        return bounds(self, x, None, k=k, batch_size=len(x), chunk=chunk, generator=generator)

    def likelihood_summary(self, x, labels=None):
        return {"active_units": active_units(self.encode(x)[0].detach())[0], "latent_dim": 20}


# -- genlab's presets -----------------------------------------------------------------------------


def parse_variant(spec: str) -> tuple[str, dict, dict]:
    """'vamp:flow_steps=2:train.lr=2e-3' -> ('vamp', {'flow_steps': 2}, {'lr': 0.002}): a preset with
    model fields (KEY) and training fields (train.KEY) set as ``genlab train --set`` would (values
    read as JSON)."""
    preset, *items = spec.split(":")
    model, train = split_settings(items, f"--presets {spec!r}")
    return preset, model, train


def train_genlab(spec: str, data, heldout, minutes: float, device: str, seed: int, out: Path) -> dict:
    preset, model_overrides, train_overrides = parse_variant(spec)
    p = get_preset("vae", preset)
    fields = {**dataclasses.asdict(p.model), **model_overrides, "binarize": True}  # --set model.binarize=true
    model_cfg = config_from_dict(VAEConfig, fields, "model")
    out = out / f"{spec.replace(':', '-').replace('=', '')}-seed{seed}"
    train_cfg = dataclasses.replace(
        TrainConfig(),
        **{**p.train, **train_overrides, "epochs": BIG},
        max_minutes=minutes,
        checkpoint_every=BIG,
        log_every=500,
        seed=seed,
        device=device,
    )
    if train_cfg.lr_schedule != "constant":
        # A decaying rate must end where the budget does: lr_clock=time spans the decay over the
        # minutes instead of a step count that a probe of the machine's speed would have to guess.
        train_cfg = dataclasses.replace(train_cfg, lr_clock="time")
    run = RunConfig("vae", preset, model_cfg, DataConfig(data.name, data.split), train_cfg)
    result = train(run, out, overwrite=True, quiet=True, data=data, heldout=heldout)
    from genlab.checkpoint import load_run

    model, _ = load_run(out, device=device if device != "auto" else auto_device())
    return {"model": model, "epochs": result.epochs, "images_per_second": result.images_per_second}


# -- main ---------------------------------------------------------------------------------------------
def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a - b over the same images and its standard error (per-image NLLs, float64)."""
    d = a - b
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def evaluate(name: str, t: dict, images, args) -> dict:
    ev = evaluate_likelihood(
        t["model"], images, k=args.k, n_images=args.eval_images, seed=0, binarize=True, keep_per_image=True
    )
    return {
        "model": name,
        "seed": t["seed"],
        "epochs": round(t["epochs"], 3),
        "images_per_second": round(t["images_per_second"], 1),
        "elbo_nats": ev["elbo_nats"],
        "iwae_nll_nats": ev["iwae_nll_nats"],
        "iwae_nll_sem": ev["iwae_nll_sem"],
        "active_units": ev["active_units"],
        "latent_dim": ev["latent_dim"],
        "per_image_nll": -ev["per_image_bound"],
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Per model over seeds: mean NLL, its spread (sample std over seeds) and the paired difference
    with the reference trained with the same seed (mean over seeds; standard error over images of
    each seed's paired difference, pooled)."""
    ref = {r["seed"]: r for r in rows if r["model"] == REFERENCE}
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        nll = torch.tensor([r["iwae_nll_nats"] for r in mine], dtype=torch.float64)
        diffs = [paired(r["per_image_nll"], ref[r["seed"]]["per_image_nll"]) for r in mine]
        d = torch.tensor([m for m, _ in diffs], dtype=torch.float64)
        out.append(
            {
                "model": name,
                "seeds": [r["seed"] for r in mine],
                "nll_mean": round(float(nll.mean()), 3),
                "nll_seed_std": round(float(nll.std()), 3) if len(mine) > 1 else None,
                "diff_mean": round(float(d.mean()), 3),
                "diff_seed_std": round(float(d.std()), 3) if len(mine) > 1 else None,
                "diff_image_sem": round(math.sqrt(sum(se**2 for _, se in diffs)) / len(diffs), 3),
                "diff_per_seed": [round(m, 3) for m, _ in diffs],
            }
        )
    return out


REFERENCE = "pytorch/examples"


def _std(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.2f}"  # one seed has no spread


def main(argv=None) -> int:
    ap = budget_parser(__doc__, minutes=10.0, out="runs/bench-vae-quality")
    ap.add_argument("--eval-images", type=int, default=2000, help="evaluation images (default 2000)")
    ap.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    ap.add_argument(
        "--presets",
        default="mlp,conv,vamp",
        help="genlab presets to train, each optionally with overrides as PRESET:KEY=VALUE[:train.KEY=VALUE] "
        "(default mlp,conv,vamp)",
    )
    ap.add_argument("--seeds", default=None, help="comma-separated training seeds (default: --seed)")
    ap.add_argument(
        "--final",
        action="store_true",
        help="score on the official test split, once, after choosing on val (default: score on val)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]

    device = auto_device() if args.device == "auto" else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, "fit", data_dir=args.data_dir)
    scored = load_dataset(args.dataset, "test" if args.final else "val", data_dir=args.data_dir)
    print(
        f"{args.dataset}: train on {len(data)} 'fit' images, score on {len(scored)} '{scored.split}' images; "
        f"{args.minutes:g} min per model on {device} ({torch.get_num_threads()} CPU threads); seeds {seeds}; "
        f"eval: first {args.eval_images}, k={args.k}",
        file=sys.stderr,
    )

    warm_up(device)
    rows = []
    for seed in seeds:
        trained = {}
        for name in args.presets.split(","):
            set_seed(seed)
            trained[f"genlab {name}"] = {
                **train_genlab(name, data, scored, args.minutes, device, seed, out),
                "seed": seed,
            }
            print(f"  seed {seed}: trained genlab {name}", file=sys.stderr)
        ref = train_reference(data, args.minutes, torch.device(device), seed)
        trained[REFERENCE] = {**ref, "model": ExamplesForEvaluation(ref["model"]), "seed": seed}
        print(f"  seed {seed}: trained {REFERENCE}", file=sys.stderr)
        rows += [evaluate(name, t, scored, args) for name, t in trained.items()]

    w = max(18, *(len(r["model"]) for r in rows))
    what = f"{args.dataset} {scored.split}, first {min(args.eval_images, len(scored))} images binarised (seed 0)"
    header = (
        f"{'model':<{w}} {'seed':>4} {'epochs':>7} {'images/s':>9} {'ELBO':>8} {f'IWAE NLL (k={args.k})':>17} "
        f"{'active':>7}"
    )
    print(f"\n{what}; nats; {args.minutes:g} min of training each on the 'fit' images")
    print_table(
        header,
        [
            f"{r['model']:<{w}} {r['seed']:>4} {r['epochs']:>7.2f} {r['images_per_second']:>9,.0f} "
            f"{r['elbo_nats']:>8.2f} {r['iwae_nll_nats']:>10.2f} +/-{r['iwae_nll_sem']:<4.2f} "
            f"{r['active_units']:>3}/{r['latent_dim']:<3}"
            for r in rows
        ],
        "+/-: standard error over images of one model's NLL.",
    )
    summary = summarise(rows)
    header = f"{'model':<{w}} {'NLL mean':>9} {'seed std':>9} {'NLL - ref':>10} {'seed std':>9} {'image s.e.':>10}"
    print()
    print_table(
        header,
        [
            f"{s['model']:<{w}} {s['nll_mean']:>9.2f} {_std(s['nll_seed_std'])} {s['diff_mean']:>+10.2f} "
            f"{_std(s['diff_seed_std'])} {s['diff_image_sem']:>10.3f}"
            for s in summary
            if s["model"] != REFERENCE
        ],
        f"Over seeds {seeds}. NLL - ref: paired with the reference trained with the same seed, scored on the "
        "same images (< 0: better than pytorch/examples at the same budget); seed std: spread over seeds; "
        "image s.e.: standard error over images of the mean paired difference.",
    )
    if args.final:
        print(f"(the '{scored.split}' figure: report it once; choose settings with the default, val)")
    for r in rows:
        r.pop("per_image_nll")
    result = {"args": vars(args), "device": device, "scored_split": scored.split, "rows": rows, "summary": summary}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
