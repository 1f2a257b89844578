"""One training loop for every model family.

The loop owns data order, noise, logging, checkpoints, signals and processes;
the family's ``train_step`` owns the maths. Data lives on the device as a uint8
tensor and is batched by index, so no Python work happens per image.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by
(seed, "data", e) and the noise of step ``s`` comes from a generator seeded by
(seed, "noise", s). Neither depends on how many processes share the batch or on
where a run was resumed. A checkpoint adds everything else that evolves: the
weights, the optimisers' moments and step counts, the global RNG states (torch,
NumPy, Python, CUDA: restored just before the first resumed step, after
start-up code that may draw from them) and the running sums of the metrics not
yet logged. So a resumed run continues bit for bit, on the same machine and
thread count, and writes the same metrics.jsonl lines (``seconds`` aside).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from . import checkpoint as ckpt
from .config import RunConfig
from .data import Dataset, load_dataset
from .errors import CheckpointError, ConfigError, DivergenceError, GenlabError
from .models import GenerativeModel, StepNoise, TrainSettings, build_model
from .models.base import StepContext
from .seeding import derive_seed, set_seed

METRICS_FILE = "metrics.jsonl"


class Interrupted(GenlabError):
    """SIGINT/SIGTERM arrived; a checkpoint was written. Exit code 130."""

    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs: float
    seconds: float
    images_per_second: float
    summary: dict[str, Any] = field(default_factory=dict)


# -- processes and devices --------------------------------------------------------------
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


# -- run directories -----------------------------------------------------------------------
def default_run_dir(run: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{run.family}-{run.preset}-{run.data.dataset}-{stamp}"


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber an earlier run unless asked; never delete a folder that is not a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise GenlabError(f"{run_dir} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise GenlabError(f"{run_dir} already holds files; continue it with --resume {run_dir}, "
                              f"replace it with --overwrite, or choose another --out")
        if not (run_dir / ckpt.CONFIG_FILE).is_file():
            raise GenlabError(f"{run_dir} is not a genlab run directory (no config.json): "
                              f"--overwrite only replaces genlab runs; choose another --out")
        ckpt._remove_quietly(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise GenlabError(f"cannot write to {run_dir}: {e.strerror or e}") from None


# -- signals ----------------------------------------------------------------------------------
@contextmanager
def deferred_signals() -> Iterator[dict[str, int]]:
    """Turn SIGINT/SIGTERM into a flag so the loop can finish its step and checkpoint."""
    flag: dict[str, int] = {}
    if threading_main():
        def handler(signum, _frame):
            if "signal" in flag:  # a second Ctrl-C: the user does not want to wait for the checkpoint
                raise KeyboardInterrupt
            flag["signal"] = signum
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield flag
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    else:
        yield flag


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# -- logging -------------------------------------------------------------------------------------
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
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                        purge_step=None if resume_step is None else resume_step + 1)

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the curve has no duplicates.

        A line cut short by a crash is dropped too.
        """
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                keep.append(line)
        ckpt.atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise GenlabError(f"cannot append to {self.path}: {ckpt._why(e)}") from None
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
    """Sums step outputs as tensors; reads them from the device only when asked."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, logs: dict[str, Tensor]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])

    def pop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.sums.items():
            v = (v / max(self.count, 1)).float().cpu()
            out[k] = v.item() if v.ndim == 0 else v.tolist()
        self.sums, self.count = {}, 0
        return out


def _finite(record: dict[str, Any]) -> bool:
    vals = [v for k, v in record.items() if k.startswith("loss") and isinstance(v, float)]
    return all(math.isfinite(v) for v in vals)


# -- the loop -------------------------------------------------------------------------------------
def train(run: RunConfig, run_dir: Path | None = None, *, resume: bool = False, overwrite: bool = False,
          quiet: bool = False, data: Dataset | None = None, heldout: Dataset | None = None) -> TrainResult:
    """Train ``run`` into ``run_dir``; with ``resume`` continue from its newest checkpoint."""
    return Trainer(run, run_dir, resume=resume, overwrite=overwrite, quiet=quiet, data=data, heldout=heldout).fit()


class Trainer:
    """One run: checks and data (``__init__``), then model, loop, checkpoints and logs (:meth:`fit`)."""

    def __init__(self, run: RunConfig, run_dir: Path | None = None, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False, data: Dataset | None = None,
                 heldout: Dataset | None = None):
        run.validate()
        self.run, self.cfg = run, run.train
        self.resume, self.overwrite, self.quiet = resume, overwrite, quiet
        cfg = self.cfg
        self.d = init_distributed("cuda" if cfg.device.startswith("cuda") or
                                  (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = resolve_device(cfg.device, self.d)
        if self.d.world_size > 1 and run_dir is None:
            raise ConfigError("multi-process training needs --out (all processes must share one run directory)")
        if resume and run_dir is None:
            raise ConfigError("resuming needs the run directory")
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(run)
        self.latest = _latest_checkpoint(self.run_dir) if resume else None  # fail before the slow data loading

        if data is None:
            data = load_dataset(run.data.dataset, run.data.split, data_dir=run.data.data_dir)
        run.data.sources = dict(data.sources)
        self.data = data
        self.heldout = heldout if heldout is not None else _heldout(run, data)

        self.global_batch = cfg.batch_size
        if self.global_batch % self.d.world_size:
            raise ConfigError(f"batch size {self.global_batch} must divide evenly over {self.d.world_size} processes")
        self.local_batch = self.global_batch // self.d.world_size
        self.n = data.images.shape[0]
        self.steps_per_epoch = self.n // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"batch size {self.global_batch} is larger than the dataset ({self.n} images)")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        # What a checkpoint must match to be continued by this run.
        self.identity = {"config": run.to_dict(), "num_images": self.n, "steps_per_epoch": self.steps_per_epoch}
        self.start_step = _check_same_run(self.latest, self.identity) if self.latest is not None else 0

    # -- fit: set-up, loop, finish --------------------------------------------------------------
    def fit(self) -> TrainResult:
        if self.start_step >= self.total_steps and _finished_steps(self.run_dir) == self.start_step:
            # finish_run completed after that checkpoint: touch nothing
            return self._nothing_to_do(f"already trained for {self.start_step} steps", "--epochs or --max-steps")
        if self.d.main and not self.resume:
            prepare_run_dir(self.run_dir, self.overwrite)
            self.run.save(self.run_dir / ckpt.CONFIG_FILE)
        if self.d.world_size > 1:
            dist.barrier()
        self._build()
        budget_spent = self.time_clock and self.clock >= 60 * self.cfg.max_minutes
        if budget_spent and self.start_step == _finished_steps(self.run_dir):
            self.log.close()  # the decay already spent the whole budget: one more step would be at rate 0
            return self._nothing_to_do(f"already trained for its {self.cfg.max_minutes} minutes (lr_clock=time)",
                                       "a larger --max-minutes")
        self.bar = _progress_bar(self.total_steps, self.start_step, enabled=self.d.main and not self.quiet)
        try:
            self._loop()
        finally:
            self.bar.close()
            self.log.close()
        return self._finish()

    def _nothing_to_do(self, why: str, longer: str) -> TrainResult:
        if self.d.main and not self.quiet:
            print(f"{self.run_dir}: {why}; nothing to do (pass {longer} to train longer)", file=sys.stderr)
        return TrainResult(self.run_dir, self.start_step, self.start_step / self.steps_per_epoch, 0.0, 0.0, {})

    def _build(self) -> None:
        """Model, optimisers, resumed state, device data and the loop's bookkeeping."""
        cfg, d, device = self.cfg, self.d, self.device
        set_seed(cfg.seed)
        model = build_model(self.run.family, self.run.model).to(device)
        self.layout = model.memory_format
        self.model = model.to(memory_format=self.layout)
        self.settings = TrainSettings(lr=cfg.lr, grad_clip=cfg.grad_clip, skip_nonfinite=cfg.on_nonfinite == "skip")
        self.optimizers = self.model.configure_optimizers(self.settings)
        # Each group's own rate (GANs: D's is lr * d_lr_mult), before a resume loads the last scheduled one.
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers.values()]
        self.averager = Averager()
        self.resumed: dict[str, Any] = {}
        if self.latest is not None:
            self.resumed = _restore(self.latest, self.model, self.optimizers, self.averager)
            if d.main:
                _update_config(self.run, self.run_dir / ckpt.CONFIG_FILE)  # e.g. --epochs extended the run

        self.nets = _wrap_networks(self.model, d, device, cfg.compile)
        self.images = self.data.images.to(device)
        self.labels = self.data.labels.to(device)
        self.model.on_train_start(_first(self.heldout.images, 1000).float().div(255).to(device),
                                  _first(self.heldout.labels, 1000).to(device))

        self.log = MetricsLog(self.run_dir, enabled=d.main, resume_step=self.start_step if self.resume else None)
        self.sample_every = cfg.sample_every or self.model.default_sample_every
        self.noise_gen = torch.Generator(device=device)
        self.checkpoint_every = cfg.checkpoint_every or self.steps_per_epoch
        self.check_each_step = device.type == "cpu"  # a host read per step is free on CPU, a stall on GPU
        if device.type == "cpu":
            keep_freed_memory()
        self.params = _float_params(self.model)
        self.skip_mode = self.settings.skip_nonfinite
        self.precision = resolve_precision(cfg.precision, device)
        self.bf16 = self.precision == "bf16"
        self.scheduled = cfg.lr_schedule != "constant" or cfg.warmup_steps > 0
        self.time_clock = cfg.lr_clock == "time"
        self.elapsed_before = float(self.resumed.get("seconds", 0.0))
        self.clock = self.elapsed_before  # training seconds before the next step
        self.skipped = int(self.resumed.get("skipped", 0))
        self.images_done = 0
        self.step = self.start_step
        self.checked = self.start_step  # weights known finite after this step
        self.last_logged = self.start_step
        self.perm_epoch, self.perm = -1, None
        self.last_saved: Path | None = self.latest

    def _loop(self) -> None:
        if "rng" in self.resumed:  # last: building the model and on_train_start may have drawn from the global RNGs
            ckpt.set_rng_states(self.resumed["rng"])
        self.model.train()
        self.t0 = time.perf_counter()
        with deferred_signals() as stop:
            while self.step < self.total_steps:
                self._train_step()
                last = self.step == self.total_steps
                # The time clock counts the whole run's training time, so a resumed run goes on down
                # the same decay and stops where the budget ends; otherwise --max-minutes is per call.
                seconds = self._elapsed() if self.time_clock else time.perf_counter() - self.t0
                out_of_time = self.cfg.max_minutes is not None and not last and seconds > 60 * self.cfg.max_minutes
                if self.d.world_size > 1:  # every process must stop at the same step, or the others hang
                    out_of_time, seconds = _agree_to_stop(stop, out_of_time, seconds, self.device)
                self.clock = seconds  # the next step's rate: one value, agreed by all processes
                self._log_progress(last, out_of_time)
                if self.step % self.checkpoint_every == 0 or last or stop or out_of_time:
                    self._save()
                if stop and not last:
                    raise Interrupted(f"interrupted by signal {stop['signal']} at step {self.step}; checkpoint saved. "
                                      f"Continue with: genlab train --resume {self.run_dir}")
                if out_of_time:
                    if self.d.main and self.time_clock:  # the planned end: the rate has decayed to its last value
                        if not self.quiet:
                            print(f"{self.run_dir}: the {self.cfg.max_minutes}-minute budget the rate decayed over "
                                  f"is spent at step {self.step}", file=sys.stderr)
                    elif self.d.main:
                        print(f"warning: stopped at step {self.step} of {self.total_steps}: --max-minutes "
                              f"{self.cfg.max_minutes} reached; continue with: genlab train --resume {self.run_dir}",
                              file=sys.stderr)
                    break

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        """This process's share of the step's global batch, from the epoch's seeded permutation."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self.perm_epoch:
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "data", epoch))
            self.perm, self.perm_epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        lo = i * self.global_batch + self.d.rank * self.local_batch
        idx = self.perm[lo : lo + self.local_batch]
        x = self.images.index_select(0, idx).div(255).contiguous(memory_format=self.layout)  # uint8 -> float in one pass
        return x, self.labels.index_select(0, idx)

    def _train_step(self) -> None:
        """One optimiser step, its logs summed, and the divergence checks."""
        x, y = self._batch(self.step)
        if self.scheduled:
            progress = self.clock / (60 * self.cfg.max_minutes) if self.time_clock else None
            self.lr_scale = lr_factor(self.cfg.lr_schedule, self.step, self.total_steps, self.cfg.warmup_steps,
                                      progress)
            self._set_lr(self.lr_scale)
        self.noise_gen.manual_seed(derive_seed(self.cfg.seed, "noise", self.step))
        ctx = StepContext(self.step, StepNoise(self.noise_gen, self.d.rank, self.d.world_size), self.settings)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logs = self.model.train_step(self.nets, self.optimizers, x, y, ctx)
        self.step += 1
        if self.skip_mode and "applied" in logs and not bool(logs["applied"]):
            self.skipped += 1  # optimize() already read the loss on the host: no extra stall
        else:
            if self.check_each_step and not self.skip_mode and not _all_finite(_main_loss(logs)):
                raise self._diverged(f"the loss is NaN or inf at step {self.step}")
            self.averager.add(logs)
        if self.check_each_step:
            if not _weights_finite(self.params):
                raise self._diverged(f"the weights became NaN or inf at step {self.step} (a non-finite gradient)")
            self.checked = self.step
        self.images_done += self.global_batch

    def _set_lr(self, factor: float) -> None:
        for opt, bases in zip(self.optimizers.values(), self.base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def _log_progress(self, last: bool, out_of_time: bool) -> None:
        step, d = self.step, self.d
        end_of_epoch = step % self.steps_per_epoch == 0
        picture_due = d.main and self.sample_every and (step % self.sample_every == 0 or last or out_of_time)
        # Not at a signal: the resumed run logs exactly the lines an uninterrupted one would.
        if step % self.cfg.log_every == 0 or end_of_epoch or last or out_of_time:
            record = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), **self.averager.pop()}
            if self.skip_mode:
                record["skipped_steps"] = self.skipped
            if self.scheduled:
                record["lr"] = self.cfg.lr * self.lr_scale  # the rate of the step just taken
            record["seconds"] = round(self._elapsed(), 3)
            if not _finite(record):
                raise self._diverged(f"the mean loss of steps {self.last_logged + 1}..{step} is NaN or inf")
            if picture_due:
                record.update(self.model.on_progress(step, self.run_dir))
            self.log.write(record)
            self.last_logged = step
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                  if k.startswith("loss") and isinstance(v, float)})
        elif d.main and self.sample_every and step % self.sample_every == 0:
            self.log.write({"step": step, "epoch": round(step / self.steps_per_epoch, 4),
                            **self.model.on_progress(step, self.run_dir)})

    def _elapsed(self) -> float:
        """Training seconds of this run, including those before a resume."""
        return self.elapsed_before + time.perf_counter() - self.t0

    def _save(self) -> None:
        if self.d.main:
            _check_weights(self.model, self.checked, self.step, self.last_saved)
            state = {**_train_state(self.optimizers, self.step, self.steps_per_epoch),
                     "metrics": self.averager.state(), "skipped": self.skipped, "seconds": self._elapsed()}
            self.last_saved = ckpt.save_checkpoint(self.run_dir, self.step, self.model, state,
                                                   keep=self.cfg.keep_checkpoints, meta=self.identity)

    def _diverged(self, what: str) -> DivergenceError:
        where = (f"the last good checkpoint is {self.last_saved}" if self.last_saved is not None
                 else "no checkpoint had been written yet")
        return DivergenceError(f"training diverged: {what}; nothing was saved after it and {where}. Start again "
                               f"(--overwrite) with a lower --lr, --grad-clip, or --on-nonfinite skip")

    def _finish(self) -> TrainResult:
        seconds = time.perf_counter() - self.t0
        ips = self.images_done / max(seconds, 1e-9)
        summary: dict[str, Any] = {}
        if self.d.main:
            _check_weights(self.model, self.checked, self.step, self.last_saved)
            summary = finish_run(self.run_dir, self.model, self.run, self.heldout, steps=self.step,
                                 seconds=self.elapsed_before + seconds, images_per_second=ips, skipped=self.skipped,
                                 precision=self.precision)
            for w in summary.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
        if self.d.world_size > 1:
            dist.barrier()
        return TrainResult(self.run_dir, self.step, self.step / self.steps_per_epoch, seconds, ips, summary)


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0,
              progress: float | None = None) -> float:
    """The multiple of ``train.lr`` used by optimiser step ``step`` (0-based) of ``total_steps``.

    A pure function of the step, so a resumed run follows the schedule exactly. ``cosine``
    (Loshchilov & Hutter 2017, without restarts) and ``linear`` fall from 1 towards 0 over the
    planned steps (``epochs`` x steps per epoch, or ``max_steps``): the small last steps average
    the gradient noise out instead of leaving the weights wherever the noise put them.
    Changing ``--epochs`` on resume stretches the remaining schedule.

    ``progress`` (the ``lr_clock=time`` case: training seconds over the time budget) replaces
    ``step / total_steps``, so the decay ends when the budget does, however fast the machine is;
    the warm-up still counts steps.
    """
    progress = min(step / max(total_steps, 1) if progress is None else progress, 1.0)
    factor = {"constant": 1.0, "linear": 1.0 - progress,
              "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[schedule]
    if warmup_steps:
        factor *= min(1.0, (step + 1) / warmup_steps)
    return factor


def _agree_to_stop(stop: dict[str, int], out_of_time: bool, seconds: float,
                   device: torch.device) -> tuple[bool, float]:
    """All-reduce (max) the stop flags so a signal or time-out seen by one process stops all,
    and the clock, so a time-based rate is the same in every process."""
    flags = torch.tensor([float(bool(stop)), float(out_of_time), seconds], dtype=torch.float64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if flags[0] > 0:
        stop.setdefault("signal", signal.SIGTERM)
    return bool(flags[1] > 0), float(flags[2])


def _main_loss(logs: dict[str, Tensor]) -> Tensor:
    return logs["loss"] if "loss" in logs else next(iter(logs.values()))


def _all_finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def keep_freed_memory() -> bool:
    """Stop glibc from handing freed tensor memory back to the OS after every step.

    By default glibc serves blocks above a (self-adjusting) threshold with fresh
    mmaps and trims its heap once a few MB lie free at its top, so the 1.6 MB
    activations of a batch-512 ``mlp`` VAE step are page-faulted in again at every
    step: 250-550 faults per step, ~7 % of a bare training loop's step on 2 cores.
    Raising both thresholds keeps that memory in the process for reuse, as jemalloc
    or tcmalloc would; the cost is that up to 512 MB of freed memory stays with the
    process. Process-wide; a no-op without glibc. Returns whether it took effect.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))


def _float_params(model: torch.nn.Module) -> list[Tensor]:
    return [p.detach() for p in model.parameters() if p.is_floating_point()]


def _weights_finite(params: list[Tensor]) -> bool:
    """One host read for all parameters (this runs every step on CPU), not one per tensor.

    A sum is NaN or inf whenever some weight is, and summing costs a tenth of
    ``isfinite().all()``'s boolean temporaries; only a non-finite sum (which finite but
    huge weights could also give) pays for the exact check.
    """
    if not params or bool(torch.isfinite(torch.stack([p.sum() for p in params]).sum())):
        return True
    return all(bool(torch.isfinite(p).all()) for p in params)


def _check_weights(model: torch.nn.Module, checked: int, step: int, last_saved: Path | None) -> None:
    """Never save non-finite weights: the error names the steps since they were last known finite."""
    if checked == step or _weights_finite(_float_params(model)):
        return
    where = f"the last good checkpoint is {last_saved}" if last_saved is not None else "no checkpoint was written"
    raise DivergenceError(f"training diverged: the weights became NaN or inf between steps {checked + 1} and "
                          f"{step}; nothing was saved after it and {where}. Start again (--overwrite) with a "
                          f"lower --lr, --grad-clip, or --on-nonfinite skip")


def _update_config(run: RunConfig, path: Path) -> None:
    text = json.dumps(run.to_dict(), indent=2) + "\n"
    try:
        same = path.read_text() == text
    except OSError:
        same = False
    if not same:
        ckpt.atomic_write_text(path, text)


def _latest_checkpoint(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    found = ckpt.checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (looked in {run_dir / ckpt.CHECKPOINT_DIR}); "
                              f"start again with --overwrite")
    return found[-1]


def _check_same_run(path: Path, identity: dict[str, Any]) -> int:
    """The checkpoint's step, after checking it belongs to this run's config and data."""
    from .config import config_differences

    meta = ckpt.read_checkpoint_meta(path)
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: records no config, so it cannot be checked against this run")
    try:  # a setting added to genlab after the checkpoint was written gets its default, as config.json does
        saved = RunConfig.from_dict(saved, where=str(path)).to_dict()
    except ConfigError:
        pass  # compared as written: the difference then names the key
    diff = config_differences(saved, identity["config"])
    if diff:
        raise CheckpointError(f"{path} was written with other settings than {ckpt.CONFIG_FILE} now holds: "
                              f"{'; '.join(diff)}; resuming would not continue the same run (start a new one)")
    for key, what in (("num_images", "images in the dataset"), ("steps_per_epoch", "steps per epoch")):
        if meta.get(key) != identity[key]:
            raise CheckpointError(f"{path}: written for {meta.get(key)} {what}, this run has {identity[key]}; "
                                  f"the data files changed since")
    return int(meta["step"])


def _finished_steps(run_dir: Path) -> int | None:
    """Steps recorded by the last complete finish_run (summary.json is written last), if any."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    steps = summary.get("steps") if isinstance(summary, dict) else None
    return steps if isinstance(steps, int) and (run_dir / ckpt.MODEL_FILE).is_file() else None


def _heldout(run: RunConfig, data: Dataset) -> Dataset:
    """The test split for pictures and checks; the training data itself when that is all there is."""
    if run.data.split == "test":
        return data
    try:
        return load_dataset(run.data.dataset, "test", data_dir=run.data.data_dir)
    except GenlabError:
        return data


def _first(t: Tensor, k: int) -> Tensor:
    return t[: min(k, t.shape[0])]


def _wrap_networks(model: GenerativeModel, d: Dist, device: torch.device, compile_: bool) -> dict[str, torch.nn.Module]:
    nets = model.networks()
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        nets = {k: DDP(v, device_ids=ids) for k, v in nets.items()}
    if compile_:
        nets = {k: torch.compile(v) for k, v in nets.items()}
    return nets


def _train_state(optimizers: dict[str, torch.optim.Optimizer], step: int, steps_per_epoch: int) -> dict[str, Any]:
    return {"epoch": step // steps_per_epoch,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "rng": ckpt.rng_states()}


def _restore(path: Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer],
             averager: Averager) -> dict[str, Any]:
    """Load weights, optimiser and metric state; return the state (its RNGs are set by the caller)."""
    state = ckpt.load_checkpoint(path, model)
    saved = state.get("optimizers")
    if not isinstance(saved, dict) or set(saved) != set(optimizers):
        raise CheckpointError(f"{path}: optimisers {sorted(saved or {})} do not match this model's "
                              f"{sorted(optimizers)}")
    try:
        for k, opt in optimizers.items():
            opt.load_state_dict(saved[k])
            _match_param_layout(opt)
        averager.load(state["metrics"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{path}: training state does not fit this model: {e}") from None
    if not isinstance(state.get("rng"), dict):
        raise CheckpointError(f"{path}: no random-number-generator states")
    return state


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded moment tensors their parameter's strides (e.g. channels_last).

    Safetensors stores dense row-major tensors. With moments in another layout
    than their channels_last parameters, the fused Adam step of a resumed DCGAN
    came out different from the uninterrupted run's (weights apart by up to 4e-3
    after 10 steps); with matching layouts the two are bit-identical.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


def finish_run(run_dir: Path, model: GenerativeModel, run: RunConfig, heldout: Dataset, *, steps: int,
               seconds: float, images_per_second: float, skipped: int = 0,
               precision: str = "fp32") -> dict[str, Any]:
    """Final weights, pictures and summary.json (main process)."""
    from .plots import plot_losses
    from .sample import generate, save_grid

    model.eval()
    ckpt.save_tensors(run_dir / ckpt.MODEL_FILE, model.state_dict(),
                      metadata={"family": run.family, "preset": run.preset})
    g = torch.Generator().manual_seed(derive_seed(run.train.seed, "samples"))
    save_grid(generate(model, 64, generator=g), run_dir / "samples.png", nrow=8)
    plot_losses(run_dir / METRICS_FILE, run_dir / "loss.png", title=f"{run.family} / {run.preset}")
    imgs = heldout.images.float().div(255)
    summary = {"steps": steps, "seconds": round(seconds, 2), "images_per_second": round(images_per_second, 1),
               "precision": precision, **model.end_of_training(run_dir, imgs, heldout.labels)}
    summary.setdefault("warnings", [])
    if skipped:
        summary["skipped_steps"] = skipped
        summary["warnings"].append(f"{skipped} of {steps} steps had a NaN/inf loss or gradient and were skipped")
    ckpt.atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
