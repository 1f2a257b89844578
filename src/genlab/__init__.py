"""genlab: content generation with deep generative models (VAEs, GANs) on PyTorch."""

import os as _os

# Set before torch loads OpenMP (genlab's modules import torch after this): idle OpenMP threads
# sleep instead of spinning. Where the cores are also busy with other work, spinning threads
# made training steps 4-8x slower here (benchmarks/README.md). An explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
