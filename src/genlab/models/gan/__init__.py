"""The GAN family: the tutorial's MLP GAN, DCGAN, conditional GAN, WGAN-GP, hinge + spectral norm.

``model.py`` holds the adversarial step (read it first), ``losses.py`` the losses and
penalties as pure functions, ``augment.py`` DiffAugment for D's inputs, ``networks.py`` G and
D, ``config.py`` the settings, ``presets.py`` the named configurations.
"""

from .augment import diff_augment
from .config import LOSSES, GANConfig
from .losses import d_loss, g_loss, gradient_penalty, r1_penalty
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
    "diff_augment",
    "g_loss",
    "gradient_penalty",
    "r1_penalty",
]
