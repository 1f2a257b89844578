"""The contract every model family implements, and the capabilities tools ask for.

A family (VAE, GAN, ...) is one sub-package of ``genlab.models``: a typed config dataclass,
named presets, and a :class:`GenerativeModel` subclass, registered in
``genlab.models.FAMILIES``. The training loop (``genlab.training``) knows nothing of any
family's maths: it hands each step a batch, the family's optimisers and a
:class:`StepContext`, and gets back a :class:`StepOutput`.

What else a model can do is declared by the methods it has, checked with ``isinstance``
against the small protocols below, never by its family name:

- :class:`LatentModel`: a latent space z ~ p(z) and a decoder z -> image: sampling by z,
  interpolation, traversal (VAEs and GANs alike);
- :class:`EncoderModel`: also an encoder image -> z: reconstruction, latent scatter, manifold;
- :class:`PosteriorSpreadModel`: also how uncertain an encoding is (``genlab serve``'s posterior ellipse);
- :class:`LikelihoodModel`: a lower bound on log p(x) in nats: ``genlab nll``, ``evaluate --nll``;
- :class:`EMAModel`: weights averaged over training steps for sampling (the trainer updates them);
- :class:`NoiseLatentModel`: a latent that is Gaussian noise (a diffusion model's x_T): slerp, no traversal;
- :class:`ConfigurableSampler`: sampling options chosen at sampling time (``genlab sample --sampler ...``);
- :class:`ChunkedSampler`: a slow ``sample`` that can hand its images over chunk by chunk (progress bars);
- :class:`DenoisingModel`: draws in steps, and can show them (the run's ``denoising.png``);
- :class:`DiagnosedModel`: a summary of its own health after training (e.g. posterior collapse).

A model never writes files or imports plotting code: pictures and logs are the trainer's
callbacks' job (``genlab.training.callbacks``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..config import config_from_dict, require  # noqa: F401  (families import them from here)
from ..errors import ConfigError, DivergenceError


@dataclass
class StepNoise:
    """Randomness for one training step, identical however the batch is split.

    Every process draws the noise of the *global* batch from a generator seeded
    by (run seed, step) and keeps its own slice. So two processes with batch B
    see exactly the noise one process with batch 2B sees, and a resumed run sees
    the noise it would have seen had it never stopped.
    """

    generator: torch.Generator
    rank: int = 0
    world_size: int = 1

    def _local(self, full: Tensor, n_local: int) -> Tensor:
        return full[self.rank * n_local : (self.rank + 1) * n_local]

    def randn(self, n_local: int, *shape: int, device: torch.device | str = "cpu") -> Tensor:
        full = torch.randn(n_local * self.world_size, *shape, generator=self.generator, device=self.generator.device)
        return self._local(full, n_local).to(device, non_blocking=True)

    def rand(self, n_local: int, *shape: int, device: torch.device | str = "cpu") -> Tensor:
        full = torch.rand(n_local * self.world_size, *shape, generator=self.generator, device=self.generator.device)
        return self._local(full, n_local).to(device, non_blocking=True)

    def randint(self, high: int, n_local: int, device: torch.device | str = "cpu") -> Tensor:
        full = torch.randint(high, (n_local * self.world_size,), generator=self.generator, device=self.generator.device)
        return self._local(full, n_local).to(device, non_blocking=True)


@dataclass(frozen=True)
class Preset:
    """A named starting point: a model config plus the training defaults it wants.

    ``train`` overrides fields of :class:`genlab.config.TrainConfig` (epochs,
    batch_size, lr, ...); command-line flags override both.
    """

    name: str
    description: str
    model: Any
    train: Mapping[str, Any] = field(default_factory=dict)

    def differences(self, model: Any, train: Any) -> list[str]:
        """A run's settings that differ from this preset's (``model.width=8``, ``train.lr=0.0005``):
        what ``--set`` and the training flags changed, so the description is not read as the whole
        story. Training fields the preset does not set (seed, budget, ...) are the run's own."""

        def plain(value: Any) -> Any:  # a JSON round trip: tuples and lists compare equal, as saved
            return json.loads(json.dumps(value))

        mine, base = plain(asdict(model)), plain(asdict(self.model))
        out = [f"model.{k}={json.dumps(v)}" for k, v in mine.items() if k in base and base[k] != v]
        run_train = plain(asdict(train))
        out += [
            f"train.{k}={json.dumps(run_train[k])}"
            for k, v in self.train.items()
            if k in run_train and run_train[k] != plain(v)
        ]
        return out


@dataclass
class TrainSettings:
    """What a family's step needs from the training config (kept small on purpose)."""

    lr: float
    grad_clip: float | None = None  # max global grad norm; None = no clipping
    skip_nonfinite: bool = False  # skip a step whose loss is NaN/inf instead of stopping


@dataclass
class StepContext:
    """Everything a family's ``train_step`` needs besides the batch."""

    step: int  # optimiser steps done before this one (0-based)
    noise: StepNoise
    settings: TrainSettings


class LogLabel(NamedTuple):
    """A logged figure in words: ``what`` it measures (a plot's title) and its ``unit`` (the y axis)."""

    what: str
    unit: str = ""


@dataclass
class StepOutput:
    """What one training step returns to the trainer.

    ``loss`` is the figure whose finiteness the trainer checks each step (a GAN: the
    discriminator's); ``logs`` are named figures to average and log (0-d or 1-d, detached);
    ``applied`` is 1.0 when the update was applied, 0.0 when ``--on-nonfinite skip`` dropped it.
    """

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)
    applied: Tensor = field(default_factory=lambda: torch.ones(()))


class GenerativeModel(nn.Module):
    """Base class of every genlab model.

    Subclasses set ``family`` and ``config_class`` and implement:

    - ``networks()``: the trainable sub-networks by name (each is wrapped in
      DistributedDataParallel separately when training on several processes);
    - ``configure_optimizers(settings)``: one optimiser per name it steps;
    - ``train_step(nets, optimizers, x, y, ctx)``: one update, returning a :class:`StepOutput`
      (detached tensors: the trainer reads them only at log steps, so the step never waits
      for the device);
    - ``sample(n, labels=None, generator=None)``: images (n, C, H, W) in [0, 1].
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_sample_every: ClassVar[int] = 0  # steps between progress grids when --sample-every is 0; 0 = none
    collapse_threshold: float = 0.25  # progress-grid diversity (real data = 1) below which samples count as collapsed
    retired_state_keys: ClassVar[frozenset[str]] = frozenset()  # stored by older genlab, dropped on load

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- the contract --------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def configure_optimizers(self, settings: TrainSettings) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(
        self,
        nets: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> StepOutput:
        raise NotImplementedError

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def collapse_advice(self) -> str:
        """What to try when the progress grids show mode collapse (families refine it)."""
        return "Try more training steps (diversity is low early in every run)."

    def describe_logs(self) -> dict[str, LogLabel]:
        """What each figure ``train_step`` logs measures and its unit, for ``loss.png``; a figure left
        out is shown by its name alone. Families say this, since only they know their config (a VAE's
        likelihood and reduction, a GAN's loss)."""
        return {}

    # -- shared helpers --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def memory_format(self) -> torch.memory_format:
        """Layout the trainer gives weights and batches; conv families prefer channels_last
        (NHWC: oneDNN's and cuDNN's native layout; DCGAN steps 17% faster on 2 CPU cores)."""
        return torch.contiguous_format

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.config, "conditional", False))

    @property
    def num_classes(self) -> int:
        """Classes a conditional model takes as labels (0 for an unconditional one)."""
        return int(getattr(self.config, "num_classes", 0)) if self.conditional else 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = getattr(self.config, "image_shape", (1, 28, 28))
        return int(c), int(h), int(w)

    def sampling_labels(self, n: int, labels: Tensor | None = None) -> Tensor | None:
        """Labels for ``n`` samples: None when unconditional, else ``labels`` checked, or 0, 1, ..., C-1, 0, ..."""
        if not self.conditional:
            return None
        if labels is None:
            return (torch.arange(n) % self.num_classes).to(self.device)
        if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ConfigError(
                f"labels must be {n} class indices in [0, {self.num_classes}), got shape {tuple(labels.shape)}"
            )
        return labels.to(self.device, torch.long)


# -- capabilities: what tools may ask of a model ----------------------------------------------
@runtime_checkable
class LatentModel(Protocol):
    """A latent space: draws from the prior and a decoder (VAE, GAN).

    ``latent_dim`` is the length of z; ``decode`` returns images (B, C, H, W) in [0, 1]
    (the mean image for a VAE, the sampling network's output for a GAN).
    """

    latent_dim: int

    @property
    def device(self) -> torch.device: ...

    @property
    def conditional(self) -> bool: ...

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...  # (n, D)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class EncoderModel(LatentModel, Protocol):
    """A latent model that also maps images to latents: ``encode_latent`` gives one point per image
    (a VAE's posterior mean), deterministic, so pictures of it are repeatable."""

    def encode_latent(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...  # (B, D)


@runtime_checkable
class PosteriorSpreadModel(EncoderModel, Protocol):
    """An encoder model that also says how uncertain its encoding is: ``posterior_std`` gives the
    standard deviation per latent dimension (B, D) around ``encode_latent``'s point (a VAE: its
    diagonal Gaussian q(z|x); with an IAF posterior, the Gaussian the flow starts from)."""

    def posterior_std(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...  # (B, D)


@runtime_checkable
class RankedLatentModel(LatentModel, Protocol):
    """A latent model that can say which latent dimensions carry the most information about images
    (a VAE: KL per dimension); tools fall back to the spread of encoded latents, or the image
    change per unit step, for models without it. An optional ``informativeness_name`` (a VAE: "KL")
    names the score where pictures print it."""

    def latent_informativeness(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...  # (D,)


@runtime_checkable
class LikelihoodModel(Protocol):
    """A lower bound on log p(x) per image, in nats (a VAE: the IWAE bound with k draws).

    ``likelihood_data`` says which images the bound is a density of: ``"binary"`` (evaluate on
    stochastically binarised images), ``"continuous"`` (a density of pixel intensities in [0, 1]) or
    ``"discrete"`` (a probability of the 8-bit images, 256 levels per pixel: a DDPM's discretised
    decoder; the figure bits/dim papers report).
    ``likelihood_report`` returns per-image tensors (B,): at least ``"bound"``, and the
    ``"elbo"`` where it differs; ``likelihood_summary`` adds per-dataset figures (e.g. active units).
    """

    likelihood_name: str
    likelihood_data: str

    def likelihood_report(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int,
        generator: torch.Generator | None = None,
        chunk: int | None = None,
    ) -> dict[str, Tensor]: ...

    def likelihood_summary(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Any]: ...


@runtime_checkable
class EMAModel(Protocol):
    """Weights averaged over training steps: ``ema_pairs`` gives (averaged copy, trained module)
    pairs that the trainer's EMA callback updates after every step at ``ema_decay``."""

    ema_decay: float

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]: ...


@runtime_checkable
class NoiseLatentModel(LatentModel, Protocol):
    """A latent model whose latent is high-dimensional Gaussian noise (a diffusion model's x_T, reached by
    deterministic DDIM): draws lie near the sphere of radius sqrt(D), so paths between latents should be
    spherical (slerp), and a single coordinate means nothing alone (no traversal, no 2-D plane)."""

    latent_is_noise: bool


@runtime_checkable
class ConfigurableSampler(Protocol):
    """A model whose sampling procedure is chosen at sampling time (a diffusion model: sampler, steps,
    eta, guidance). ``set_sampling`` takes the options of its family's ``SAMPLE_FLAGS`` as keywords,
    changes how ``sample`` draws, and raises :class:`~genlab.errors.ConfigError` for a bad one."""

    def set_sampling(self, **options: Any) -> None: ...

    def sampling_settings(self) -> dict[str, Any]:
        """How ``sample`` draws now: each option of ``set_sampling`` that shapes the samples, with its value
        (recorded beside the figures an evaluation computes from the samples; options that do nothing
        with the current choice, such as a noise level for a deterministic solver, are left out)."""
        ...


@runtime_checkable
class ChunkedSampler(Protocol):
    """A model whose ``sample`` takes long and works through the images in chunks (a diffusion model: tens
    of network passes per image). ``sample_chunks`` yields those chunks in order, images in [0, 1] that
    concatenate to exactly what ``sample`` returns, so a caller can report progress between them."""

    def sample_chunks(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Iterator[Tensor]: ...


@runtime_checkable
class DenoisingModel(Protocol):
    """A model that draws an image in steps (a diffusion model): ``denoising_trajectory`` returns
    (n, frames, C, H, W) in [0, 1], from the starting noise to the final image, for the run's
    ``denoising.png``."""

    def denoising_trajectory(
        self, n: int, frames: int = 10, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor: ...


@runtime_checkable
class DiagnosedModel(Protocol):
    """A model that checks its own health on held-out images after training: returns figures for
    ``summary.json`` and a ``"warnings"`` list shown to the user (e.g. posterior collapse)."""

    def diagnose(self, images: Tensor, labels: Tensor) -> dict[str, Any]: ...


def require_image_shape(family: str, expected: Sequence[int], x: Tensor) -> None:
    """Refuse a batch whose images are not the shape the networks were built for, naming the fix
    (a mismatch would otherwise surface as a shape error deep inside a convolution)."""
    if tuple(x.shape[1:]) != tuple(expected):
        raise ConfigError(
            f"{family} configured for images {tuple(expected)} but the data are "
            f"{tuple(x.shape[1:])}; set model.image_shape to match"
        )


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over all weights per step instead of ~10 small ops
    per tensor (measured 9.1 -> 5.9 ms per step for the mlp VAE at batch 128 on 2 CPU cores)."""
    params = list(params)
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fusable or None)


def optimize(
    loss: Tensor, optimizer: torch.optim.Optimizer, params: Sequence[Tensor] | None, settings: TrainSettings, step: int
) -> Tensor:
    """Backward, optional clipping, and the optimiser step for one loss.

    Returns a 0-d tensor that is 1.0 when the step was applied, 0.0 when it was
    skipped. A non-finite loss raises :class:`DivergenceError` naming the step,
    or, with ``skip_nonfinite``, leaves the weights untouched. Checking needs
    one host read per step; we only pay it when the user asked to skip or
    clip (clipping reads the norm anyway). Otherwise the trainer finds
    non-finite losses at its next log step, before any checkpoint is written.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if settings.grad_clip is not None or settings.skip_nonfinite:
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        # max_norm=inf measures the norm without scaling: how skip mode sees a NaN gradient
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip or float("inf"))
    if settings.skip_nonfinite:
        bad = not bool(torch.isfinite(loss)) or (grad_norm is not None and not bool(torch.isfinite(grad_norm)))
        if bad:
            optimizer.zero_grad(set_to_none=True)
            return torch.zeros(())
    elif grad_norm is not None and not bool(torch.isfinite(grad_norm)):
        raise DivergenceError(f"non-finite gradient norm at step {step}")
    optimizer.step()
    return torch.ones(())
