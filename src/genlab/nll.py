"""Test log-likelihood of any model that bounds log p(x): ``genlab nll`` and ``evaluate --nll``.

A model takes part by implementing :class:`~genlab.models.base.LikelihoodModel`: per image, a
lower bound L(x) <= log p(x) in nats (a VAE: the IWAE bound with k draws, in
:mod:`genlab.models.vae.likelihood`), and per-dataset figures of its own (a VAE: active units).
This module knows no family's maths: it picks the test images, binarises them when the model is
a density of binary images, batches them, and reports

    NLL = -(1/N) sum_x L(x)       with its standard error  std_x L(x) / sqrt(N),

the figure papers report (with k = 5000 for the IWAE bound). A density on continuous pixels is
not comparable with a Bernoulli NLL on binarised pixels: compare models only within one
``likelihood`` (the model's ``likelihood_name``, written into nll.json).

Standard protocol (as in the IWAE paper): models of binary images are evaluated on test images
binarised stochastically, x ~ Bernoulli(intensity), once, with a fixed seed, so every model
sees the same binary images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GenlabError

if TYPE_CHECKING:  # torch is imported inside the functions: `genlab.cli` imports this module for every command
    import torch
    from torch import Tensor


def binarize_images(images: Tensor, seed: int = 0) -> Tensor:
    """Stochastic binarisation x ~ Bernoulli(intensity) with a CPU generator seeded ``seed``.

    Drawn on the CPU for the whole set at once, so the binary images do not depend on the
    device or the batch size. Accepts uint8 (0..255) or float ([0, 1]) images.
    """
    import torch

    x = images.float().div(255) if images.dtype == torch.uint8 else images
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=g) < x.cpu()).to(torch.float32)


# -- loading ------------------------------------------------------------------------------------
def load_likelihood_run(run_dir: str | Path, device: str | None = None):
    """(model in eval mode, RunConfig) of a run whose model bounds log p(x); any other is refused by capability."""
    from .checkpoint import load_run
    from .device import inference_device
    from .models.base import LikelihoodModel

    model, run = load_run(Path(run_dir), device=inference_device(device))
    if not isinstance(model, LikelihoodModel):
        raise GenlabError(
            f"{run_dir} is a {run.family}/{run.preset} model, which has no likelihood bound "
            f"(genlab nll and evaluate --nll need a LikelihoodModel: VAEs)"
        )
    return model, run


def _model_and_run(run_dir_or_model, device: str | None):
    """A run directory is loaded; a model passed in is checked for the capability (its run config is unknown)."""
    from .models.base import LikelihoodModel

    if isinstance(run_dir_or_model, (str, Path)):
        return load_likelihood_run(run_dir_or_model, device)
    model = run_dir_or_model
    if not isinstance(model, LikelihoodModel):
        raise GenlabError(
            f"likelihood evaluation needs a model with a likelihood bound (a LikelihoodModel: VAEs), "
            f"got {type(model).__name__}"
        )
    return model, None


def _conditional(model) -> bool:
    """Whether the bound is of log p(x|y); a stand-in LikelihoodModel outside genlab's base class is not conditional."""
    from .models.base import GenerativeModel

    return isinstance(model, GenerativeModel) and model.conditional


def _test_set(dataset, run, split: str, data_dir: str | None):
    """A :class:`genlab.data.Dataset`: the one given, or one loaded by name (default: the run's)."""
    from .data import Dataset, load_dataset

    if dataset is None or isinstance(dataset, str):
        if run is None and dataset is None:
            raise GenlabError("say which dataset to evaluate on (a model alone does not record one)")
        name = dataset or run.data.dataset
        dd = data_dir if data_dir is not None else (run.data.data_dir if run else None)
        options = run.data.load_options() if run is not None and name == run.data.dataset else {}
        dataset = load_dataset(name, split, data_dir=dd, **options)
    if not isinstance(dataset, Dataset):
        raise GenlabError(f"dataset must be a genlab Dataset or a name, got {type(dataset).__name__}")
    return dataset


# -- evaluation ---------------------------------------------------------------------------------
def per_image_figures(
    model,
    images: Tensor,
    labels: Tensor,
    *,
    k: int,
    batch_size: int,
    chunk: int | None,
    generator: torch.Generator,
    progress: bool = False,
) -> dict[str, Tensor]:
    """The model's ``likelihood_report`` over all images, ``batch_size`` at a time: name -> (N,) float64.

    One ``generator`` drives every batch's draws, so the figures depend on the seed only.
    ``progress`` shows a bar (a terminal) or a line every 30 s (a log) with the running NLL and an ETA.
    """
    import torch

    from .progress import Progress

    parts = []
    total = 0.0
    with Progress(
        images.shape[0], desc=f"nll (k={k})", unit="image", rate_unit="images", enabled=progress, announce=True
    ) as bar:
        for lo in range(0, images.shape[0], batch_size):
            part = model.likelihood_report(
                images[lo : lo + batch_size], labels[lo : lo + batch_size], k=k, generator=generator, chunk=chunk
            )
            parts.append(part)
            done = min(lo + batch_size, images.shape[0])
            total += float(part["bound"].detach().double().sum())
            bar.set_figures(nll_so_far=round(-total / done, 2))
            bar.update(done)
    return {name: torch.cat([p[name].detach().double().cpu() for p in parts]) for name in parts[0]}


def evaluate_likelihood(
    run_dir_or_model,
    dataset=None,
    *,
    k: int = 5000,
    n_images: int | None = 10_000,
    batch_size: int = 100,
    chunk: int | None = None,
    seed: int = 0,
    binarize: bool | None = None,
    split: str = "test",
    data_dir: str | None = None,
    device: str | None = None,
    keep_per_image: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Test log-likelihood of a :class:`~genlab.models.base.LikelihoodModel`: NLL from its bound, ELBO, its summary.

    ``run_dir_or_model``: a run directory (loaded onto ``device``, default auto) or a model.
    ``dataset``: a :class:`genlab.data.Dataset`, a dataset name, or None (the run's dataset);
    names are loaded with ``split`` (default test) and ``data_dir`` (default the run's).
    The first ``n_images`` images are used (None: all). ``binarize`` (default: True exactly when
    the model's ``likelihood_data`` is ``"binary"``) binarises them stochastically with ``seed``;
    the bound's draws (``k`` per image, ``chunk`` at a time) use a generator seeded ``seed`` too,
    so a result is reproducible.

    Returns a JSON-ready dict: ``iwae_nll_nats`` (= -mean L(x), the figure papers report; named
    for the IWAE bound), ``elbo_nats`` (mean ELBO, where the model reports one: <= -iwae_nll_nats
    up to MC noise), ``iwae_nll_sem`` (its standard error over images), ``k``, ``n_images``, the
    model's ``likelihood_summary`` (a VAE: ``active_units``, ``latent_dim``, ``kl_per_dim``,
    ``posterior_mean_variance``), the mean of any other per-image figure of its report as
    ``NAME_nats`` (a VAE: ``kl_nats``, mean KL(q||p)), ``likelihood``, ``binarized``, plus where the
    data came from. ``keep_per_image`` adds ``per_image_bound``, the (N,) float64 tensor of L(x),
    for paired comparisons of two models on the same images (not JSON-ready). ``progress`` reports
    on stderr as it goes (:mod:`genlab.progress`): at k = 5000 on a CPU this takes hours.
    """
    import torch

    if k < 1:
        raise GenlabError(f"k (importance samples) must be >= 1, got {k}")
    if batch_size < 1:
        raise GenlabError(f"batch size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    model, run = _model_and_run(run_dir_or_model, device)
    dataset = _test_set(dataset, run, split, data_dir)
    n = len(dataset) if n_images is None else min(int(n_images), len(dataset))
    if n < 2:
        raise GenlabError(f"need at least 2 images to evaluate, got {n}")
    images, labels = dataset.images[:n].float().div(255), dataset.labels[:n]
    if binarize is None:
        binarize = model.likelihood_data == "binary"
    if binarize:
        images = binarize_images(images, seed)
    gen = torch.Generator().manual_seed(seed)
    figures = per_image_figures(
        model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=gen, progress=progress
    )
    bound = figures.pop("bound")
    elbo = figures.pop("elbo", None)
    return {
        "iwae_nll_nats": round(float(-bound.mean()), 4),
        **({"elbo_nats": round(float(elbo.mean()), 4)} if elbo is not None else {}),
        "iwae_nll_sem": round(float(bound.std() / math.sqrt(n)), 4),
        "k": int(k),
        "n_images": int(n),
        **model.likelihood_summary(images, labels),
        **{f"{name}_nats": round(float(v.mean()), 4) for name, v in figures.items()},
        "likelihood": model.likelihood_name,
        "binarized": bool(binarize),
        "seed": int(seed),
        "conditional": _conditional(model),
        "dataset": dataset.name,
        "split": dataset.split,
        "seconds": round(time.perf_counter() - t0, 2),
        **({"per_image_bound": bound} if keep_per_image else {}),
        # a probability of 8-bit images: the figure diffusion papers report, -log2 P(x) per pixel
        **(
            {"bits_per_dim": round(float(-bound.mean()) / (images[0].numel() * math.log(2)), 4)}
            if model.likelihood_data == "discrete"
            else {}
        ),
    }


def format_nll_table(result: dict[str, Any], title: str = "") -> str:
    """The evaluation as aligned text (what ``genlab nll`` prints); figures the model did not report get no row."""
    data = f"{result['dataset']} {result['split']}, first {result['n_images']} images" + (
        ", binarised (seed {})".format(result["seed"]) if result["binarized"] else ""
    )
    rows = [
        ("data", data),
        ("likelihood", result["likelihood"] + (" (conditional: log p(x|y))" if result.get("conditional") else "")),
        (
            f"{result.get('bound_name', 'IWAE NLL')} (k={result['k']})",
            f"{result['iwae_nll_nats']:.2f} nats  (+/- {result['iwae_nll_sem']:.2f} s.e.)",
        ),
    ]
    if "bits_per_dim" in result:
        rows.append(("bits/dim", f"{result['bits_per_dim']:.4f}  (-log2 P(x) per pixel of the 8-bit image)"))
    if "elbo_nats" in result:
        gap = -result["elbo_nats"] - result["iwae_nll_nats"]
        rows.append(("-ELBO", f"{-result['elbo_nats']:.2f} nats  (gap to IWAE: {gap:.2f})"))
    if "active_units" in result:
        rows.append(("active units", f"{result['active_units']} of {result['latent_dim']}  (Var_x E[z_j|x] > 0.01)"))
    kl = result.get("kl_per_dim")
    if kl is not None:
        order = sorted(range(len(kl)), key=lambda j: -kl[j])
        top = ", ".join(f"z{j}={kl[j]:.2f}" for j in order[:8]) + (", ..." if len(kl) > 8 else "")
        rows.append(("KL per dim (largest)", f"{top}  (total {result.get('kl_nats', sum(kl)):.2f} nats)"))
    elif "kl_nats" in result:
        rows.append(
            ("KL to the prior", f"{result['kl_nats']:.2f} nats  (Monte Carlo; a VampPrior's KL has no per-dim split)")
        )
    width = max(len(r[0]) for r in rows)
    lines = ([title] if title else []) + [f"{a:<{width}}  {b}" for a, b in rows]
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------
def cmd_nll(args: argparse.Namespace) -> int:
    from .io import atomic_write_text

    run_dir = Path(args.run)
    model, run = load_likelihood_run(run_dir, args.device)
    from .io import check_writable_folder

    check_writable_folder(run_dir)  # nll.json goes there: not after hours of importance sampling
    result = evaluate_likelihood(
        model,
        # loaded here, where the run is known: a folder's images must be sized as the run's were
        _test_set(args.dataset, run, args.split, args.data_dir),
        k=args.k,
        n_images=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        split=args.split,
        data_dir=args.data_dir if args.data_dir is not None else run.data.data_dir,
        progress=not args.quiet,
    )
    result["run"] = str(run_dir)
    atomic_write_text(run_dir / "nll.json", json.dumps(result, indent=2) + "\n")
    if not args.quiet:
        print(format_nll_table(result, title=f"{run_dir} ({run.family}/{run.preset})"))
        print(f"wrote {run_dir / 'nll.json'} in {result['seconds']:.1f}s")
    return 0


def register_cli(subparsers) -> None:
    """Add ``genlab nll`` (picked up by genlab.cli)."""
    from .argtypes import bounded_int, seed

    p = subparsers.add_parser(
        "nll",
        help="test log-likelihood bound (a VAE: the IWAE bound), ELBO and more",
        description="Importance-weighted estimate of -log p(x) (Burda et al. 2016) on test "
        "images, in nats; writes RUN/nll.json.",
    )
    p.add_argument("run", help="run directory of a model with a likelihood bound (a VAE)")
    p.add_argument("--k", type=bounded_int(1, 10**6), default=5000, help="importance samples per image (default 5000)")
    p.add_argument("-n", type=bounded_int(1, 10**7), default=10_000, help="test images, the first N (default 10000)")
    p.add_argument("--batch-size", type=bounded_int(1, 100_000), default=100, help="images per pass (default 100)")
    p.add_argument("--seed", type=seed, default=0, help="binarisation and sampling seed (default 0)")
    p.add_argument("--dataset", help="dataset to draw images from (default: the run's)")
    p.add_argument("--data-dir", help="folder with the dataset's IDX files (default: the run's)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="default test")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_nll)
