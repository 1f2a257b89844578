"""Matplotlib figures written into run directories (Agg backend: no display needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, out: Path, title: str = "") -> None:
    """One panel per loss-like scalar (loss, recon, kl, loss_d, ...) against step."""
    records = [r for r in read_metrics(metrics_path) if any(k.startswith(("loss", "recon", "kl")) for k in r)]
    keys = sorted({k for r in records for k, v in r.items()
                   if isinstance(v, (int, float)) and k.startswith(("loss", "recon", "kl"))})
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.6 * max(len(keys), 1), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v, lw=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, out)


def plot_latent_scatter(z: np.ndarray, labels: np.ndarray, out: Path, class_names=None, title: str = "") -> None:
    """Posterior means coloured by label (first two coordinates: PCA them first for D > 2)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
    cbar = fig.colorbar(sc, ax=ax, ticks=range(10))
    if class_names:
        cbar.ax.set_yticklabels(list(class_names)[:10])
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title or "latent means of test images")
    save_figure(fig, out)
