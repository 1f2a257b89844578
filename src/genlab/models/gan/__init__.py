"""The GAN family: the tutorial's MLP GAN, DCGAN, conditional GAN, WGAN-GP, hinge + spectral norm.

``model.py`` holds the adversarial step (read it first), ``losses.py`` the losses as pure
functions, ``networks.py`` G and D, ``config.py`` the settings, ``presets.py`` the named
configurations.
"""

from .config import LOSSES, GANConfig
from .losses import d_loss, g_loss, gradient_penalty
from .model import GAN
from .networks import Discriminator, Generator, MinibatchStd
from .presets import CLI_FLAGS, PRESETS

MODEL = GAN

__all__ = [
    "CLI_FLAGS",
    "GAN",
    "GANConfig",
    "LOSSES",
    "MODEL",
    "PRESETS",
    "Discriminator",
    "Generator",
    "MinibatchStd",
    "d_loss",
    "g_loss",
    "gradient_penalty",
]
