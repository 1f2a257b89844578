"""One run as the browser explorer sees it: the model loaded once, what it can do, and fast decoding.

Everything here is plain torch and numpy, no web: :mod:`genlab.serve.app` turns it into routes.
What the page offers is decided by capabilities (``genlab.models.base``), never by family:

- a latent map needs a :class:`LatentModel` whose coordinates mean something (not a noise latent).
  With an encoder it is the scatter of test images' latent means (their coordinates for a 2-d latent,
  the top-2 PCA directions beyond); without one, the plane of the two most informative dimensions;
- sliders move the most informative dimensions (``explore.informativeness``: a VAE's KL per
  dimension, else the latents' variance, else image change per unit step);
- encoding an image needs an :class:`EncoderModel`; its spread a :class:`PosteriorSpreadModel`;
  its out-of-distribution hint a :class:`LikelihoodModel`.

A map is described by an origin o (D,) and two orthonormal axes A (2, D): the map point of z is
A (z - o), and moving the map point to p moves z within the plane through z, z + A^T (p - A (z - o)),
so the coordinates off the plane (set by the sliders) are kept.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import GenlabError
from ..explore import encode_latents, informativeness, interpolation_latents, pca_2d
from ..models.base import (
    EncoderModel,
    LatentModel,
    LikelihoodModel,
    NoiseLatentModel,
    PosteriorSpreadModel,
)

MAP_POINTS = 2000  # test images on the map: enough to show the clusters, light enough to redraw on hover
SLIDERS = 8  # most informative dimensions given a slider
MAX_BATCH = 64  # latents one decode request may carry
MAX_INTERP_STEPS = 32
MAX_ABS_Z = 1e3  # far beyond any prior's mass; bigger values only make overflowing activations
LIKELIHOOD_K = 64  # importance samples per image for the OOD hint: a stable rank, milliseconds per image
LIKELIHOOD_TEST_IMAGES = 300  # the reference distribution the user's bound is ranked in
# The reference's cost is k network passes per test image: milliseconds in all for an MLP VAE, but about 50 s
# on one core for the ddpm preset's U-Net (45 s even for a toy 8-channel one) if all 300 were scored. It is
# scored in chunks while the next one still fits this budget (at least one chunk), so the first encode
# answers in seconds for every family.
REFERENCE_SECONDS = 3.0
REFERENCE_CHUNK = 20
MAX_UPLOAD_BYTES = 2 * 2**20
MAX_UPLOAD_SIDE = 4096  # pixels; checked from the header, before any pixel is decoded


class RequestError(GenlabError):
    """A request the explorer refuses, with the HTTP status that says why (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def png_data_url(image: Tensor) -> str:
    """One image (C, H, W) in [0, 1] as a ``data:image/png;base64`` URL (a few hundred bytes at 28x28)."""
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    arr_np = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    # compress_level 1: 28x28 PNGs are tiny either way, and level 6 costs more than the decode itself
    Image.fromarray(arr_np).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _rounded(values: Tensor | np.ndarray, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


@dataclass
class LatentMap:
    """A 2-D view of the latent space: z -> axes @ (z - origin); ``points`` are test images there."""

    kind: str  # "coordinates" | "pca" | "plane"
    caption: str
    axis_labels: tuple[str, str]
    origin: Tensor  # (D,)
    axes: Tensor  # (2, D), orthonormal rows
    extent: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    points: np.ndarray | None = None  # (N, 2)
    point_labels: np.ndarray | None = None  # (N,)

    def project(self, z: Tensor) -> Tensor:
        return (z.float() - self.origin) @ self.axes.T

    def project_cov(self, std: Tensor) -> Tensor:
        """A diagonal Gaussian's covariance diag(std^2) seen on the map: A diag(std^2) A^T, (2, 2)."""
        return (self.axes * std.float().pow(2)) @ self.axes.T


@dataclass
class Slider:
    label: str
    note: str
    lo: float
    hi: float
    dim: int | None = None  # a latent coordinate
    axis: int | None = None  # or one of the map's axes


@dataclass
class Reference:
    """Likelihood bounds of test images, the distribution a user's image is ranked in."""

    bounds: np.ndarray  # sorted, nats
    k: int


def _unavailable(reason: str) -> dict[str, Any]:
    return {"ok": False, "reason": reason}


@dataclass
class RunExplorer:
    """A loaded run and everything the page asks of it, computed once at start-up."""

    name: str
    run_dir: Path
    model: Any
    run: Any
    data: Any = None  # the test split (genlab.data.Dataset), None when it cannot be found
    data_problem: str = ""
    panels: dict[str, dict[str, Any]] = field(default_factory=dict)
    latent_map: LatentMap | None = None
    map_latents: Tensor | None = None  # (N, D) latents of the map's points
    map_images: Tensor | None = None  # (N, C, H, W) uint8, the test images behind the points
    sliders: list[Slider] = field(default_factory=list)
    ranking: str = ""
    z0: Tensor | None = None
    _reference: Reference | None = None
    _reference_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- capabilities ----------------------------------------------------------------------------
    @property
    def latent(self) -> LatentModel | None:
        return self.model if isinstance(self.model, LatentModel) else None

    @property
    def encoder(self) -> EncoderModel | None:
        return self.model if isinstance(self.model, EncoderModel) else None

    @property
    def noise_latent(self) -> bool:
        return isinstance(self.model, NoiseLatentModel) and bool(self.model.latent_is_noise)

    @property
    def latent_dim(self) -> int:
        return int(self.latent.latent_dim) if self.latent is not None else 0

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes) if self.model.conditional else 0

    # -- start-up --------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: Path, name: str, device: str = "cpu", map_points: int = MAP_POINTS) -> RunExplorer:
        """Load the run's model and test images and precompute the map and the sliders' ranking."""
        from ..checkpoint import load_run
        from ..data import load_dataset

        model, run = load_run(run_dir, device=device)
        model.eval()
        ex = cls(name=name, run_dir=run_dir, model=model, run=run)
        try:  # never downloads: a server that blocks on the network at start-up looks hung
            ex.data = load_dataset(
                run.data.dataset, "test", data_dir=run.data.data_dir, download=False, **run.data.load_options()
            )
        except GenlabError as e:
            ex.data_problem = f"the run's test images cannot be read ({e.message})"
        ex._prepare(map_points)
        return ex

    def _test_images(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` test images in a fixed shuffled order (every class shows), uint8, and labels."""
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(self.data), generator=g)[:n]
        return self.data.images[idx], self.data.labels[idx]

    def _prepare(self, map_points: int) -> None:
        latent, encoder = self.latent, self.encoder
        no_latent = f"a {type(self.model).__name__} has no latent space (no LatentModel capability)"
        if latent is None:
            for panel in ("map", "sliders", "random", "interpolate"):
                self.panels[panel] = _unavailable(no_latent)
        else:
            self.panels["random"] = {"ok": True}
            self.panels["interpolate"] = {"ok": True}
        if encoder is None:
            self.panels["encode"] = _unavailable(
                f"a {type(self.model).__name__} only decodes: encoding an image needs an encoder (EncoderModel)"
            )
        else:
            self.panels["encode"] = {"ok": True}
        if not isinstance(self.model, LikelihoodModel):
            self.panels["likelihood"] = _unavailable("this model has no likelihood bound (LikelihoodModel)")
        elif self.data is None:
            self.panels["likelihood"] = _unavailable(self.data_problem)
        else:
            self.panels["likelihood"] = {"ok": True}
        if latent is None:
            return
        d = self.latent_dim
        self.z0 = torch.zeros(d)
        if self.noise_latent:
            why = (
                f"this model's {d}-d latent is Gaussian noise (a diffusion model's x_T): single coordinates "
                "and planes of them mean nothing alone; use random z and interpolation"
            )
            self.panels["map"] = _unavailable(why)
            self.panels["sliders"] = _unavailable(why)
            return
        x = y = None
        if self.data is not None:
            x, y = self._test_images(map_points)
        if encoder is not None and x is not None and y is not None:
            mu = encode_latents(encoder, x, y)
            self.map_latents, self.map_images = mu, x
            self.z0 = mu.mean(0)
            self.latent_map = self._encoder_map(mu, y)
        self.sliders, self.ranking = self._rank_sliders(x, y)
        if self.latent_map is None:
            if encoder is not None:  # an encoder but no images: show the prior's plane, and say why
                self.ranking += f"; no test points on the map: {self.data_problem}"
            top = [s.dim for s in self.sliders if s.dim is not None][:2]
            self.latent_map = self._plane_map(top) if len(top) == 2 else None
        self.panels["map"] = {"ok": True} if self.latent_map is not None else _unavailable("a 1-d latent has no plane")
        self.panels["sliders"] = {"ok": True}

    def _encoder_map(self, mu: Tensor, labels: Tensor) -> LatentMap:
        d = mu.shape[1]
        if d <= 2:
            origin, axes = torch.zeros(d), torch.eye(d)[:2] if d == 2 else torch.eye(1)
            kind, caption, names = "coordinates", f"latent means of {len(mu)} test images", ("z0", "z1")
            if d == 1:  # one coordinate: spread it along x, the y axis carries nothing
                axes = torch.cat([axes, torch.zeros(1, 1)])
        else:
            origin, axes, std = pca_2d(mu)
            kind = "pca"
            caption = (
                f"latent means of {len(mu)} test images projected on their top-2 PCA directions "
                f"(of {d} dimensions; PC1 std {float(std[0]):.2f}, PC2 std {float(std[1]):.2f})"
            )
            names = ("PC1", "PC2")
        pts = ((mu - origin) @ axes.T).numpy()
        lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
        pad = np.maximum((hi - lo) * 0.15, 0.5)  # a collapsed latent (all points at one spot) still gets a plane
        extent = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
        return LatentMap(kind, caption, names, origin, axes, extent, pts, labels.numpy())

    def _plane_map(self, dims: list[int]) -> LatentMap:
        i, j = dims
        d = self.latent_dim
        axes = torch.zeros(2, d)
        axes[0, i] = axes[1, j] = 1.0
        caption = (
            f"the plane of latent dimensions z{i} and z{j} (the two most informative) through the current z; "
            "no encoder, so no test images on it"
        )
        return LatentMap("plane", caption, (f"z{i}", f"z{j}"), torch.zeros(d), axes, (-3.0, 3.0, -3.0, 3.0))

    def _rank_sliders(self, x: Tensor | None, y: Tensor | None) -> tuple[list[Slider], str]:
        latent = self.latent
        assert latent is not None
        if x is None and self.encoder is not None:
            return [], f"no ranking: {self.data_problem}"
        images = x if x is not None else torch.zeros(1, *self.model.image_shape, dtype=torch.uint8)
        ranking = informativeness(latent, images[:1000], None if y is None else y[:1000])
        score = ranking.scores
        sliders = []
        if self.latent_map is not None and self.latent_map.kind == "pca":
            for a, name in enumerate(self.latent_map.axis_labels):
                lo, hi = self.latent_map.extent[2 * a], self.latent_map.extent[2 * a + 1]
                sliders.append(Slider(name, "map axis", lo, hi, axis=a))
        for j in ranking.order()[:SLIDERS]:
            lo, hi = -3.0, 3.0
            if self.map_latents is not None:  # cover where the test images actually are, as well as the prior
                q = torch.quantile(self.map_latents[:, j], torch.tensor([0.005, 0.995])).tolist()
                lo, hi = min(lo, q[0]), max(hi, q[1])
            sliders.append(Slider(f"z{j}", f"{ranking.name} {float(score[j]):.2g}", lo, hi, dim=j))
        return sliders, ranking.how

    # -- what the page asks for ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Everything the page needs to lay out this run's explorer, JSON-ready."""
        m = self.latent_map
        classes = list(self.data.class_names) if self.data is not None else [str(i) for i in range(10)]
        return {
            "name": self.name,
            "title": f"{self.run.family}/{self.run.preset}",
            "latent_dim": self.latent_dim,
            "image_shape": list(self.model.image_shape),
            "conditional": bool(self.model.conditional),
            "num_classes": self.num_classes,
            "classes": classes,
            "panels": self.panels,
            "interpolation_mode": "slerp" if (self.encoder is None or self.noise_latent) else "lerp",
            "z0": _rounded(self.z0) if self.z0 is not None else None,
            "ranking": self.ranking,
            "sliders": [
                {"label": s.label, "note": s.note, "min": s.lo, "max": s.hi, "dim": s.dim, "axis": s.axis}
                for s in self.sliders
            ],
            "map": None
            if m is None
            else {
                "kind": m.kind,
                "caption": m.caption,
                "axis_labels": list(m.axis_labels),
                "origin": _rounded(m.origin),
                "axes": _rounded(m.axes),
                "extent": list(m.extent),
                "points": None if m.points is None else _rounded(m.points, 3),
                "labels": None if m.point_labels is None else m.point_labels.tolist(),
            },
        }

    def check_latents(self, value: Any, what: str = "z") -> Tensor:
        """A JSON list of D numbers, or a list of such lists, as a (B, D) float tensor; else a 400."""
        if self.latent is None:
            raise RequestError(self.panels["random"]["reason"], 422)
        d = self.latent_dim
        rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        if not isinstance(value, list) or not 1 <= len(rows) <= MAX_BATCH:
            raise RequestError(f"{what} must be a list of {d} numbers, or a list of at most {MAX_BATCH} such lists")
        for row in rows:
            if not isinstance(row, list) or len(row) != d:
                got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
                raise RequestError(f"{what} must have {d} numbers (the latent size), got {got}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                raise RequestError(f"{what} must hold numbers only")
        z = torch.tensor(rows, dtype=torch.float64)
        if not bool(torch.isfinite(z).all()):
            raise RequestError(f"{what} must be finite (no NaN or infinity)")
        if float(z.abs().max()) > MAX_ABS_Z:
            raise RequestError(f"{what} values must lie within +-{MAX_ABS_Z:g}")
        return z.float()

    def check_label(self, value: Any, n: int) -> Tensor | None:
        """A class index for a conditional model (None for an unconditional one), repeated ``n`` times."""
        if not self.model.conditional:
            return None
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_classes:
            raise RequestError(f"label must be a class index in 0..{self.num_classes - 1}, got {value!r}")
        return torch.full((n,), value, dtype=torch.long)

    def decode(self, z: Tensor, labels: Tensor | None) -> list[str]:
        """Decode a batch (B, D) in one pass, as PNG data URLs."""
        latent = self.latent
        assert latent is not None
        with torch.inference_mode():
            y = labels.to(latent.device) if labels is not None else None
            images = latent.decode(z.to(latent.device), y).float().cpu()
        return [png_data_url(im) for im in images]

    def prior_draws(self, n: int, seed: int) -> Tensor:
        latent = self.latent
        if latent is None:
            raise RequestError(self.panels["random"]["reason"], 422)
        g = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            return latent.sample_latent(n, generator=g).float().cpu()

    def interpolate(self, a: Tensor, b: Tensor, steps: int, mode: str, labels: Tensor | None) -> list[str]:
        path = interpolation_latents(a[0], b[0], steps, mode)  # (steps, D)
        return self.decode(path, None if labels is None else labels[:1].repeat(steps))

    def point(self, index: int) -> dict[str, Any]:
        """A test image on the map: its latent, the image itself and its label."""
        if self.map_latents is None or self.map_images is None or self.latent_map is None:
            raise RequestError("this run's map has no test images", 404)
        if not 0 <= index < len(self.map_latents):
            raise RequestError(f"point index must be in 0..{len(self.map_latents) - 1}, got {index}", 404)
        label = self.latent_map.point_labels[index] if self.latent_map.point_labels is not None else 0
        return {
            "z": _rounded(self.map_latents[index]),
            "image": png_data_url(self.map_images[index].float() / 255),
            "label": int(label),
        }

    # -- encoding a user's image -----------------------------------------------------------------
    def encode_image(self, data: bytes, label: Any) -> dict[str, Any]:
        """The model's view of an uploaded image: its latent, reconstruction, place on the map and likelihood."""
        encoder = self.encoder
        if encoder is None:
            raise RequestError(self.panels["encode"]["reason"], 422)
        x, note = image_from_bytes(data, self.model.image_shape)
        labels = self.check_label(label, 1)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = labels.to(encoder.device) if labels is not None else None
            z = encoder.encode_latent(x.to(encoder.device), y).float().cpu()
            recon = encoder.decode(z.to(encoder.device), y).float().cpu()
            std = (
                self.model.posterior_std(x.to(encoder.device), y).float().cpu()
                if isinstance(self.model, PosteriorSpreadModel)
                else None
            )
        out: dict[str, Any] = {
            "input": png_data_url(x[0]),
            "reconstruction": png_data_url(recon[0]),
            "z": _rounded(z[0]),
            "note": note,
        }
        if std is not None:
            out["std"] = _rounded(std[0])
        m = self.latent_map
        if m is not None and m.kind != "plane":
            out["map_point"] = _rounded(m.project(z)[0])
            if std is not None:
                out["map_cov"] = _rounded(m.project_cov(std[0]))
        if self.panels["likelihood"]["ok"]:
            out["likelihood"] = self._likelihood(x, labels)
        out["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return out

    def _prepare_for_bound(self, x: Tensor) -> Tensor:
        """Images as the bound expects them: binarised (seed 0, as ``genlab nll``) for a binary likelihood."""
        if self.model.likelihood_data == "binary":
            from ..nll import binarize_images

            return binarize_images(x, seed=0)
        if self.model.likelihood_data == "discrete":
            return (x * 255).round() / 255
        return x

    def reference(self) -> Reference:
        """The test images' bounds, computed on first use (seconds: not worth delaying start-up for).

        All :data:`LIKELIHOOD_TEST_IMAGES` when they fit in :data:`REFERENCE_SECONDS`, else as many chunks
        as do (a slow model ranks the user's image among fewer test images, and the answer says how many).
        """
        with self._reference_lock:
            if self._reference is None:
                x, y = self._test_images(LIKELIHOOD_TEST_IMAGES)
                xb = self._prepare_for_bound(x.float() / 255)
                g = torch.Generator().manual_seed(0)
                bounds: list[np.ndarray] = []
                t0 = time.perf_counter()
                for start in range(0, len(xb), REFERENCE_CHUNK):  # a prefix of one fixed shuffle, in order
                    spent = time.perf_counter() - t0
                    if bounds and spent + spent / len(bounds) > REFERENCE_SECONDS:  # the next chunk would not fit
                        break
                    xc = xb[start : start + REFERENCE_CHUNK].to(self.model.device)
                    yc = y[start : start + REFERENCE_CHUNK] if self.model.conditional else None
                    with torch.inference_mode():
                        rep = self.model.likelihood_report(xc, yc, k=LIKELIHOOD_K, generator=g)
                    bounds.append(rep["bound"].double().cpu().numpy())
                self._reference = Reference(np.sort(np.concatenate(bounds)), LIKELIHOOD_K)
            return self._reference

    def _likelihood(self, x: Tensor, labels: Tensor | None) -> dict[str, Any]:
        ref = self.reference()
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            rep = self.model.likelihood_report(
                self._prepare_for_bound(x).to(self.model.device), labels, k=ref.k, generator=g
            )
        bound = float(rep["bound"][0])
        below = float(np.searchsorted(ref.bounds, bound) / len(ref.bounds))  # share of test images scoring lower
        if below < 0.01:
            hint = f"lower than every one of {len(ref.bounds)} test images: very likely unlike the training data"
        elif below < 0.05:
            hint = f"lower than {100 * (1 - below):.0f}% of test images: unusual for this model"
        else:
            hint = f"within the test images' range ({100 * below:.0f}% of them score lower): typical"
        counts, edges = np.histogram(np.concatenate([ref.bounds, [bound]]), bins=30)
        counts_ref, _ = np.histogram(ref.bounds, bins=edges)
        return {
            "name": self.model.likelihood_name,
            "bound": round(bound, 2),
            "k": ref.k,
            "below": round(below, 4),
            "hint": hint,
            "test_median": round(float(np.median(ref.bounds)), 2),
            "test_n": len(ref.bounds),
            "hist": {"edges": _rounded(edges, 2), "counts": counts_ref.tolist()},
            "binarised": self.model.likelihood_data == "binary",
        }


RUN_PICTURES = ("samples.png", "progress.png", "denoising.png")  # the only files of a run ever served


def run_picture(run_dir: Path, name: str) -> Path | None:
    """The run's picture ``name`` (one of :data:`RUN_PICTURES`), or None when absent, not a PNG, or not inside
    the run: a symlink out of the run directory is refused, so no file outside the given runs is ever served."""
    if name not in RUN_PICTURES:
        return None
    path = run_dir / name
    try:
        inside = path.resolve(strict=True).is_relative_to(run_dir.resolve(strict=True))
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not (inside and path.is_file()):
        return None
    try:
        with open(path, "rb") as f:
            return path if f.read(8) == b"\x89PNG\r\n\x1a\n" else None  # served as image/png: it must be one
    except OSError:
        return None


def run_panel(ex: RunExplorer) -> dict[str, Any]:
    """The run panel: preset, training curves (metrics.jsonl), the sample grid, health and evaluation."""
    from ..io import MAX_JSONL_BYTES, read_json, read_jsonl
    from ..models import get_preset

    run = ex.run
    try:
        preset = get_preset(run.family, run.preset)
        description, changed = preset.description, preset.differences(run.model, run.train)
    except GenlabError:
        description, changed = "", []  # a preset renamed since the run was trained
    curves: dict[str, list[list[float]]] = {}
    try:
        records = read_jsonl(ex.run_dir / "metrics.jsonl", MAX_JSONL_BYTES)
    except GenlabError:
        records = []
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, value in rec.items():
            if key in ("step", "epoch", "seconds") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                curves.setdefault(key, []).append([step, value])
    for key, series in curves.items():  # a long run logs ~10^5 lines; 400 points draw the same curve
        if len(series) > 400:
            curves[key] = series[:: math.ceil(len(series) / 400)] + [series[-1]]

    def optional_json(name: str) -> Any:
        try:
            return read_json(ex.run_dir / name, name)
        except GenlabError:
            return None

    summary = optional_json("summary.json")
    metrics = optional_json("metrics.json")
    evaluation = []
    if isinstance(metrics, dict) and isinstance(metrics.get("summary"), list):
        for row in metrics["summary"]:
            if isinstance(row, dict) and isinstance(row.get("label"), str):
                evaluation.append(
                    {
                        "label": row["label"],
                        "value": finite_or_none(row.get("value")),
                        "std": finite_or_none(row.get("std")),
                        "better": row.get("better"),
                    }
                )
    return {
        "family": run.family,
        "preset": run.preset,
        "description": description,
        "changed": changed,
        "dataset": f"{run.data.dataset} ({run.data.split} split)",
        "steps": summary.get("steps") if isinstance(summary, dict) else None,
        "warnings": [w for w in summary.get("warnings", []) if isinstance(w, str)] if isinstance(summary, dict) else [],
        "curves": curves,
        "pictures": [name for name in RUN_PICTURES if run_picture(ex.run_dir, name) is not None],
        "evaluation": evaluation,
        "evaluation_n": metrics.get("n") if isinstance(metrics, dict) else None,
    }


def image_from_bytes(data: bytes, shape: tuple[int, int, int]) -> tuple[Tensor, str]:
    """An uploaded PNG or JPEG as the model's input (1, C, H, W) in [0, 1], and what was done to it.

    Refused with a 4xx: over :data:`MAX_UPLOAD_BYTES`, not a PNG/JPEG, sides over
    :data:`MAX_UPLOAD_SIDE` (read from the header, before decoding: a decompression bomb is never
    expanded), or damaged. The image is fitted into (H, W) keeping its aspect ratio; a light
    background is inverted, since the datasets are light strokes on black.
    """
    c, h, w = shape
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestError(f"image is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,}", 413)
    if not data:
        raise RequestError("no image in the request body (send the PNG's bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as im:
            if max(im.size) > MAX_UPLOAD_SIDE:
                raise RequestError(f"image is {im.size[0]}x{im.size[1]} pixels; at most {MAX_UPLOAD_SIDE} a side", 413)
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                # transparent pixels count as background: black, as in the datasets
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                im2 = Image.alpha_composite(background, rgba)
            else:
                im2 = im.copy()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(f"not a readable PNG or JPEG image ({type(e).__name__})", 415) from None
    im2 = im2.convert("L" if c == 1 else "RGB")
    arr = np.asarray(im2, dtype=np.float32) / 255.0
    notes = []
    border = np.concatenate([arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel()])
    if float(border.mean()) > 0.5:
        arr = 1.0 - arr
        notes.append("inverted (light background; the model knows light strokes on black)")
    if arr.shape[:2] != (h, w):
        notes.append(f"resized from {arr.shape[1]}x{arr.shape[0]} to {w}x{h}")
        arr = _fit(arr, h, w)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None, None] if c == 1 else t.permute(2, 0, 1)[None]
    return t.clamp(0, 1), "; ".join(notes)


def _fit(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale ``arr`` (H0, W0[, C]) to fit (h, w) keeping its aspect ratio, centred on black."""
    h0, w0 = arr.shape[:2]
    scale = min(h / h0, w / w0)
    nh, nw = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    img = Image.fromarray((arr * 255).round().astype(np.uint8))
    small = np.asarray(img.resize((nw, nh), Image.Resampling.BOX), dtype=np.float32) / 255.0
    out = np.zeros((h, w, *arr.shape[2:]), dtype=np.float32)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


def unique_names(run_dirs: list[Path]) -> list[str]:
    """URL-safe, distinct names for runs: the folder's name, then -2, -3, ... for repeats."""
    import re

    names: list[str] = []
    for d in run_dirs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", d.resolve().name).strip("-.") or "run"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def finite_or_none(v: Any) -> Any:
    """Numbers that JSON can carry: NaN and infinities become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
