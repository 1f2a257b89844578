"""genlab: content generation with deep generative models (VAEs, GANs) on PyTorch.

The Python API (:mod:`genlab.api`): ``genlab.train``, ``genlab.load``, ``genlab.save``,
``genlab.encode``, ``genlab.decode``. They are imported on first use, so ``import genlab`` (and
the ``genlab`` command, which imports it) does not pay for torch.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "decode", "encode", "load", "save", "train"]

_API = frozenset({"decode", "encode", "load", "save", "train"})

if TYPE_CHECKING:
    from .api import decode, encode, load, save, train


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")
