"""One place for randomness: global seeding and independent derived seeds."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends on ``seed`` and ``keys`` only, e.g. (seed, "data", epoch).

    Streams derived this way are independent of each other and of how many
    processes run or where a run was resumed.
    """
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
