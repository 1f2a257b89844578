"""Devices, precision and processes: one home for choosing where and how tensors compute."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU")
        return torch.device("cuda", d.local_rank if name == "cuda" else int(name.split(":")[1]))
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device multiplies bfloat16 in hardware, else ``fp32``.

    There, autocast runs the matrix work up to twice as fast (a ``vamp`` VAE step 1.3x on this
    project's 2-core CPU); elsewhere bf16 is emulated and slower than fp32, so ``auto`` keeps fp32.
    """
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})  # x86 CPUs that have bf16 dot products


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere: ``auto`` then keeps fp32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def inference_device(name: str | None) -> str:
    """The device a command that only evaluates a model runs on: ``auto`` picks CUDA when present."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name
