"""What training logs: running averages of step figures, metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import append_jsonl, atomic_write_text, read_jsonl
from ..runs import METRICS_FILE


class MetricsLog:
    """metrics.jsonl (append, one object per line) plus TensorBoard, main process only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer = None
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
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, record["step"])
                elif isinstance(v, list) and len(v) <= 64:
                    self.writer.add_scalars(k, {str(i): x for i, x in enumerate(v)}, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
