"""Small helpers the quality benchmarks share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BIG = 10**9  # "no limit" for epochs and checkpoint spacing: the wall-clock budget stops training


def auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def warm_up(device: str) -> None:
    """Pay one-time costs (Adam's first step imports torch._dynamo, ~2 s) before any budget starts."""
    w = torch.zeros(4, device=device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3)
    F.binary_cross_entropy_with_logits(w, torch.ones(4, device=device)).backward()
    opt.step()
