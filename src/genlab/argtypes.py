"""Argument types for the command line: every number and path a command takes is bounded here,
so a hostile or mistyped value is one ``genlab: error:`` line before any work starts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

SEED_MAX = 2**63 - 1  # what torch.Generator.manual_seed and every genlab seed accept


def bounded_int(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low:,}..{high:,}, got {value:,}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


seed = bounded_int(0, SEED_MAX, "a seed (a whole number)")


def output_path(text: str) -> Path:
    """An argparse type: a path a file can be written to, in valid UTF-8 (logs and TensorBoard need it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8; choose another name") from None
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)
