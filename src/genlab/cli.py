"""The ``genlab`` command: a thin shell over the library's functions.

Every user-caused problem is a :class:`GenlabError`: one line on stderr and exit
code 2 (130 when training was interrupted). ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import ConfigError, GenlabError

# Flags that set a model-config field, by family-agnostic name: flag -> (field, type).
MODEL_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--latent-dim": ("latent_dim", int),
    "--beta": ("beta", float),
    "--recon-reduction": ("recon_reduction", str),
    "--likelihood": ("likelihood", str),
    "--arch": ("arch", str),
    "--kl-warmup-steps": ("kl_warmup_steps", int),
    "--loss": ("loss", str),
    "--d-steps": ("d_steps", int),
    "--ema-decay": ("ema_decay", float),
}
TRAIN_FLAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--epochs": ("epochs", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--lr-schedule": ("lr_schedule", str),
    "--warmup-steps": ("warmup_steps", int),
    "--lr-clock": ("lr_clock", str),
    "--seed": ("seed", int),
    "--device": ("device", str),
    "--log-every": ("log_every", int),
    "--checkpoint-every": ("checkpoint_every", int),
    "--keep-checkpoints": ("keep_checkpoints", int),
    "--grad-clip": ("grad_clip", float),
    "--on-nonfinite": ("on_nonfinite", str),
    "--sample-every": ("sample_every", int),
    "--max-steps": ("max_steps", int),
    "--max-minutes": ("max_minutes", float),
    "--precision": ("precision", str),
}


FLAG_HELP = {
    "--latent-dim": "size of z",
    "--beta": "KL weight (VAE): loss = recon + beta * KL",
    "--recon-reduction": "VAE: 'sum' over pixels (the ELBO) or 'mean' (the tutorial listing)",
    "--likelihood": "VAE decoder: bernoulli | mse | gaussian (learned scale)",
    "--arch": "VAE: mlp | conv; GAN: mlp | dcgan",
    "--kl-warmup-steps": "VAE: raise beta linearly from 0 over this many steps",
    "--loss": "GAN: ns | minimax | hinge | lsgan | wgan-gp",
    "--d-steps": "GAN: discriminator steps per generator step",
    "--ema-decay": "GAN: EMA of the generator's weights for sampling (0 = off)",
    "--epochs": "passes over the training split",
    "--batch-size": "global batch (split over torchrun processes)",
    "--lr": "learning rate (GANs: the generator's; D's is lr * model.d_lr_mult)",
    "--lr-schedule": "constant | cosine | linear (decay to 0 over the planned steps)",
    "--warmup-steps": "raise the learning rate linearly over these first steps",
    "--lr-clock": "steps | time (the schedule spans --max-minutes of training instead of the planned steps)",
    "--seed": "one seed for weights, data order and noise (default 0)",
    "--device": "auto | cpu | cuda | cuda:N",
    "--log-every": "steps between metrics.jsonl lines",
    "--checkpoint-every": "steps between resumable checkpoints (0 = each epoch)",
    "--keep-checkpoints": "how many checkpoints to keep",
    "--grad-clip": "clip the gradient norm to this value",
    "--on-nonfinite": "stop (error naming the step) | skip (drop that step's update)",
    "--sample-every": "GANs: steps between progress grids (0 = family default)",
    "--max-steps": "stop after this many optimiser steps",
    "--max-minutes": "stop after this wall-clock budget (a checkpoint is written)",
    "--precision": "fp32 | bf16 (autocast) | auto (bf16 where the hardware has it)",
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _parse_value(text: str) -> Any:
    """--set values: JSON when it parses (numbers, true, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- commands -----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .config import DataConfig, RunConfig, TrainConfig
    from .models import get_preset
    from .models.base import config_from_dict
    from .train import train

    if args.resume:
        run_dir = Path(args.resume)
        run = RunConfig.load(run_dir / "config.json")
        # A resumed run may only be told when to stop: anything else would not continue the same run.
        may_change = {"--epochs", "--max-steps", "--max-minutes"}
        fixed = [f for f in {**MODEL_FLAGS, **TRAIN_FLAGS} if f not in may_change and getattr(args, _dest(f)) is not None]
        fixed += [f"--{f}" for f in ("set", "compile", "overwrite") if getattr(args, f)]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change a run being resumed; only --epochs, --max-steps "
                              f"and --max-minutes can (or start a new run)")
        for flag in sorted(may_change):
            if getattr(args, _dest(flag)) is not None:
                setattr(run.train, TRAIN_FLAGS[flag][0], getattr(args, _dest(flag)))
        result = train(run, run_dir, resume=True, quiet=args.quiet)
    else:
        if not args.family:
            raise ConfigError("say which model to train: genlab train vae|gan [--preset NAME], or --resume RUN_DIR")
        preset = get_preset(args.family, args.preset)
        model_cfg = dataclasses.asdict(preset.model)
        train_cfg = {**dataclasses.asdict(TrainConfig()), **preset.train}
        for flag, (field, _) in MODEL_FLAGS.items():
            value = getattr(args, _dest(flag))
            if value is not None:
                if field not in model_cfg:
                    raise ConfigError(f"{flag} does not apply to {args.family} models")
                model_cfg[field] = value
        for flag, (field, _) in TRAIN_FLAGS.items():
            value = getattr(args, _dest(flag))
            if value is not None:
                train_cfg[field] = value
        if args.compile:
            train_cfg["compile"] = True
        for item in args.set or []:
            key, sep, value = item.partition("=")
            section, _, name = key.partition(".")
            if not sep or section not in ("model", "train") or not name:
                raise ConfigError(f"--set expects model.KEY=VALUE or train.KEY=VALUE, got {item!r}")
            (model_cfg if section == "model" else train_cfg)[name] = _parse_value(value)
        family_cls = __import__("genlab.models", fromlist=["get_family"]).get_family(args.family)
        run = RunConfig(
            family=args.family, preset=args.preset,
            model=config_from_dict(family_cls.config_class, model_cfg, "model"),
            data=DataConfig(dataset=args.dataset, split=args.split, data_dir=args.data_dir),
            train=config_from_dict(TrainConfig, train_cfg, "train"),
        )
        result = train(run, Path(args.out) if args.out else None, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet and result.seconds > 0:  # 0: a finished run was resumed and left as it was
        print(f"trained {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.1f}s, "
              f"{result.images_per_second:,.0f} images/s -> {result.run_dir}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_run
    from .sample import generate, save_samples

    model, run = load_run(Path(args.run), device=_device(args.device))
    labels = None
    if args.label is not None:
        if not model.conditional:
            raise ConfigError(f"--label needs a conditional model; {args.run} is {run.family}/{run.preset}")
        num_classes = model.config.num_classes
        if not 0 <= args.label < num_classes:
            raise ConfigError(f"--label must be in 0..{num_classes - 1}, got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    images = generate(model, args.n, generator=gen, labels=labels)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    save_samples(images, out)
    if not args.quiet:
        print(f"wrote {args.n} samples {tuple(images.shape[1:])} to {out}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import dataset_status, format_status_table

    print(format_status_table(dataset_status(data_dir=args.data_dir)))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .models import all_presets

    rows = [(fam, p.name, p.description) for fam, p in all_presets()]
    width = max(len(f"{f} {n}") for f, n, _ in rows)
    for fam, name, desc in rows:
        print(f"{f'{fam} {name}':<{width}}  {desc}")
    return 0


def _device(name: str):
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU")
    return name


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlab", description="Train, sample and evaluate deep generative models.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model into a run directory",
                       description="Train a VAE or GAN. Flags override the preset's settings.")
    p.add_argument("family", nargs="?", choices=["vae", "gan"], help="model family")
    p.add_argument("--preset", default="seed", help="named configuration (see `genlab presets`; default seed)")
    p.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist (default mnist)")
    p.add_argument("--split", default="train", choices=["train", "test"],
                   help="split to train on (default train; MNIST's train split may be missing: use test)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files (else GENLAB_DATA_DIR, cache, "
                                      "/usr/share/datasets)")
    p.add_argument("--out", help="run directory (default runs/FAMILY-PRESET-DATASET-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (slower start)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="set any config field, e.g. --set model.hidden=[512,256] (repeatable)")
    for flag, (field, typ) in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        section = "model" if flag in MODEL_FLAGS else "train"
        p.add_argument(flag, type=typ, default=None, dest=_dest(flag), metavar=typ.__name__.upper(),
                       help=FLAG_HELP.get(flag, f"sets {section}.{field} (default: the preset's)"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, help="FILE.png (grid) or FILE.npy (float32 N,1,28,28 in [0,1])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, help="class to draw (conditional models)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("datasets", help="list datasets, where their files are and whether checksums match")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("presets", help="list the model presets")
    p.set_defaults(func=cmd_presets)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable]:
    """Commands that live beside the modules they drive (evaluation, latent exploration, ...)."""
    registrars = []
    for module in ("genlab.evaluate", "genlab.explore"):
        try:
            mod = __import__(module, fromlist=["register_cli"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        registrars.append(mod.register_cli)
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GenlabError as e:
        if args.debug:
            raise
        print(f"genlab: error: {' '.join(str(e).splitlines())}", file=sys.stderr)  # one line, always
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
