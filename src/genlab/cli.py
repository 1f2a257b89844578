"""The ``genlab`` command: a thin shell over the library's functions.

Every user-caused problem is a :class:`GenlabError`: one line on stderr and exit
code 2 (130 when training was interrupted). ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .argtypes import bounded_int, output_path, seed
from .errors import ConfigError, GenlabError


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as genlab's one line and exit code 2 (the help shows usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"genlab: error: {self.prog.removeprefix('genlab ')}: {' '.join(message.split())}\n")


# Flags that set a training-config field: flag -> (field, type, help). Model flags come from the
# registry (genlab.models.model_flags), each family declaring its own.
TRAIN_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--epochs": ("epochs", int, "passes over the training split"),
    "--batch-size": ("batch_size", int, "global batch (split over torchrun processes)"),
    "--lr": ("lr", float, "learning rate (a GAN's: the generator's; D's is lr * model.d_lr_mult)"),
    "--lr-schedule": ("lr_schedule", str, "constant | cosine | linear (decay to 0 over the planned steps)"),
    "--warmup-steps": ("warmup_steps", int, "raise the learning rate linearly over these first steps"),
    "--lr-clock": (
        "lr_clock",
        str,
        "steps | time (the schedule spans --max-minutes of training instead of the planned steps)",
    ),
    "--seed": ("seed", seed, "one seed for weights, data order and noise (default 0)"),
    "--device": ("device", str, "auto | cpu | cuda | cuda:N"),
    "--log-every": ("log_every", int, "steps between metrics.jsonl lines"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between resumable checkpoints (0 = each epoch)"),
    "--keep-checkpoints": ("keep_checkpoints", int, "how many checkpoints to keep"),
    "--grad-clip": ("grad_clip", float, "clip the gradient norm to this value"),
    "--on-nonfinite": ("on_nonfinite", str, "stop (error naming the step) | skip (drop that step's update)"),
    "--sample-every": (
        "sample_every",
        int,
        "steps between progress grids (0 = the family's default, shortened so a short run gets about 8)",
    ),
    "--max-steps": ("max_steps", int, "stop after this many optimiser steps"),
    "--max-minutes": ("max_minutes", float, "stop after this wall-clock budget (a checkpoint is written)"),
    "--precision": ("precision", str, "fp32 | bf16 (autocast) | auto (bf16 where the hardware has it)"),
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Each family's sampling options (a ConfigurableSampler's: --sampler, --steps, ...), for every
    command that draws samples from a run."""
    from .models import sample_flags

    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for spec in sample_flags().values():
        if spec.families not in groups:
            groups[spec.families] = parser.add_argument_group(f"sampling options ({', '.join(spec.families)})")
        groups[spec.families].add_argument(
            spec.flag, type=spec.type, dest=_dest(spec.flag), metavar=spec.type.__name__.upper(), help=spec.help
        )


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line (option -> value), for ``configure_sampling``."""
    from .models import sample_flags

    given = {spec.field: getattr(args, _dest(flag), None) for flag, spec in sample_flags().items()}
    return {option: value for option, value in given.items() if value is not None}


def _parse_value(text: str) -> Any:
    """--set values: JSON when it parses (numbers, true, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# -- commands -----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .api import read_config, run_config
    from .config import RunConfig, resume_may_change
    from .models import model_flags
    from .runs import resolve_run_dir
    from .training import train

    flags = model_flags()
    if args.resume:
        if args.config:
            raise ConfigError("--config starts a new run; --resume continues one with its own config: pass one")
        run_dir = resolve_run_dir(args.resume)
        run = RunConfig.load(run_dir / "config.json")
        # A resumed run may only change what the resume policy allows (config.RESUME_MAY_CHANGE):
        # when to stop, log and save, and where to run; anything else would not continue the same run.
        allowed = {flag for flag, (field, _, _) in TRAIN_FLAGS.items() if resume_may_change(f"train.{field}")}
        fixed = [f for f in [*flags, *TRAIN_FLAGS] if f not in allowed and getattr(args, _dest(f)) is not None]
        fixed += [f"--{f}" for f in ("overwrite",) if getattr(args, f)]
        fixed += [f"--{f}" for f in ("preset", "dataset", "split") if getattr(args, f)]
        fixed += [f for f in ("--image-size", "--skip-bad-images") if getattr(args, _dest(f))]
        sets = _parse_sets(args.set)
        fixed += [f"--set {k}" for k in sets if not resume_may_change(k)]
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change a run being resumed; only "
                f"{', '.join(sorted(allowed))} can (or start a new run)"
            )
        for flag in sorted(allowed):
            if getattr(args, _dest(flag)) is not None:
                setattr(run.train, TRAIN_FLAGS[flag][0], getattr(args, _dest(flag)))
        for key, value in sets.items():
            setattr(run.train, key.partition(".")[2], value)
        if args.compile:
            run.train.compile = True
        if args.data_dir:  # the data may have moved (config.RESUME_MAY_CHANGE)
            run.data.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
        run.train.validate()
        result = train(run, run_dir, resume=True, quiet=args.quiet)
    else:
        # A config file is the base and every flag given explicitly overrides it (flags default to None).
        base = read_config(args.config) if args.config else None
        family = args.family or (base.family if base is not None else None)
        model_cfg: dict[str, Any] = {}
        for flag, spec in flags.items():
            value = getattr(args, _dest(flag))
            if value is not None:
                if family is not None and family not in spec.families:
                    raise ConfigError(
                        f"{flag} does not apply to {family} models (it is a flag of {', '.join(spec.families)})"
                    )
                model_cfg[spec.field] = value
        train_cfg = {f: getattr(args, _dest(flag)) for flag, (f, _, _) in TRAIN_FLAGS.items()}
        train_cfg = {f: v for f, v in train_cfg.items() if v is not None}
        if args.compile:
            train_cfg["compile"] = True
        for key, value in _parse_sets(args.set).items():
            section, _, name = key.partition(".")
            (model_cfg if section == "model" else train_cfg)[name] = value
        run = run_config(
            args.family,
            config=base,
            preset=args.preset,
            dataset=args.dataset,
            split=args.split,
            data_dir=args.data_dir,
            model=model_cfg,
            train=train_cfg,
            image_size=args.image_size,
            skip_bad_images=args.skip_bad_images or None,
        )
        result = train(run, Path(args.out) if args.out else None, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet and result.seconds > 0:  # 0: a finished run was resumed and left as it was
        print(result.summary_line())
    return 0


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    """--set SECTION.KEY=VALUE items as {"section.key": value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in ("model", "train") or not name:
            raise ConfigError(f"--set expects model.KEY=VALUE or train.KEY=VALUE, got {item!r}")
        out[key] = _parse_value(value)
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_run
    from .device import inference_device
    from .sample import MAX_GRID, generate, save_grid, stream_samples_npy

    out: Path = args.out
    suffix = out.suffix.lower()
    if suffix not in (".png", ".npy"):  # checked before any work: a bad --out never costs a sampling run
        raise ConfigError(f"{out}: --out must end in .png (a grid) or .npy (an array)")
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    from .io import check_writable_folder

    check_writable_folder(out.parent)
    if suffix == ".png" and args.n > MAX_GRID:
        raise ConfigError(
            f"a PNG grid of {args.n:,} images is unreadable (at most {MAX_GRID:,}); write them to FILE.npy"
        )
    model, run = load_run(Path(args.run), device=inference_device(args.device))
    labels = None
    if args.label is not None:
        if not model.conditional:
            raise ConfigError(f"--label needs a conditional model; {args.run} is {run.family}/{run.preset}")
        if not 0 <= args.label < model.num_classes:
            raise ConfigError(f"--label must be in 0..{model.num_classes - 1}, got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    from .models import configure_sampling

    configure_sampling(model, sampling_options(args), f"{args.run} ({run.family}/{run.preset})")
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    if suffix == ".npy":
        shape = stream_samples_npy(model, args.n, out, generator=gen, labels=labels, progress=not args.quiet)
    else:
        images = generate(model, args.n, generator=gen, labels=labels, progress=not args.quiet)
        save_grid(images, out)
        shape = tuple(images.shape)
    if not args.quiet:
        print(f"wrote {args.n} samples {tuple(shape[1:])} to {out}")
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


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .models import family_names, model_flags

    parser = Parser(prog="genlab", description="Train, sample and evaluate deep generative models.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train a model into a run directory",
        description="Train a model of one family. Flags override the preset's settings.",
    )
    p.add_argument("family", nargs="?", choices=family_names(), help="model family")
    p.add_argument("--preset", help="named configuration (see `genlab presets`; default seed)")
    p.add_argument(
        "--config",
        metavar="FILE.json",
        help="start from these settings (e.g. a run's config.json); flags given explicitly override them",
    )
    p.add_argument(
        "--dataset",
        help="mnist, fashion-mnist (default mnist) or folder:PATH, a folder of PNG/JPEG images, optionally one "
        "sub-folder per class (docs/data.md)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="folder datasets: resize each image's short side to N (Lanczos) and keep the centre N x N",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="folder datasets: leave out unreadable images (each named in a warning) instead of refusing",
    )
    p.add_argument(
        "--split",
        choices=["train", "test", "fit", "val"],  # genlab.data.split_names(), without importing torch
        help="split to train on (default train; fit/val: train minus/only its last 5,000 images, for tuning; "
        "MNIST's train split may be missing: use test)",
    )
    p.add_argument(
        "--data-dir",
        help="folder holding the dataset's IDX files, relative to the current directory (stored absolute in "
        "the run; else GENLAB_DATA_DIR, cache, /usr/share/datasets)",
    )
    p.add_argument("--out", type=output_path, help="run directory (default runs/FAMILY-PRESET-DATASET-TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its newest checkpoint; `latest`: the run runs/latest points to "
        "(the last one started in ./runs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (slower start)")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="set any config field, e.g. --set model.hidden=[512,256] (repeatable)",
    )
    training = p.add_argument_group("training options (every family)")
    for flag, (_, typ, help_) in TRAIN_FLAGS.items():
        training.add_argument(flag, type=typ, default=None, dest=_dest(flag), metavar=typ.__name__.upper(), help=help_)
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for spec in model_flags().values():
        if spec.families not in groups:
            groups[spec.families] = p.add_argument_group(f"model options ({', '.join(spec.families)})")
        groups[spec.families].add_argument(
            spec.flag,
            type=spec.type,
            default=None,
            dest=_dest(spec.flag),
            metavar=spec.type.__name__.upper(),
            help=spec.help,
        )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=bounded_int(1, 10**9), default=64, help="number of samples (default 64)")
    p.add_argument(
        "--out",
        type=output_path,
        required=True,
        help="FILE.png (grid) or FILE.npy (float32 N,C,H,W in [0,1], written in chunks)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--label", type=bounded_int(0, 10**6), help="class to draw (conditional models)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true")
    add_sampling_flags(p)
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
    for module in (
        "genlab.evaluate",
        "genlab.usefulness",
        "genlab.explore",
        "genlab.nll",
        "genlab.fid",
        "genlab.serve",
    ):
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
        # One line, always; then the error's few hint lines (where genlab looked, how to fix), indented.
        print(f"genlab: error: {' '.join(e.message.splitlines())}", file=sys.stderr)
        for line in e.hint:
            print(f"  {' '.join(line.splitlines())}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
