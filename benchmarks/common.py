"""Small helpers the quality benchmarks share."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

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


def budget_parser(doc: str, *, minutes: float, out: str) -> argparse.ArgumentParser:
    """The options every fixed-budget quality benchmark takes; each script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=minutes, help=f"training budget per model (default {minutes:g})")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=out, help=f"where the runs and results.json go (default {out})")
    return ap


def split_settings(items: list[str], where: str) -> tuple[dict, dict]:
    """['width=32', 'train.lr=8e-4'] -> ({'width': 32}, {'lr': 0.0008}): model fields (KEY) and training
    fields (train.KEY), as ``genlab train --set`` would take them; values are read as JSON where they
    parse (``betas=[0.0,0.99]``) and kept as text otherwise (``augment=translation,cutout``)."""
    model: dict = {}
    train: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SystemExit(f"{where}: expected KEY=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if key.startswith("train."):
            train[key.removeprefix("train.")] = parsed
        else:
            model[key.removeprefix("model.")] = parsed
    return model, train


def real_images(data, n: int, seed: int) -> torch.Tensor:
    """``n`` images of a genlab ``Dataset`` drawn without replacement (seed-fixed), as float in [0, 1]: real
    data to score exactly as samples are, the figures a model that matched the data would expect. (Not
    ``genlab evaluate``'s own reference points: these tables also score them with the second judge, and
    against the whole reference split, as the models' rows are.)"""
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.images[pick].float() / 255.0


def print_table(header: str, lines: list[str], legend: str) -> None:
    """A results table: header, rule, one line per model, then what the columns mean."""
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)
    print(legend)


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, for the header of a speed table."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
