"""Named diffusion configurations: ``genlab train ddpm --preset NAME``."""

from __future__ import annotations

from ..base import Preset
from .config import DDPMConfig


def _preset(name: str, description: str, train: dict, **model) -> Preset:
    return Preset(name, description, DDPMConfig(**model), train)


# CPU presets: a 0.69M-parameter U-Net (16-32-64 channels at 28-14-7, attention at 7x7: the full-resolution
# level is the expensive one, so it is the narrowest) with the cosine schedule, v-prediction and Min-SNR-5,
# the combination that converges fastest in steps (Hang et al. 2023), which is what a CPU budget buys.
# Rate 1e-3 with a short warm-up and clipping; EMA 0.999.
_CPU_TRAIN = dict(
    epochs=20, batch_size=64, lr=1e-3, warmup_steps=200, grad_clip=1.0, precision="auto", lr_schedule="constant"
)

PRESETS = {
    "ddpm": _preset(
        "ddpm",
        "denoising diffusion (Ho et al. 2020), CPU-sized: 0.69M-parameter U-Net (0.15 GFLOP per image), "
        "attention at 7x7, T=1000 "
        "cosine schedule, v-prediction, Min-SNR-5 weighting, EMA 0.999; samples with DDIM 50 steps "
        "(genlab sample --sampler/--steps/--eta)",
        _CPU_TRAIN,
    ),
    "ddpm-cond": _preset(
        "ddpm-cond",
        "class-conditional ddpm with classifier-free guidance (label dropout 0.1; sample with --label and "
        "--guidance W, default 2)",
        _CPU_TRAIN,
        conditional=True,
        label_dropout=0.1,
        guidance=2.0,
    ),
    "ddpm-gpu": _preset(
        "ddpm-gpu",
        "GPU-sized ddpm: 64-128-256 channels, 2 residual blocks per level, dropout 0.1 (15.7M parameters, "
        "3.3 GFLOP per 28x28 image forward), batch 128, lr 2e-4, EMA 0.9995, 100 epochs",
        dict(epochs=100, batch_size=128, lr=2e-4, warmup_steps=1000, grad_clip=1.0, precision="auto"),
        channels=64,
        channel_mult=(1, 2, 4),
        res_blocks=2,
        dropout=0.1,
        ema_decay=0.9995,
        groups=32,
    ),
}

# Command-line flags of `genlab train ddpm` that set a model field: flag -> (field, type, help).
CLI_FLAGS = {
    "--timesteps": ("timesteps", int, "T, steps of the forward process"),
    "--schedule": ("schedule", str, "beta schedule: linear | cosine | sigmoid"),
    "--target": ("target", str, "network prediction: eps | x0 | v"),
    "--weighting": ("weighting", str, "loss weighting: uniform | min-snr"),
    "--channels": ("channels", int, "U-Net base width"),
    "--ema-decay": ("ema_decay", float, "EMA of the weights for sampling (0 = off)"),
}

# Flags of `genlab sample` that choose how this family draws (ConfigurableSampler.set_sampling):
# flag -> (option, type, help).
SAMPLE_FLAGS = {
    "--sampler": ("sampler", str, "ddpm (ancestral) | ddim | dpm-solver++ (2M) (default: the run's, ddim)"),
    "--steps": ("steps", int, "network evaluations per sample, 1..T (default: the run's, 50)"),
    "--eta": ("eta", float, "DDIM noise: 0 = deterministic (default), 1 = as DDPM"),
    "--guidance": (
        "guidance",
        float,
        "classifier-free guidance scale W (conditional runs): 0 = unconditional, 1 = conditional",
    ),
}
