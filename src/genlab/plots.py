"""Matplotlib figures written into run directories (Agg backend: no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write_bytes, read_jsonl  # noqa: E402


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


# Figures a metrics.jsonl line carries that are bookkeeping, not training signals: they are not plotted.
BOOKKEEPING_KEYS = frozenset({"step", "epoch", "seconds", "lr", "skipped_steps", "applied", "collapsed", "pairwise_l2"})
MAX_COLUMNS = 4  # panels per row: 4 x 3.6 in keeps a figure under ~15 in wide
# Figures the trainer's callbacks log, in words; a model describes its own (GenerativeModel.describe_logs)
CALLBACK_LABELS = {
    "diversity": ("spread of the fixed progress batch\n(mean pairwise L2, real data = 1)", "ratio to real data"),
}
PANEL_SIZE = (3.6, 2.8)  # inches per panel (width, height)


def is_scalar(value: Any) -> bool:
    """A plottable number (a bool is a flag, not a figure)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curve_keys(records: Iterable[dict[str, Any]]) -> list[str]:
    """The numeric scalar figures logged in ``records``, except bookkeeping: ``loss*`` first, the rest
    in the order they were first logged (whatever a model family calls its figures)."""
    seen: dict[str, None] = {}  # an ordered set
    for rec in records:
        for key, value in rec.items():
            if key not in BOOKKEEPING_KEYS and is_scalar(value):
                seen.setdefault(key)
    keys = list(seen)
    return [k for k in keys if k.startswith("loss")] + [k for k in keys if not k.startswith("loss")]


def curve(records: Iterable[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the records that logged it with a step."""
    pts = [(rec["step"], rec[key]) for rec in records if is_scalar(rec.get(key)) and is_scalar(rec.get("step"))]
    return [s for s, _ in pts], [v for _, v in pts]


def panel_grid(n: int):
    """(figure, ``n`` axes) in rows of at most :data:`MAX_COLUMNS`; spare cells of the last row hidden.

    Constrained layout keeps titles, labels and a ``fig.suptitle`` from overlapping.
    """
    cols = max(1, min(n, MAX_COLUMNS))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[: max(n, 1)]


def plot_losses(
    metrics_path: Path, out: Path, title: str = "", labels: Mapping[str, tuple[str, str]] | None = None
) -> None:
    """One panel per figure a run logged in ``metrics.jsonl`` (see :func:`curve_keys`) against step.

    ``labels``: figure name -> (what it measures, its unit), from the model's ``describe_logs``; each
    panel is titled with the name (as ``metrics.jsonl`` spells it) and what it is, its y axis with the unit.
    """
    records = read_jsonl(Path(metrics_path))
    # the model's own figures in the order it describes them, before what callbacks logged (a GAN's
    # diversity, logged from the first progress step, would otherwise come before D's outputs)
    own = list(labels or {})
    rank = {k: i for i, k in enumerate(own)}
    keys = sorted(curve_keys(records), key=lambda k: (not k.startswith("loss"), rank.get(k, len(own))))
    described = {**CALLBACK_LABELS, **(labels or {})}
    fig, axes = panel_grid(len(keys))
    for ax, key in zip(axes[: len(keys)], keys, strict=True):
        steps, values = curve(records, key)
        # a short run logs a handful of points: markers keep a single point visible
        ax.plot(steps, values, lw=1.2, marker="o" if len(steps) < 20 else None, ms=3)
        what, unit = described.get(key, ("", ""))
        ax.set_title(f"{key}: {what}" if what else key, fontsize=9 if what else None)
        if unit:
            ax.set_ylabel(unit)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if not keys:
        axes[0].text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    if title:
        fig.suptitle(title)
    save_figure(fig, out)


def plot_latent_scatter(
    z: np.ndarray,
    labels: np.ndarray,
    out: Path,
    class_names=None,
    title: str = "",
    axis_labels: tuple[str, str] = ("z[0]", "z[1]"),
) -> None:
    """Points (N, 2) coloured by label: latents of a 2-d latent, or a projection (PCA scores: say so in
    ``axis_labels``, which the title must agree with)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
    cbar = fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
    if class_names:
        cbar.ax.set_yticklabels(list(class_names)[:10])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title or "latents of test images")
    save_figure(fig, out)


def plot_augmentation(result: Mapping[str, Any], out: Path) -> None:
    """``genlab augment``'s figure: real-test accuracy against real images per class (log axis), with and
    without the generated images, mean ± standard deviation over seeds as error bars, gains annotated."""
    rows = result["rows"]
    ks = [r["real_per_class"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, label, fmt in (
        ("real", "real images only", "o-"),
        ("real+generated", f"+ {result['synthetic_per_class']} generated per class", "s--"),
    ):
        mean = [100 * r[arm]["mean"] for r in rows]
        std = [100 * r[arm]["std"] for r in rows]
        ax.errorbar(ks, mean, yerr=std, fmt=fmt, capsize=4, lw=1.5, ms=5, label=label)
    tops = []
    for r in rows:  # each gain above the higher error bar's cap, so no bar runs through its label
        top = 100 * max(r[arm]["mean"] + r[arm]["std"] for arm in ("real", "real+generated"))
        tops.append(top)
        ax.annotate(
            f"{r['gain_points']['mean']:+.1f} pts",
            (r["real_per_class"], top),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    if len(ks) > 1:
        ax.set_xscale("log")
        ax.set_xlim(min(ks) / 1.6, max(ks) * 1.6)  # room for the gain labels at both ends
    ax.margins(y=0.15)
    low, high = ax.get_ylim()
    ax.set_ylim(low, max(high, max(tops) + 0.12 * (high - low)))  # the highest label inside the axes
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("real training images per class (k)")
    ax.set_ylabel("accuracy on the real test split (%)")
    seeds = len(result["seeds"])
    ax.set_title(
        f"{result.get('family', '')}/{result.get('preset', '')} on {result.get('dataset', '')}: "
        f"does generated data help? ({seeds} seed{'s' if seeds != 1 else ''}, ± 1 s.d.)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, out)
