"""The diffusion family's settings: one typed dataclass, validated with a message per field."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...config import require
from .schedule import SCHEDULES, TARGETS

WEIGHTINGS = ("uniform", "min-snr")
SAMPLERS = ("ddpm", "ddim", "dpm-solver++")


@dataclass
class DDPMConfig:
    timesteps: int = 1000  # T, steps of the forward process (Ho et al. 2020); training cost does not grow with it
    schedule: str = "cosine"  # betas: "linear" (Ho et al.), "cosine" (Nichol & Dhariwal 2021), "sigmoid" (Chen 2023)
    target: str = "v"  # what the network predicts: "eps" (Ho et al.), "x0", or "v" (Salimans & Ho 2022)
    weighting: str = "min-snr"  # loss weight per t: "uniform", or "min-snr" (Hang et al. 2023)
    snr_gamma: float = 5.0  # gamma of Min-SNR: weight min(SNR_t, gamma) on the x0 error; 5 is the paper's
    channels: int = 16  # U-Net base width; each level has channels * channel_mult[i]
    channel_mult: tuple = (1, 2, 4)  # one level per entry; all but the last halve the resolution (28-14-7)
    res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up, for the skips)
    attention: bool = True  # self-attention at the lowest resolution (7x7 or 8x8 tokens: cheap)
    groups: int = 8  # GroupNorm groups; channels * each multiplier must divide by it
    dropout: float = 0.0  # in the residual blocks; Ho et al. used 0.1 on CIFAR-10 at 35.7M parameters
    conditional: bool = False  # class labels into the time embedding, plus a null class for guidance
    num_classes: int = 10
    label_dropout: float = 0.1  # conditional: labels replaced by the null class this often (Ho & Salimans 2022)
    ema_decay: float = 0.999  # EMA of the weights, used for sampling; 0.9999 suits runs of 100k+ steps
    sampler: str = "ddim"  # default sampler (genlab sample --sampler overrides): ddpm | ddim | dpm-solver++
    sample_steps: int = 50  # default network calls per sample (DDIM: within ~0.6 FID of 1000 on CIFAR-10)
    eta: float = 0.0  # DDIM noise: 0 = deterministic, 1 = as the DDPM posterior
    guidance: float = 1.0  # classifier-free guidance scale W: 0 = unconditional, 1 = conditional, > 1 = stronger
    preview_steps: int = 10  # DDIM steps for the progress grids drawn during training (the final pictures use
    # the default sampler): a grid of 64 must not cost as much as hundreds of training steps
    image_shape: tuple = (1, 28, 28)  # (C, H, W); 28x28 and 32x32 (any size that halves evenly per level works)

    def validate(self) -> None:
        require(
            isinstance(self.timesteps, int) and 1 <= self.timesteps <= 100_000,
            f"model.timesteps (T) must be an integer in 1..100000, got {self.timesteps}",
        )
        require(
            self.schedule in SCHEDULES,
            f"model.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        require(self.target in TARGETS, f"model.target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        require(
            self.weighting in WEIGHTINGS,
            f"model.weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}",
        )
        require(
            math.isfinite(self.snr_gamma) and self.snr_gamma > 0, f"model.snr_gamma must be > 0, got {self.snr_gamma}"
        )
        require(
            isinstance(self.channels, int) and 1 <= self.channels <= 4096,
            f"model.channels must be in 1..4096, got {self.channels}",
        )
        require(
            1 <= len(self.channel_mult) <= 8 and all(isinstance(m, int) and m >= 1 for m in self.channel_mult),
            f"model.channel_mult must be 1 to 8 positive integers, got {list(self.channel_mult)}",
        )
        require(
            isinstance(self.res_blocks, int) and 1 <= self.res_blocks <= 16,
            f"model.res_blocks must be in 1..16, got {self.res_blocks}",
        )
        require(isinstance(self.groups, int) and self.groups >= 1, f"model.groups must be >= 1, got {self.groups}")
        require(
            all((self.channels * m) % self.groups == 0 for m in self.channel_mult),
            f"model.channels * each channel_mult must divide by model.groups ({self.groups}); got channels "
            f"{self.channels}, channel_mult {list(self.channel_mult)}",
        )
        require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        require(
            isinstance(self.num_classes, int) and self.num_classes >= 2,
            f"model.num_classes must be >= 2, got {self.num_classes}",
        )
        require(
            0.0 <= self.label_dropout < 1.0,
            f"model.label_dropout must be in [0, 1) (0.1 is typical for guidance), got {self.label_dropout}",
        )
        require(
            0.0 <= self.ema_decay < 1.0,
            f"model.ema_decay must be in [0, 1) (0 = off; 0.999 is typical), got {self.ema_decay}",
        )
        require(
            len(self.image_shape) == 3 and all(isinstance(s, int) and s >= 1 for s in self.image_shape),
            f"model.image_shape must be (C, H, W), got {list(self.image_shape)}",
        )
        _, h, w = self.image_shape
        halvings = len(self.channel_mult) - 1
        require(
            h % 2**halvings == 0 and w % 2**halvings == 0,
            f"the U-Net halves the resolution {halvings} time(s) (len(model.channel_mult) - 1), so image height and "
            f"width must divide by {2**halvings}; got {h}x{w}",
        )
        check_sampling(self, self.sampler, self.sample_steps, self.eta, self.guidance, CONFIG_NAMES)
        require(
            isinstance(self.preview_steps, int) and 1 <= self.preview_steps <= self.timesteps,
            f"model.preview_steps must be in 1..T ({self.timesteps}), got {self.preview_steps}",
        )


CONFIG_NAMES = {
    "sampler": "model.sampler",
    "steps": "model.sample_steps",
    "eta": "model.eta",
    "guidance": "model.guidance",
}
FLAG_NAMES = {"sampler": "--sampler", "steps": "--steps", "eta": "--eta", "guidance": "--guidance"}


def check_sampling(
    cfg: DDPMConfig, sampler: str, steps: int, eta: float, guidance: float, names: dict[str, str] = FLAG_NAMES
) -> None:
    """One message per bad sampling option, each named as the caller knows it (``names``: a flag or a field)."""
    require(sampler in SAMPLERS, f"{names['sampler']} must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    require(
        isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= cfg.timesteps,
        f"{names['steps']} must be in 1..T, and this model has T = {cfg.timesteps}; got {steps}",
    )
    require(
        isinstance(eta, (int, float)) and math.isfinite(eta) and 0.0 <= eta <= 1.0,
        f"{names['eta']} must be in [0, 1] (0 = deterministic DDIM, 1 = as much noise as DDPM), got {eta}",
    )
    require(
        isinstance(guidance, (int, float)) and math.isfinite(guidance) and 0.0 <= guidance <= 100.0,
        f"{names['guidance']} must be in [0, 100], got {guidance}",
    )
    require(
        cfg.conditional or guidance == 1.0,
        f"{names['guidance']} (classifier-free guidance) needs a conditional model (e.g. preset ddpm-cond); "
        "this one was trained without labels",
    )
