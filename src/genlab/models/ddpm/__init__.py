"""The diffusion family: DDPM training, DDIM / DDPM / DPM-Solver++ sampling, classifier-free guidance.

``model.py`` holds the loss and the capabilities (read it first); ``schedule.py`` the forward process
(beta schedules, the three targets), ``samplers.py`` the samplers and DDIM inversion as functions of
any denoiser, ``likelihood.py`` the variational bound, ``unet.py`` the network, ``config.py`` the
settings, ``presets.py`` the named configurations and the sampling flags.
"""

from .config import SAMPLERS, WEIGHTINGS, DDPMConfig
from .likelihood import variational_bound
from .model import DDPM
from .presets import CLI_FLAGS, PRESETS, SAMPLE_FLAGS
from .schedule import SCHEDULES, TARGETS, Schedule
from .unet import UNet

MODEL = DDPM

__all__ = [
    "CLI_FLAGS",
    "DDPM",
    "DDPMConfig",
    "MODEL",
    "PRESETS",
    "SAMPLERS",
    "SAMPLE_FLAGS",
    "SCHEDULES",
    "Schedule",
    "TARGETS",
    "UNet",
    "WEIGHTINGS",
    "variational_bound",
]
