"""What training logs: running averages of step figures, metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io import append_jsonl, atomic_write_text, read_jsonl
from ..runs import METRICS_FILE


class MetricsLog:
    """metrics.jsonl (append, one object per line) plus TensorBoard, main process only."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        tensorboard: bool = True,
        resume_step: int | None = None,
        hparams: dict[str, Any] | None = None,
    ):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer: Any = None
        # written with the first record, whose scalar names become the hparams table's metric columns
        self.hparams = hparams
        if enabled and resume_step is not None:
            self.truncate_after(resume_step)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

            # purge_step hides events a killed run logged after its checkpoint
            self.writer = SummaryWriter(
                log_dir=str(run_dir / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1
            )

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the curve has no duplicates.

        A line cut short by a crash is dropped too.
        """
        if not os.path.lexists(self.path):  # a FIFO or device in its place is refused by read_jsonl
            return
        keep = [r for r in read_jsonl(self.path) if isinstance(r.get("step"), int) and r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, record)
        if self.writer is None:
            return
        step = record["step"]
        if self.hparams is not None:
            self._write_hparams(self.hparams, [k for k, v in record.items() if _is_number(v)], step)
            self.hparams = None
        for k, v in record.items():
            if k not in ("step", "epoch") and _is_number(v):
                self.writer.add_scalar(k, v, step)
            elif isinstance(v, list) and v and all(_is_number(x) for x in v):
                # One histogram per step, not add_scalars: that makes a TensorBoard run per element
                # (32 sub-runs for a 32-d latent in the run list of `tensorboard --logdir runs`).
                self.writer.add_histogram(k, np.asarray(v, dtype=np.float64), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A picture at ``step`` in TensorBoard's Images tab; ``image`` is (H, W) or (H, W, 3) uint8."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HW" if image.ndim == 2 else "HWC")

    def _write_hparams(self, config: dict[str, Any], metrics: list[str], step: int) -> None:
        """The run's settings twice: config.json as text (every setting, readable as is) and the
        HParams tab's table (flat scalar settings against the logged figures).

        The hparams summaries go into this run's own event file; ``SummaryWriter.add_hparams`` would
        open a sub-run per call, one more entry in the run list.
        """
        from torch.utils.tensorboard.summary import hparams

        text = json.dumps(config, indent=2)
        self.writer.add_text("config", "```\n" + text + "\n```", step)
        # file paths are where the data was, not settings: they stay in the text, off the table
        flat = {
            k: v
            for k, v in _flatten(config).items()
            if isinstance(v, (bool, int, float, str)) and not k.startswith(("data.sources.", "data.data_dir"))
        }
        metric_names = [m for m in metrics if m not in ("step", "epoch")]
        exp, ssi, sei = hparams(flat, {m: 0.0 for m in metric_names})
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists become their JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, name + ".")
        else:
            out[name] = json.dumps(v) if isinstance(v, list) else v
    return out


class Averager:
    """Sums step figures as float64 tensors on their device; reads them only when asked.

    float64 whatever the step computed in: under bf16 autocast a figure such as the KL is a
    bfloat16 with 8 bits of mantissa, and summing in that dtype rounded the logged means
    (17.0, 17.25, 17.375); the sum's dtype, not the step's, decides what the log shows.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, logs: dict[str, Tensor]) -> None:
        for k, v in logs.items():
            v = v.detach().to(torch.float64)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])

    def pop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.sums.items():
            v = (v / max(self.count, 1)).cpu()
            out[k] = v.item() if v.ndim == 0 else v.tolist()
        self.sums, self.count = {}, 0
        return out
