"""VAE quality under a fixed wall-clock budget: genlab's mlp, conv and vamp presets vs pytorch/examples' VAE.

    python benchmarks/vae_quality.py                      # 10 minutes per model, the real figure
    python benchmarks/vae_quality.py --minutes 0.2 --eval-images 200 --k 50   # smoke mode (~1-2 min)
    python benchmarks/vae_quality.py --presets vamp,vamp:flow_steps=2      # a preset with model overrides

All train on the full Fashion-MNIST train split, dynamically binarised (each step sees
x ~ Bernoulli(intensity), as in the IWAE paper), for the same wall-clock budget each. The
reference is pytorch/examples' ``vae/main.py`` written out as that script has it: torchvision's
per-item MNIST + ``ToTensor`` (``reference_vae.TorchvisionMNIST``) -> ``DataLoader(batch 128,
shuffle)`` -> 784-400-20 MLP
(fc1/fc21/fc22/fc3/fc4), BCE on sigmoid outputs summed over pixels and batch, Adam 1e-3, with
the binarisation added for fairness. All are then evaluated by the same code,
:func:`genlab.nll.evaluate_likelihood`, on the first ``--eval-images`` test images binarised with seed 0:
test ELBO and IWAE NLL (k importance samples, Burda et al. 2016) in nats.

Prints one table (epochs done, images/s, test ELBO, IWAE NLL, NLL difference vs the reference)
and writes it to OUT/results.json; the genlab runs stay in OUT/ for ``genlab nll`` / ``explore``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import BIG, auto_device, budget_parser, print_table, warm_up
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


def parse_variant(spec: str) -> tuple[str, dict]:
    """'vamp:flow_steps=2:latent_dim=48' -> ('vamp', {'flow_steps': 2, 'latent_dim': 48}): a preset
    with model fields set as ``genlab train --set model.KEY=VALUE`` would (values read as JSON)."""
    preset, *items = spec.split(":")
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--presets: expected PRESET[:KEY=VALUE...], got {spec!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return preset, overrides


def train_genlab(spec: str, data, test, minutes: float, device: str, seed: int, out: Path) -> dict:
    preset, overrides = parse_variant(spec)
    p = get_preset("vae", preset)
    fields = {**dataclasses.asdict(p.model), **overrides, "binarize": True}  # --set model.binarize=true
    model_cfg = config_from_dict(VAEConfig, fields, "model")
    out = out / spec.replace(":", "-").replace("=", "")
    train_cfg = dataclasses.replace(
        TrainConfig(),
        **{**p.train, "epochs": BIG},
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
    run = RunConfig("vae", preset, model_cfg, DataConfig(data.name, "train"), train_cfg)
    result = train(run, out, overwrite=True, quiet=True, data=data, heldout=test)
    from genlab.checkpoint import load_run

    model, _ = load_run(out, device=device if device != "auto" else auto_device())
    return {"model": model, "epochs": result.epochs, "images_per_second": result.images_per_second}


# -- main ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = budget_parser(__doc__, minutes=10.0, out="runs/bench-vae-quality")
    ap.add_argument("--eval-images", type=int, default=2000, help="test images evaluated (default 2000)")
    ap.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    ap.add_argument(
        "--presets",
        default="mlp,conv,vamp",
        help="genlab presets to train, each optionally with model overrides as PRESET:KEY=VALUE[:KEY=VALUE] "
        "(default mlp,conv,vamp)",
    )
    args = ap.parse_args(argv)

    device = auto_device() if args.device == "auto" else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    print(
        f"{args.dataset}: {len(data)} train, {len(test)} test images; {args.minutes:g} min per model on "
        f"{device} ({torch.get_num_threads()} CPU threads); eval: {args.eval_images} test images, k={args.k}",
        file=sys.stderr,
    )

    warm_up(device)
    trained = {}
    for name in args.presets.split(","):
        set_seed(args.seed)
        trained[f"genlab {name}"] = train_genlab(name, data, test, args.minutes, device, args.seed, out)
        print(f"  trained genlab {name}", file=sys.stderr)
    ref = train_reference(data, args.minutes, torch.device(device), args.seed)
    trained["pytorch/examples"] = {**ref, "model": ExamplesForEvaluation(ref["model"])}
    print("  trained pytorch/examples", file=sys.stderr)

    rows = []
    for name, t in trained.items():
        ev = evaluate_likelihood(t["model"], test, k=args.k, n_images=args.eval_images, seed=0, binarize=True)
        rows.append(
            {
                "model": name,
                "epochs": round(t["epochs"], 3),
                "images_per_second": round(t["images_per_second"], 1),
                "test_elbo_nats": ev["elbo_nats"],
                "iwae_nll_nats": ev["iwae_nll_nats"],
                "iwae_nll_sem": ev["iwae_nll_sem"],
                "active_units": ev["active_units"],
                "latent_dim": ev["latent_dim"],
            }
        )
    ref_row = rows[-1]
    for r in rows:
        r["nll_minus_reference"] = round(r["iwae_nll_nats"] - ref_row["iwae_nll_nats"], 3)
        r["speed_vs_reference"] = round(r["images_per_second"] / ref_row["images_per_second"], 2)

    w = max(18, *(len(r["model"]) for r in rows))
    header = (
        f"{'model':<{w}} {'epochs':>7} {'images/s':>9} {'test ELBO':>10} {f'IWAE NLL (k={args.k})':>17} "
        f"{'NLL - ref':>9} {'speed/ref':>9} {'active':>7}"
    )
    print(
        f"\n{args.dataset} test, first {min(args.eval_images, len(test))} images binarised (seed 0); nats; "
        f"{args.minutes:g} min of training each"
    )
    print_table(
        header,
        [
            f"{r['model']:<{w}} {r['epochs']:>7.2f} {r['images_per_second']:>9,.0f} "
            f"{r['test_elbo_nats']:>10.2f} {r['iwae_nll_nats']:>10.2f} +/-{r['iwae_nll_sem']:<4.2f} "
            f"{r['nll_minus_reference']:>+9.2f} {r['speed_vs_reference']:>8.2f}x "
            f"{r['active_units']:>3}/{r['latent_dim']:<3}"
            for r in rows
        ],
        "NLL - ref < 0: better than pytorch/examples under the same budget. +/-: standard error over "
        "images (the models share the test images, so differences are tighter than that).",
    )
    (out / "results.json").write_text(json.dumps({"args": vars(args), "device": device, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
