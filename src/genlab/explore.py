"""Looking inside a trained model's latent space: reconstructions, interpolations, traversals,
the 2-D manifold and the latent scatter.

Every picture is a pure function of a model (and test images) returning an image tensor
(N, C, H, W) in [0, 1], laid out row by row for :func:`genlab.sample.save_grid`; the
``genlab explore`` command is a thin shell that picks test images, calls one and writes a PNG.

What a picture needs is a capability, never a family (``genlab.models.base``):
interpolation, traversal and a 2-D manifold need a :class:`LatentModel` (VAEs and GANs);
reconstruction, the scatter and a manifold of a wider latent need an :class:`EncoderModel`.
Latents of images are the model's deterministic ``encode_latent`` (a VAE's posterior mean),
so a picture is repeatable.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .argtypes import bounded_int, output_path, seed
from .errors import GenlabError

# The largest picture of each kind: beyond these a PNG is unreadable (and a manifold of side n decodes n^2)
MAX_N = {"reconstruct": 1000, "interpolate": 200, "traverse": 1000, "manifold": 100, "scatter": 100_000}

if TYPE_CHECKING:  # torch is imported inside the functions: `genlab.cli` imports this module for every command
    import numpy as np
    from torch import Tensor

    from .models.base import EncoderModel, LatentModel

WHATS = ("reconstruct", "interpolate", "traverse", "manifold", "scatter")


def _no_grad(fn):
    """``torch.inference_mode()`` applied at call time (torch is not imported with this module)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper


# -- latent-space arithmetic (pure) -----------------------------------------------------------
def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """(1 - t) z0 + t z1 for z0, z1 (..., D) and t (T,): (..., T, D)."""
    t = t.to(z0.dtype)[:, None]
    return (1 - t) * z0[..., None, :] + t * z1[..., None, :]


def slerp(z0: Tensor, z1: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016, "Sampling generative networks").

    slerp(z0, z1; t) = sin((1-t) w) / sin w * z0 + sin(t w) / sin w * z1, w = angle(z0, z1).
    Follows the great circle, so intermediate points keep the norm typical of N(0, I)
    draws instead of shrinking towards the origin as a straight line does. Falls back to
    :func:`lerp` when the vectors are (anti)parallel. Shapes as :func:`lerp`.
    """
    import torch

    cos = (z0 * z1).sum(-1) / (z0.norm(dim=-1) * z1.norm(dim=-1)).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))[..., None, None]  # (..., 1, 1)
    so = torch.sin(omega)
    t = t.to(z0.dtype)[:, None]  # (T, 1)
    safe = so.abs() > eps
    so_safe = torch.where(safe, so, torch.ones_like(so))
    spherical = (torch.sin((1 - t) * omega) / so_safe) * z0[..., None, :] + (torch.sin(t * omega) / so_safe) * z1[
        ..., None, :
    ]
    return torch.where(safe, spherical, lerp(z0, z1, t[:, 0]))


def interpolation_latents(z0: Tensor, z1: Tensor, steps: int = 10, mode: str = "lerp") -> Tensor:
    """``steps`` latents from z0 to z1 inclusive, (..., steps, D); mode 'lerp' or 'slerp'."""
    import torch

    if mode not in ("lerp", "slerp"):
        raise GenlabError(f"interpolation mode must be lerp or slerp, got {mode!r}")
    if steps < 2:
        raise GenlabError(f"interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)
    return (slerp if mode == "slerp" else lerp)(z0, z1, t)


def traversal_latents(z0: Tensor, dims: list[int], values: Tensor) -> Tensor:
    """Row i: z0 with coordinate dims[i] moved by each of ``values``, (len(dims), len(values), D).

    Only that one coordinate differs from z0 within a row (the offsets are added to z0's
    value, so with z0 = 0 they are the absolute values).
    """
    d = z0.shape[-1]
    bad = [j for j in dims if not 0 <= j < d]
    if bad:
        raise GenlabError(f"latent dimension(s) {bad} out of range 0..{d - 1}")
    z = z0.reshape(1, 1, d).repeat(len(dims), len(values), 1)
    for row, j in enumerate(dims):
        z[row, :, j] = z0.reshape(d)[j] + values.to(z0.dtype)
    return z


def pca_2d(mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Top-2 principal directions of posterior means (N, D): (mean (D,), components (2, D), std (2,))."""
    import torch

    mu = mu.double()
    mean = mu.mean(0)
    cov = torch.cov((mu - mean).T).reshape(mu.shape[1], mu.shape[1])
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    comps = evecs[:, [-1, -2]].T  # (2, D), largest first
    comps = comps * torch.where(comps.sum(1, keepdim=True) < 0, -1.0, 1.0)  # a stable sign
    return mean.float(), comps.float(), evals[[-1, -2]].clamp_min(0).sqrt().float()


def project_2d(mu: Tensor) -> Tensor:
    """Posterior means as 2-D points: the coordinates themselves for D = 2, the top-2 PCA scores beyond."""
    if mu.shape[1] <= 2:
        return mu[:, :2].float()
    mean, comps, _ = pca_2d(mu)
    return (mu.float() - mean) @ comps.T


# -- capabilities ---------------------------------------------------------------------------
def require_latent(model: object, what: str) -> LatentModel:
    """``model`` as a :class:`LatentModel`, or an error naming the missing capability."""
    from .models.base import LatentModel

    if not isinstance(model, LatentModel):
        raise GenlabError(
            f"{what} needs a model with a latent space (a LatentModel: sample_latent and decode); "
            f"a {type(model).__name__} has none"
        )
    return model


def require_encoder(model: object, what: str) -> EncoderModel:
    """``model`` as an :class:`EncoderModel`, or an error naming the missing capability."""
    from .models.base import EncoderModel

    if not isinstance(model, EncoderModel):
        raise GenlabError(
            f"{what} needs a model with an encoder (an EncoderModel: encode_latent); "
            f"a {type(model).__name__} only decodes"
        )
    return model


# -- pictures (pure: model + images -> image tensor) -----------------------------------------
def _labels(model, labels: Tensor | None, n: int, default: int = 0) -> Tensor | None:
    import torch

    if not model.conditional:
        return None
    if labels is None:
        labels = torch.full((n,), default, dtype=torch.long)
    return labels.to(model.device)


def encode_latents(model: EncoderModel, images: Tensor, labels: Tensor | None = None, batch_size: int = 1000) -> Tensor:
    """``model.encode_latent`` of float or uint8 images, batched, (N, D) on the CPU."""
    import torch

    x = _as_float(images)
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            yb = _labels(model, None if labels is None else labels[i : i + batch_size], x[i : i + batch_size].shape[0])
            out.append(model.encode_latent(x[i : i + batch_size].to(model.device), yb).float().cpu())
    return torch.cat(out)


def _as_float(images: Tensor) -> Tensor:
    import torch

    return images.float().div(255) if images.dtype == torch.uint8 else images


@_no_grad
def _decode(model: LatentModel, z: Tensor, labels: Tensor | None) -> Tensor:
    return model.decode(z.to(model.device), _labels(model, labels, z.shape[0])).float().cpu()


@_no_grad
def reconstruct(model: EncoderModel, images: Tensor, labels: Tensor | None = None) -> Tensor:
    """Inputs then their reconstructions (decoded latents of the inputs), (2N, C, H, W): save with nrow=N."""
    import torch

    x = _as_float(images).cpu()
    mu = encode_latents(model, x, labels)
    return torch.cat([x, _decode(model, mu, labels)])


@_no_grad
def interpolate(
    model: EncoderModel,
    images_a: Tensor,
    images_b: Tensor,
    labels_a: Tensor | None = None,
    labels_b: Tensor | None = None,
    *,
    steps: int = 10,
    mode: str = "lerp",
) -> Tensor:
    """One row per pair: input a, ``steps`` decoded latents from z(a) to z(b), input b.

    (P * (steps + 2), C, H, W): save with nrow = steps + 2. A conditional model decodes
    the whole row with a's label.
    """
    import torch

    xa, xb = _as_float(images_a).cpu(), _as_float(images_b).cpu()
    za = encode_latents(model, xa, labels_a)
    zb = encode_latents(model, xb, labels_b if labels_b is not None else labels_a)
    z = interpolation_latents(za, zb, steps, mode)  # (P, steps, D)
    p = z.shape[0]
    lab = labels_a.repeat_interleave(steps) if labels_a is not None else None
    decoded = _decode(model, z.reshape(p * steps, -1), lab).view(p, steps, *xa.shape[1:])
    return torch.cat([xa[:, None], decoded, xb[:, None]], dim=1).reshape(-1, *xa.shape[1:])


@_no_grad
def interpolate_prior(
    model: LatentModel, pairs: int, *, steps: int = 10, mode: str = "slerp", seed: int = 0, labels: Tensor | None = None
) -> Tensor:
    """One row per pair of prior draws z_a, z_b ~ p(z): ``steps`` decoded latents from z_a to z_b.

    For a model without an encoder (a GAN), whose latents come from its prior; slerp keeps
    the norm typical of N(0, I) draws (White 2016). (pairs * steps, C, H, W): save with nrow = steps.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    z = model.sample_latent(2 * pairs, generator=g).float().cpu()
    path = interpolation_latents(z[:pairs], z[pairs:], steps, mode)  # (P, steps, D)
    lab = labels.repeat_interleave(steps) if labels is not None else None
    return _decode(model, path.reshape(pairs * steps, -1), lab)


@_no_grad
def traverse(
    model: LatentModel,
    image: Tensor | None = None,
    label: int | None = None,
    *,
    dims: list[int] | None = None,
    values: Tensor | None = None,
) -> Tensor:
    """One row per latent dimension in ``dims``: the decoded traversal of that coordinate.

    Centre: the latent of ``image`` (1, C, H, W; an encoder model), or z = 0 when None.
    ``values`` (default -3..3 in 9 steps) are offsets from the centre.
    Returns (len(dims) * len(values), C, H, W): save with nrow = len(values).
    """
    import torch

    d = model.latent_dim
    dims = list(range(d)) if dims is None else list(dims)
    values = torch.linspace(-3, 3, 9) if values is None else values
    lab = torch.tensor([label if label is not None else 0])
    if image is not None:
        z0 = encode_latents(require_encoder(model, "a traversal around an image"), image, lab)[0]
    else:
        z0 = torch.zeros(d)
    z = traversal_latents(z0, dims, values)
    return _decode(model, z.reshape(-1, d), lab.repeat(z.shape[0] * z.shape[1]))


class Ranking(NamedTuple):
    """How informative each latent dimension is: ``scores`` (D,), higher = more; ``how`` it was
    measured, in words; ``name``, a short label for a score beside a picture's row."""

    scores: Tensor
    how: str
    name: str

    def order(self) -> list[int]:
        """The dimensions, most informative first (ties in index order)."""
        import torch

        return torch.argsort(self.scores, descending=True, stable=True).tolist()


@_no_grad
def informativeness(model: LatentModel, images: Tensor, labels: Tensor | None = None, *, seed: int = 0) -> Ranking:
    """A score per latent dimension (D,), higher = more informative, and how it was measured.

    The model's own ranking where it has one (:class:`RankedLatentModel`: a VAE's KL per
    dimension); else the variance of the encoded test images (an encoder model); else, for a
    decoder alone, the mean squared image change per unit step along each axis at 64 prior
    draws, a finite-difference cousin of GANSpace's directions (Haerkoenen et al. 2020).
    """
    import torch

    from .models.base import EncoderModel, RankedLatentModel

    if isinstance(model, RankedLatentModel):
        scores = model.latent_informativeness(
            _as_float(images).to(model.device), _labels(model, labels, images.shape[0])
        )
        # a ranked model may name its score (a VAE: "KL", in nats), else a neutral word
        name = str(getattr(model, "informativeness_name", "score"))
        return Ranking(scores.float().cpu(), f"the model's own ranking ({name} per dimension)", name)
    if isinstance(model, EncoderModel):
        return Ranking(encode_latents(model, images, labels).var(0), "variance of the images' latents", "var")
    g = torch.Generator().manual_seed(seed)
    z = model.sample_latent(64, generator=g).float().cpu()
    base = _decode(model, z, None)
    scores = torch.stack(
        [
            (_decode(model, z + torch.eye(model.latent_dim)[j], None) - base).pow(2).mean()
            for j in range(model.latent_dim)
        ]
    )
    return Ranking(scores, "mean squared image change per unit step at 64 prior draws", "change")


def plane_quantiles(n: int) -> Tensor:
    """The n N(0, 1) quantiles at 5%..95% that a plane's columns (and, reversed, rows) are decoded at."""
    import numpy as np
    import torch
    from scipy.stats import norm

    return torch.tensor(norm.ppf(np.linspace(0.05, 0.95, n)), dtype=torch.float32)


def latent_plane(model: LatentModel, n: int = 20, label: int = 0) -> Tensor:
    """Decode an n x n grid over a 2-D latent plane at N(0,1) quantiles 5%..95% (Kingma & Welling, fig. 4).

    Top row = largest z[1]. (n*n, C, H, W) on the CPU: save with nrow = n.
    """
    import torch

    if model.latent_dim != 2:
        raise GenlabError(f"a latent plane needs a 2-d latent, this model's is {model.latent_dim}-d")
    q = plane_quantiles(n)
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
    z = torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1)
    return _decode(model, z, torch.full((n * n,), label, dtype=torch.long))


@_no_grad
def manifold(model: LatentModel, n: int = 20, *, mu: Tensor | None = None, label: int = 0) -> Tensor:
    """An n x n grid of decoded latents (n*n, C, H, W): save with nrow = n.

    2-D latents: the plane at N(0,1) quantiles 5%..95% (:func:`latent_plane`). More
    dimensions: the plane of the top-2 principal directions of the test images' latents
    ``mu`` (N, D), through their mean, at the same quantiles times each direction's spread
    (the other directions held at the mean). Top row = largest second coordinate.
    """
    import torch

    d = model.latent_dim
    if d == 2:
        return latent_plane(model, n, label)
    if mu is None:
        raise GenlabError(f"a manifold of a {d}-d latent space needs the latents of test images (mu)")
    mean, comps, std = pca_2d(mu)
    q = plane_quantiles(n)
    b, a = torch.meshgrid(q.flip(0), q, indexing="ij")
    z = mean + (a.reshape(-1, 1) * std[0]) * comps[0] + (b.reshape(-1, 1) * std[1]) * comps[1]
    return _decode(model, z, torch.full((n * n,), label, dtype=torch.long))


def scatter(
    model: EncoderModel,
    images: Tensor,
    labels: Tensor,
    out: Path,
    class_names=None,
    *,
    images_words: str = "test images",
) -> np.ndarray:
    """Latents of ``images`` coloured by label, written to ``out`` (PCA scores when D > 2); returns the points.

    ``images_words`` says in the title what the images are (e.g. the run's own training images).
    """
    from .plots import plot_latent_scatter

    mu = encode_latents(model, images, labels)
    pts = project_2d(mu).numpy()
    d = mu.shape[1]
    if d <= 2:
        title, axes = f"latents of {len(pts):,} {images_words}", ("z[0]", "z[1]")
    else:
        title = f"latents of {len(pts):,} {images_words},\nprojected on their top-2 principal directions ({d}-d latent)"
        axes = ("PC1 (widest spread)", "PC2")
    plot_latent_scatter(pts, labels.cpu().numpy(), out, class_names=class_names, title=title, axis_labels=axes)
    return pts


# -- words and layout around the pictures ----------------------------------------------------
RECONSTRUCT_COLUMNS = 10  # originals per row of a reconstruction picture, each above its reconstruction


def images_words(dataset: str, split: str, run_dataset: str, run_split: str) -> str:
    """What a picture calls the images it shows. A run trained on the test split has no held-out test
    images: there the test images are its training images, and a picture must say so."""
    if dataset == run_dataset and split == run_split:
        return f"training images (the {split} split this run trained on)"
    if dataset == run_dataset:
        return f"held-out images ({split} split)"
    return f"{dataset} {split} images"


def pair_rows(top: Tensor, bottom: Tensor, cols: int) -> Tensor:
    """``top`` and ``bottom`` (N, C, H, W) in rows of ``cols``, each row of ``top`` followed by the same
    columns of ``bottom``, the last pair of rows filled with white: a grid (nrow=cols) in which every
    image of ``top`` stands directly above its partner."""
    import torch

    n = top.shape[0]
    blank = torch.ones_like(top[:1])
    rows = []
    for lo in range(0, n, cols):
        fill = [blank] * (cols - min(cols, n - lo))
        rows += [top[lo : lo + cols], *fill, bottom[lo : lo + cols], *fill]
    return torch.cat(rows)


def _signed(v: float, digits: int = 3) -> str:
    """An offset as a column label: +1.5, -0.75, and 0 unsigned."""
    return "0" if v == 0 else f"{v:+.{digits}g}"


def manifold_labels(n: int, d: int, through: str = "") -> dict:
    """Words around an n x n manifold (:func:`manifold`) of a ``d``-d latent: the quantiles decoded along
    each axis, which axes, and a title; ``through`` names the images whose latents set a wider plane."""
    q = [_signed(v, 2) for v in plane_quantiles(n).tolist()]
    if d == 2:
        x, y, unit = "z[0]", "z[1]", "in prior standard deviations"
    else:
        x, y, unit = "PC1", "PC2", "in standard deviations of the latents along each"
    return {
        "row_labels": q[::-1],
        "col_labels": q,
        "corner": f"{y} \\ {x}",
        "title": f"decoded latent plane{through}: {x} left to right, {y} bottom to top, at the N(0, 1) "
        f"quantiles 5%..95% ({unit})",
    }


# -- the command line ------------------------------------------------------------------------
def _pick(dataset, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` test images chosen by ``seed`` (a permutation prefix), as floats in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[: min(n, len(dataset))]
    return dataset.images[idx].float().div(255), dataset.labels[idx]


def _load_data(args, run):
    from .data import load_dataset

    name = args.dataset or run.data.dataset
    return load_dataset(
        name,
        args.split,
        data_dir=args.data_dir if args.data_dir is not None else run.data.data_dir,
        **(run.data.load_options() if name == run.data.dataset else {}),
    )


def cmd_explore(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_run
    from .device import inference_device
    from .sample import save_labelled_grid

    run_dir = Path(args.run)
    if args.n is not None and args.n > MAX_N[args.what]:
        raise GenlabError(f"--n for --what {args.what} must be at most {MAX_N[args.what]:,}, got {args.n:,}")
    out = Path(args.out) if args.out else run_dir / f"explore-{args.what}.png"
    if out.suffix.lower() != ".png":
        raise GenlabError(f"{out}: explore writes a PNG; give --out FILE.png")
    if out.exists() and not args.overwrite:
        raise GenlabError(f"{out} exists; pass --overwrite to replace it")
    from .io import check_writable_folder

    check_writable_folder(out.parent)
    model, run = load_run(run_dir, device=inference_device(args.device))
    model.eval()
    what = args.what
    latent = require_latent(model, f"explore --what {what}")
    d = latent.latent_dim
    from .models.base import NoiseLatentModel

    noise_latent = isinstance(model, NoiseLatentModel) and model.latent_is_noise
    if noise_latent and what in ("traverse", "manifold"):
        raise GenlabError(
            f"explore --what {what} moves single latent coordinates or a plane of them, but this model's "
            f"{d}-d latent is Gaussian noise (the x_T of deterministic DDIM), whose coordinates mean nothing "
            "alone; use --what interpolate (slerp between inverted images), reconstruct or scatter"
        )
    if args.label is not None and not 0 <= args.label < max(model.num_classes, 1):
        raise GenlabError(
            f"--label needs a conditional model and a class in 0..{model.num_classes - 1}, got {args.label}"
            if model.conditional
            else "--label needs a conditional model"
        )
    words = images_words(args.dataset or run.data.dataset, args.split, run.data.dataset, run.data.split)
    if what == "reconstruct":
        encoder = require_encoder(model, "explore --what reconstruct")
        x, y = _pick(_load_data(args, run), args.n or 10, args.seed)
        n = x.shape[0]
        cols = min(n, RECONSTRUCT_COLUMNS)
        pictures = reconstruct(encoder, x, y)
        save_labelled_grid(
            pair_rows(pictures[:n], pictures[n:], cols),
            out,
            nrow=cols,
            row_labels=["original", "reconstruction"] * math.ceil(n / cols),
            title=f"{n} {words}: each original above its reconstruction (the decoded latent)",
        )
    elif what == "interpolate":
        pairs = args.n or 5
        from .models.base import EncoderModel

        ts = [f"{t:.2g}" for t in torch.linspace(0, 1, args.steps).tolist()]
        if isinstance(model, EncoderModel):
            x, y = _pick(_load_data(args, run), 2 * pairs, args.seed)
            if x.shape[0] < 2:
                raise GenlabError("interpolation needs at least 2 test images")
            p = x.shape[0] // 2
            # a noise latent keeps its N(0, I) norm only along great circles (White 2016)
            mode = args.mode or ("slerp" if noise_latent else "lerp")
            grid = interpolate(model, x[:p], x[p : 2 * p], y[:p], y[p : 2 * p], steps=args.steps, mode=mode)
            save_labelled_grid(
                grid,
                out,
                nrow=args.steps + 2,
                col_labels=["image a", *ts, "image b"],
                title=f"each row: two {words} a and b, and between them the decoded latents on the {mode} "
                "path from a's latent (t = 0) to b's (t = 1)",
            )
        else:  # no encoder: between pairs of prior draws
            labels = None
            if model.conditional:
                labels = torch.full((pairs,), args.label or 0, dtype=torch.long)
            mode = args.mode or "slerp"
            grid = interpolate_prior(latent, pairs, steps=args.steps, mode=mode, seed=args.seed, labels=labels)
            save_labelled_grid(
                grid,
                out,
                nrow=args.steps,
                col_labels=ts,
                title=f"each row: the decoded latents on the {mode} path between two draws from the prior, "
                "z_a (t = 0) and z_b (t = 1)",
            )
    elif what == "traverse":
        from .models.base import EncoderModel

        x, y = _pick(_load_data(args, run), 1000, args.seed)
        ranking = informativeness(latent, x, y, seed=args.seed)
        n = min(args.n or 10, d)
        dims = ranking.order()[:n]
        label = args.label if args.label is not None else int(y[0])
        centre_on_image = args.center == "image" and isinstance(model, EncoderModel)
        image = x[:1] if centre_on_image else None
        offsets = torch.linspace(-3, 3, args.steps)
        grid = traverse(latent, image, label, dims=dims, values=offsets)
        centre = "z = 0" if image is None else f"the latent of one of the {words}"
        save_labelled_grid(
            grid,
            out,
            nrow=args.steps,
            row_labels=[f"z[{j}]\n{ranking.name} {float(ranking.scores[j]):.3g}" for j in dims],
            col_labels=[_signed(v) for v in offsets.tolist()],
            corner="offset",
            title=f"each row moves one latent coordinate by the offsets above, around {centre}; the {n} most "
            f"informative of {d} dims, most first, by {ranking.how}",
        )
        if not args.quiet:
            print(f"rows: latent dims {dims} (most informative first, by {ranking.how}), offsets -3..3 around {centre}")
    elif what == "manifold":
        n = args.n or 20
        mu = None
        if d > 2:
            encoder = require_encoder(model, f"a manifold of a {d}-d latent (its plane comes from test images)")
            x, y = _pick(_load_data(args, run), 5000, args.seed)
            mu = encode_latents(encoder, x, y)
        plane = manifold(latent, n, mu=mu, label=args.label or 0)
        extra = "" if mu is None else f" through the mean latent of {mu.shape[0]:,} {words}"
        save_labelled_grid(plane, out, nrow=n, **manifold_labels(n, d, extra))
    else:
        encoder = require_encoder(model, "explore --what scatter")
        data = _load_data(args, run)
        x, y = _pick(data, args.n or 5000, args.seed)
        scatter(encoder, x, y, out, class_names=data.class_names, images_words=words)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset to draw images from (default: the run's)")
    p.add_argument("--data-dir", help="folder with the dataset's IDX files (default: the run's)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="default test")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")


def register_cli(subparsers) -> None:
    """Add ``genlab explore`` (picked up by genlab.cli)."""
    p = subparsers.add_parser(
        "explore",
        help="pictures of a model's latent space",
        description="Reconstructions, interpolations, traversals, the 2-D manifold or a "
        "latent scatter of a trained model, as a PNG. Interpolation and "
        "traversal work on every model with a latent space (VAEs, GANs); "
        "reconstruction and the scatter need an encoder.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--what", required=True, choices=WHATS)
    p.add_argument("--out", type=output_path, help="FILE.png (default RUN/explore-WHAT.png)")
    p.add_argument(
        "--n",
        type=bounded_int(1, 100_000),
        help="reconstruct: images (10); interpolate: pairs (5); traverse: latent "
        "dims, most informative first (10); manifold: grid side (20); "
        "scatter: points (5000)",
    )
    p.add_argument(
        "--steps",
        type=bounded_int(2, 100),
        default=9,
        help="interpolation / traversal steps per row, 2..100 (default 9)",
    )
    p.add_argument(
        "--mode",
        choices=["lerp", "slerp"],
        help="interpolation path (default: lerp between encoded images, slerp between prior draws and "
        "between noise latents such as a diffusion model's)",
    )
    p.add_argument(
        "--center",
        default="image",
        choices=["image", "zero"],
        help="traversal centre: a test image's posterior mean (default) or z = 0",
    )
    p.add_argument("--label", type=bounded_int(0, 10**6), help="class to decode with (conditional models)")
    p.add_argument("--seed", type=seed, default=0, help="which test images (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _data_flags(p)
    p.set_defaults(func=cmd_explore)
