"""The VAE family: the tutorial's MLP VAE, conv VAEs, beta-VAE, conditional VAE, VampPrior, IAF, HVAE.

``model.py`` holds the model and its loss (read it first); its parts, chosen from the config, are the
decoder's likelihoods in ``likelihoods.py`` and the priors in ``priors.py``. ``gaussian.py`` holds the
Gaussian algebra (KL, reparameterisation, importance weights), ``likelihood.py`` the bounds on log p(x),
``networks.py`` the building blocks, ``config.py`` the settings, ``presets.py`` the named configurations.
"""

from .config import LIKELIHOODS, PRIORS, VAEConfig
from .gaussian import active_units, kl_divergence, log_importance_weights, reparameterize
from .model import VAE, posterior_means
from .networks import IAFStep
from .presets import CLI_FLAGS, PRESETS

MODEL = VAE

__all__ = [
    "CLI_FLAGS",
    "LIKELIHOODS",
    "MODEL",
    "PRESETS",
    "PRIORS",
    "VAE",
    "IAFStep",
    "VAEConfig",
    "active_units",
    "kl_divergence",
    "log_importance_weights",
    "posterior_means",
    "reparameterize",
]
