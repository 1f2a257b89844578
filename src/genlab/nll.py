"""Likelihood evaluation of VAEs: the importance-weighted bound, the ELBO, active units.

The IWAE bound (Burda, Grosse & Salakhutdinov 2016, eq. 8) with k draws z_i ~ q(z|x):

    L_k(x) = log (1/k) sum_i  p(x|z_i) p(z_i) / q(z_i|x)   <=   log p(x)

is a lower bound for every k, increases with k in expectation, and tends to log p(x) as
k -> inf. L_1 is the ELBO. We combine the k log-weights with ``torch.logsumexp``, in chunks
of draws with a running log-add-exp, so memory stays bounded whatever k is. Figures are in
nats; the test NLL reported in papers is ``-mean_x L_k(x)`` with k = 5000.

A model is evaluated through two methods only, so any model with a Gaussian posterior and a
standard-normal prior can be checked (the tests use probabilistic PCA, whose log p(x) is known):

- ``encode(x, y) -> (mu, log_var)``: the diagonal Gaussian q(z|x), each (B, D);
- ``log_likelihood(x, z, y) -> (S, B)``: log p(x|z) summed over pixels for z of shape (S, B, D).

A model with another prior (the VampPrior) also sets ``prior_is_standard_normal = False`` and
provides ``log_prior(z) -> (S, B)``; the tests check that path on a PPCA with a mixture prior.

Which likelihood that is (see :meth:`genlab.models.vae.VAE.log_likelihood`): Bernoulli for
``bernoulli`` (a probability of binary images: evaluate on binarised images), a Gaussian
density for ``mse`` and ``gaussian``. A density on continuous pixels is not comparable with a
Bernoulli NLL on binarised pixels; compare models only within one likelihood.

Standard protocol (as in the IWAE paper): Bernoulli models are evaluated on test images
binarised stochastically, x ~ Bernoulli(intensity), once, with a fixed seed, so every model
sees the same binary images.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import GenlabError
from .models.vae import active_units, kl_divergence, log_importance_weights

DEFAULT_ROWS = 50_000  # draws x images decoded at once: ~160 MB of 784-pixel logits in float32


def binarize_images(images: Tensor, seed: int = 0) -> Tensor:
    """Stochastic binarisation x ~ Bernoulli(intensity) with a CPU generator seeded ``seed``.

    Drawn on the CPU for the whole set at once, so the binary images do not depend on the
    device or the batch size. Accepts uint8 (0..255) or float ([0, 1]) images.
    """
    x = _as_float(images)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=g) < x.cpu()).to(torch.float32)


def _as_float(images: Tensor) -> Tensor:
    return images.float().div(255) if images.dtype == torch.uint8 else images


@torch.inference_mode()
def _bounds(model, images: Tensor, labels: Tensor | None, *, k: int, batch_size: int, chunk: int | None,
            generator: torch.Generator | None) -> dict[str, Tensor]:
    """Per-image IWAE bound, ELBO, posterior means and log-variances, in one pass over the draws."""
    if k < 1:
        raise GenlabError(f"k (importance samples) must be >= 1, got {k}")
    if batch_size < 1:
        raise GenlabError(f"batch size must be >= 1, got {batch_size}")
    conditional = bool(getattr(model, "conditional", False))
    if conditional and labels is None:
        raise GenlabError("this is a conditional model: evaluating log p(x|y) needs the labels")
    chunk = chunk or max(1, DEFAULT_ROWS // batch_size)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if hasattr(model, "eval"):
        model.eval()
    device = _device_of(model)
    images = _as_float(images)
    standard_prior = getattr(model, "prior_is_standard_normal", True)
    iwae, elbo, recon, mus, lvs = [], [], [], [], []
    for lo in range(0, images.shape[0], batch_size):
        x = images[lo : lo + batch_size].to(device)
        y = labels[lo : lo + batch_size].to(device) if conditional else None
        mu, log_var = model.encode(x, y)  # (B, D) each
        b, d = mu.shape
        acc = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
        ll_sum = torch.zeros(b, dtype=torch.float64, device=device)
        lw_sum = torch.zeros(b, dtype=torch.float64, device=device)
        for s0 in range(0, k, chunk):
            c = min(chunk, k - s0)
            eps = torch.randn(c, b, d, generator=generator, device=generator.device, dtype=mu.dtype).to(device)
            log_w, log_px_z = log_importance_weights(model, x, y, mu, log_var, eps)  # (c, B) each
            acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), dim=0))
            ll_sum += log_px_z.double().sum(0)
            lw_sum += log_w.double().sum(0)
        iwae.append((acc - math.log(k)).cpu())
        # ELBO = E_q[log p(x|z)] - KL(q || p): the recon term averaged over the same k draws,
        # the KL in closed form for the N(0, I) prior (lower variance than averaging the
        # log-weights), else averaged over the draws too. It is the negative of the training
        # loss for sum reductions, and equals L_1 in expectation.
        if standard_prior:
            elbo.append((ll_sum / k - kl_divergence(mu, log_var).double().sum(-1)).cpu())
        else:
            elbo.append((lw_sum / k).cpu())
        recon.append((ll_sum / k).cpu())
        mus.append(mu.float().cpu())
        lvs.append(log_var.float().cpu())
    return {"iwae": torch.cat(iwae), "elbo": torch.cat(elbo), "log_px_z": torch.cat(recon), "mu": torch.cat(mus),
            "log_var": torch.cat(lvs)}


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def importance_weighted_bound(model, images: Tensor, labels: Tensor | None = None, *, k: int = 5000,
                              batch_size: int = 100, chunk: int | None = None,
                              generator: torch.Generator | None = None) -> Tensor:
    """Per-image IWAE estimates L_k(x) of log p(x) in nats, (N,) float64 on the CPU.

    ``images`` are (N, C, H, W), float in [0, 1] or uint8; binarise them first for a
    Bernoulli model (:func:`binarize_images`). ``chunk`` draws per image are decoded at a
    time (default: ~50,000 decoded images per pass), so memory does not grow with ``k``.
    ``generator`` drives the draws (default: a CPU generator seeded 0); the result depends
    on it, ``batch_size`` and ``chunk`` only through Monte Carlo noise.
    """
    return _bounds(model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=generator)["iwae"]


def elbo(model, images: Tensor, labels: Tensor | None = None, *, k: int = 1, batch_size: int = 100,
         chunk: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Per-image ELBO E_q[log p(x|z)] - KL(q(z|x) || p(z)) in nats, (N,) float64 on the CPU.

    For the N(0, I) prior the KL is exact and the reconstruction term is averaged over ``k``
    draws (k = 1: the single-sample estimate the training loss uses); for a VampPrior the
    whole log-weight is averaged over the draws. Same arguments as
    :func:`importance_weighted_bound`.
    """
    return _bounds(model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=generator)["elbo"]


def likelihood_name(model) -> str:
    """Words for the likelihood the figures are log-probabilities of (goes into nll.json)."""
    cfg = model.config
    if cfg.likelihood == "bernoulli":
        return "bernoulli"
    if cfg.likelihood == "gaussian":
        return "gaussian (learned per-pixel scale; density on continuous pixels)"
    return (f"gaussian (fixed variance {model.pixel_variance:g} implied by the {cfg.recon_reduction} of "
            f"squared errors; density on continuous pixels)")


def evaluate_vae(run_dir_or_model, dataset=None, *, k: int = 5000, n_images: int | None = 10_000,
                 batch_size: int = 100, chunk: int | None = None, seed: int = 0, binarize: bool | None = None,
                 split: str = "test", data_dir: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Test log-likelihood of a VAE: IWAE NLL (k draws), ELBO, active units, KL per latent dimension.

    ``run_dir_or_model``: a run directory or a :class:`~genlab.models.vae.VAE`.
    ``dataset``: a :class:`genlab.data.Dataset`, a dataset name, or None (the run's dataset);
    names are loaded with ``split`` (default test) and ``data_dir`` (default the run's).
    The first ``n_images`` images are used (None: all). ``binarize`` (default: True exactly
    for Bernoulli models) binarises them stochastically with ``seed``; the k draws use a
    generator seeded ``seed`` too, so a result is reproducible.

    Returns a JSON-ready dict: ``iwae_nll_nats`` (= -mean L_k, the figure papers report),
    ``elbo_nats`` (mean ELBO, a log-probability bound: <= -iwae_nll_nats up to MC noise),
    ``iwae_nll_sem`` (its standard error over images), ``k``, ``n_images``, ``active_units``
    (Burda et al.: Var_x E_q[z_j|x] > 0.01), ``kl_nats`` (mean KL(q||p)), ``kl_per_dim`` (its
    split per latent dimension; N(0, I) prior only), ``likelihood``, ``binarized``, plus where the data came from.
    """
    from .data import Dataset, load_dataset

    t0 = time.perf_counter()
    run_config = None
    if isinstance(run_dir_or_model, (str, Path)):
        model, run_config = load_vae_run(run_dir_or_model, device, what="likelihood evaluation")
    else:
        model = run_dir_or_model
        if getattr(model, "family", None) != "vae":
            raise GenlabError(f"likelihood evaluation works on VAEs, got {type(model).__name__}")
    if dataset is None or isinstance(dataset, str):
        if run_config is None and dataset is None:
            raise GenlabError("say which dataset to evaluate on (a model alone does not record one)")
        name = dataset or run_config.data.dataset
        dd = data_dir if data_dir is not None else (run_config.data.data_dir if run_config else None)
        dataset = load_dataset(name, split, data_dir=dd)
    if not isinstance(dataset, Dataset):
        raise GenlabError(f"dataset must be a genlab Dataset or a name, got {type(dataset).__name__}")
    n = len(dataset) if n_images is None else min(int(n_images), len(dataset))
    if n < 2:
        raise GenlabError(f"need at least 2 images to evaluate, got {n}")
    images = dataset.images[:n].float().div(255)
    labels = dataset.labels[:n]
    if binarize is None:
        binarize = model.config.likelihood == "bernoulli"
    if binarize:
        images = binarize_images(images, seed)
    gen = torch.Generator().manual_seed(seed)
    out = _bounds(model, images, labels, k=k, batch_size=batch_size, chunk=chunk, generator=gen)
    n_active, unit_var = active_units(out["mu"])
    iwae = out["iwae"]
    per_dim = {}
    if getattr(model, "prior_is_standard_normal", True):  # a VampPrior's KL does not split by dimension
        per_dim["kl_per_dim"] = [round(float(v), 4) for v in kl_divergence(out["mu"], out["log_var"]).mean(0)]
    return {
        "iwae_nll_nats": round(float(-iwae.mean()), 4),
        "elbo_nats": round(float(out["elbo"].mean()), 4),
        "iwae_nll_sem": round(float(iwae.std() / math.sqrt(n)), 4),
        "k": int(k),
        "n_images": int(n),
        "active_units": n_active,
        "latent_dim": int(out["mu"].shape[1]),
        "kl_nats": round(float((out["log_px_z"] - out["elbo"]).mean()), 4),
        **per_dim,
        "posterior_mean_variance": [round(float(v), 5) for v in unit_var],
        "likelihood": likelihood_name(model),
        "binarized": bool(binarize),
        "seed": int(seed),
        "conditional": bool(model.conditional),
        "dataset": dataset.name,
        "split": dataset.split,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def load_vae_run(run_dir: str | Path, device: str | None = None, *, what: str = "this command"):
    """(model in eval mode, RunConfig) of a VAE run; a run of another family is refused by name."""
    import json

    from .checkpoint import CONFIG_FILE, load_run
    from .errors import CheckpointError

    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a genlab run directory (no {CONFIG_FILE})")
    try:
        family = json.loads(path.read_text()).get("family")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if family != "vae":
        raise GenlabError(f"{what} works on VAE runs; {run_dir} is a {family}")
    return load_run(run_dir, device=_resolve_device(device))


def _resolve_device(name: str | None) -> str:
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenlabError("--device cuda was asked for but this PyTorch sees no CUDA GPU")
    return name


def format_nll_table(result: dict[str, Any], title: str = "") -> str:
    """The evaluation as aligned text (what ``genlab nll`` prints)."""
    kl = result.get("kl_per_dim")
    if kl is not None:
        order = sorted(range(len(kl)), key=lambda j: -kl[j])
        top = ", ".join(f"z{j}={kl[j]:.2f}" for j in order[:8]) + (", ..." if len(kl) > 8 else "")
        kl_row = ("KL per dim (largest)", f"{top}  (total {result.get('kl_nats', sum(kl)):.2f} nats)")
    else:
        kl_row = ("KL to the prior", f"{result['kl_nats']:.2f} nats  (Monte Carlo; a VampPrior's KL has no per-dim split)")
    data = f"{result['dataset']} {result['split']}, first {result['n_images']} images" + (
        ", binarised (seed {})".format(result["seed"]) if result["binarized"] else "")
    rows = [
        ("data", data),
        ("likelihood", result["likelihood"] + (" (conditional: log p(x|y))" if result.get("conditional") else "")),
        (f"IWAE NLL (k={result['k']})", f"{result['iwae_nll_nats']:.2f} nats  (+/- {result['iwae_nll_sem']:.2f} s.e.)"),
        ("-ELBO", f"{-result['elbo_nats']:.2f} nats  (gap to IWAE: {-result['elbo_nats'] - result['iwae_nll_nats']:.2f})"),
        ("active units", f"{result['active_units']} of {result['latent_dim']}  (Var_x E[z_j|x] > 0.01)"),
        kl_row,
    ]
    width = max(len(r[0]) for r in rows)
    lines = ([title] if title else []) + [f"{a:<{width}}  {b}" for a, b in rows]
    return "\n".join(lines)
