"""genlab: content generation with deep generative models (VAEs, GANs) on PyTorch."""

__version__ = "0.1.0"
