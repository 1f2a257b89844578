"""One training loop for every model family.

The loop owns data order, noise, logging, checkpoints, signals and processes;
the family's ``train_step`` owns the maths. Data lives on the device as a uint8
tensor and is batched by index, so no Python work happens per image.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by
(seed, "data", e) and the noise of step ``s`` comes from a generator seeded by
(seed, "noise", s). Neither depends on how many processes share the batch or on
where a run was resumed, so a resumed run continues bit for bit.
"""

from __future__ import annotations

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

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the curve has no duplicates."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        ckpt.atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
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
    run.validate()
    cfg = run.train
    d = init_distributed("cuda" if cfg.device.startswith("cuda") or
                         (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    device = resolve_device(cfg.device, d)
    if d.world_size > 1 and run_dir is None:
        raise ConfigError("multi-process training needs --out (all processes must share one run directory)")
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(run)

    if data is None:
        data = load_dataset(run.data.dataset, run.data.split, data_dir=run.data.data_dir)
    run.data.sources = dict(data.sources)
    if heldout is None:
        heldout = _heldout(run, data)

    global_batch = cfg.batch_size
    if global_batch % d.world_size:
        raise ConfigError(f"batch size {global_batch} must divide evenly over {d.world_size} processes")
    local_batch = global_batch // d.world_size
    n = data.images.shape[0]
    steps_per_epoch = n // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {global_batch} is larger than the dataset ({n} images)")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    if d.main:
        if not resume:
            prepare_run_dir(run_dir, overwrite)
            run.save(run_dir / ckpt.CONFIG_FILE)
    if d.world_size > 1:
        dist.barrier()

    set_seed(cfg.seed)
    model = build_model(run.family, run.model).to(device)
    settings = TrainSettings(lr=cfg.lr, grad_clip=cfg.grad_clip, skip_nonfinite=cfg.on_nonfinite == "skip")
    optimizers = model.configure_optimizers(settings)

    start_step = 0
    if resume:
        start_step = _restore(run_dir, model, optimizers)
        if start_step >= total_steps and d.main and not quiet:
            print(f"{run_dir}: already trained for {start_step} steps; nothing to do", file=sys.stderr)

    nets = _wrap_networks(model, d, device, cfg.compile)
    images = data.images.to(device)
    labels = data.labels.to(device)
    model.on_train_start(_first(heldout.images, 1000).float().div(255).to(device),
                         _first(heldout.labels, 1000).to(device))

    log = MetricsLog(run_dir, enabled=d.main)
    if resume:
        log.truncate_after(start_step)
    sample_every = cfg.sample_every or model.default_sample_every
    noise_gen = torch.Generator(device=device)
    averager = Averager()
    bar = _progress_bar(total_steps, start_step, enabled=d.main and not quiet)
    checkpoint_every = cfg.checkpoint_every or steps_per_epoch
    check_each_step = device.type == "cpu"  # a host read per step is free on CPU, a stall on GPU
    t0 = t_log = time.perf_counter()
    images_done = 0
    step = start_step
    perm_epoch, perm = -1, None
    record: dict[str, Any] = {}

    def save(step_now: int) -> None:
        if d.main:
            ckpt.save_checkpoint(run_dir, step_now, model, _train_state(optimizers, step_now, steps_per_epoch),
                                 keep=cfg.keep_checkpoints)

    model.train()
    try:
        with deferred_signals() as stop:
            while step < total_steps:
                epoch, i = divmod(step, steps_per_epoch)
                if epoch != perm_epoch:
                    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "data", epoch))
                    perm, perm_epoch = torch.randperm(n, generator=g).to(device), epoch
                lo = i * global_batch + d.rank * local_batch
                idx = perm[lo : lo + local_batch]
                x = images.index_select(0, idx).float().div_(255)
                y = labels.index_select(0, idx)
                noise_gen.manual_seed(derive_seed(cfg.seed, "noise", step))
                ctx = StepContext(step, StepNoise(noise_gen, d.rank, d.world_size), settings)
                logs = model.train_step(nets, optimizers, x, y, ctx)
                if check_each_step and not settings.skip_nonfinite and not bool(torch.isfinite(logs["loss" if "loss" in logs else next(iter(logs))]).all()):
                    raise DivergenceError(f"non-finite loss at step {step + 1}")
                averager.add(logs)
                step += 1
                images_done += global_batch
                end_of_epoch = step % steps_per_epoch == 0
                last = step == total_steps
                out_of_time = cfg.max_minutes is not None and (time.perf_counter() - t0) > 60 * cfg.max_minutes
                if step % cfg.log_every == 0 or end_of_epoch or last or out_of_time or stop:
                    now = time.perf_counter()
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 4), **averager.pop(),
                              "seconds": round(now - t0, 3)}
                    if not _finite(record):
                        raise DivergenceError(f"non-finite loss between steps {step - cfg.log_every + 1} and {step}")
                    if d.main and sample_every and (step % sample_every == 0 or last):
                        record.update(model.on_progress(step, run_dir))
                    log.write(record)
                    bar.update(step - bar.n)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.startswith("loss") and isinstance(v, float)})
                    t_log = now
                elif d.main and sample_every and step % sample_every == 0:
                    log.write({"step": step, "epoch": round(step / steps_per_epoch, 4),
                               **model.on_progress(step, run_dir)})
                if step % checkpoint_every == 0 or last:
                    save(step)
                if stop:
                    save(step)
                    raise Interrupted(f"interrupted by signal {stop['signal']} at step {step}; checkpoint saved. "
                                      f"Continue with: genlab train --resume {run_dir}")
                if out_of_time:
                    if not step % checkpoint_every == 0:
                        save(step)
                    break
    finally:
        bar.close()
        log.close()
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {}
    if d.main:
        summary = finish_run(run_dir, model, run, heldout, steps=step, seconds=seconds,
                             images_per_second=images_done / max(seconds, 1e-9))
        for w in summary.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
    if d.world_size > 1:
        dist.barrier()
    return TrainResult(run_dir, step, step / steps_per_epoch, seconds, images_done / max(seconds, 1e-9), summary)


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


def _restore(run_dir: Path, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer]) -> int:
    found = ckpt.checkpoint_dirs(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (looked in {run_dir / ckpt.CHECKPOINT_DIR})")
    state = ckpt.load_checkpoint(found[-1], model)
    saved = state["optimizers"]
    if set(saved) != set(optimizers):
        raise CheckpointError(f"{found[-1]}: optimisers {sorted(saved)} do not match this model's {sorted(optimizers)}")
    for k, opt in optimizers.items():
        try:
            opt.load_state_dict(saved[k])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{found[-1]}: optimiser state does not fit: {e}") from None
    ckpt.set_rng_states(state["rng"])
    return int(state["step"])


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


def finish_run(run_dir: Path, model: GenerativeModel, run: RunConfig, heldout: Dataset, *, steps: int,
               seconds: float, images_per_second: float) -> dict[str, Any]:
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
               **model.end_of_training(run_dir, imgs, heldout.labels)}
    summary.setdefault("warnings", [])
    ckpt.atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
