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

Resuming reads the checkpoints newest first and takes the first intact one: a checkpoint
with a missing or damaged file, weights that do not fit the model or a step its run never
planned is skipped with a one-line warning (and, once the resumed run has started, moved
aside to ``checkpoints/.damaged-step-...``). One written with other settings is refused
outright: every checkpoint of the run would be.

A test and debug hook: with ``GENLAB_RANK_LOG=DIR`` in the environment every process appends
``{"step", "rank", "lr"}`` (the rate its first optimiser's first group stepped with) to
``DIR/rank-N.jsonl`` after each step, so tests can see each torchrun process's rate. Unset,
it costs one ``if`` per step.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import Tensor

from .. import checkpoint as ckpt
from ..config import RunConfig, TrainConfig
from ..data import Dataset, load_dataset
from ..device import Dist, init_distributed, resolve_device, resolve_precision
from ..errors import CheckpointError, ConfigError, DivergenceError, GenlabError
from ..io import append_jsonl, atomic_write_text, read_jsonl
from ..models import GenerativeModel, StepNoise, TrainSettings, build_model, dry_build, get_family
from ..models.base import DiagnosedModel, StepContext, StepOutput
from ..runs import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    RunLock,
    claim_run_dir,
    default_run_dir,
    finished_steps,
    mark_latest,
)
from ..seeding import derive_seed, set_seed
from .callbacks import Callback, default_callbacks, progress_every
from .logs import Averager, MetricsLog
from .schedule import lr_factor

if TYPE_CHECKING:
    from ..progress import Progress as ProgressReport


class Interrupted(GenlabError):
    """SIGINT/SIGTERM arrived; a checkpoint was written. Exit code 130."""

    exit_code = 130


@dataclass
class TrainResult:
    """What one call trained. ``steps``/``epochs`` are the run's totals; ``seconds`` and
    ``images_per_second`` are this call's, which resumed at ``start_step`` (0 for a new run)
    after ``seconds_before`` seconds of earlier training."""

    run_dir: Path
    steps: int
    epochs: float
    seconds: float
    images_per_second: float
    summary: dict[str, Any] = field(default_factory=dict)
    start_step: int = 0
    seconds_before: float = 0.0

    @property
    def steps_this_call(self) -> int:
        return self.steps - self.start_step

    @property
    def total_seconds(self) -> float:
        """Training seconds of the whole run, this call's included."""
        return self.seconds_before + self.seconds

    def summary_line(self) -> str:
        """What ``genlab train`` prints at the end: this call's steps, time and rate; after a resume
        the run's totals too (a resume that ran 800 steps must not claim the run's 3125)."""
        epochs_per_step = self.epochs / self.steps if self.steps else 0.0
        line = (
            f"trained {self.steps_this_call} steps ({self.steps_this_call * epochs_per_step:.2f} epochs) "
            f"in {self.seconds:.1f}s, {self.images_per_second:,.0f} images/s"
        )
        if self.start_step:
            line += (
                f" (resumed at step {self.start_step}); the run now has {self.steps} steps "
                f"({self.epochs:.2f} epochs), {self.total_seconds:.1f}s of training"
            )
        return f"{line} -> {self.run_dir}"


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


def _finite(record: dict[str, Any]) -> bool:
    vals = [v for k, v in record.items() if k.startswith("loss") and isinstance(v, float)]
    return all(math.isfinite(v) for v in vals)


# -- the run's state: its plan, the built parts, its progress -------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    """What is fixed for the whole run, decided from the config and the data before any model exists."""

    global_batch: int  # images per optimiser step, over all processes
    local_batch: int  # this process's share of them
    num_images: int  # in the training data
    steps_per_epoch: int
    total_steps: int  # where this run ends: --epochs, capped by --max-steps
    checkpoint_every: int
    sample_every: int  # steps between progress grids; 0 = none
    max_seconds: float | None  # --max-minutes in seconds (None: no time limit)
    time_clock: bool  # lr_clock=time: the schedule decays over max_seconds of training, not the steps
    scheduled: bool  # the rate changes during the run (a schedule or a warm-up)
    precision: str  # "fp32" or "bf16" ("auto" resolved for the device)
    bf16: bool
    skip_mode: bool  # --on-nonfinite skip: a non-finite step is dropped instead of stopping the run
    check_each_step: bool  # check loss and weights after every step, not only at log steps and saves


def plan_run(
    cfg: TrainConfig, num_images: int, world_size: int, device: torch.device, default_sample_every: int
) -> Plan:
    """The run's :class:`Plan`; a batch that does not fit the processes or the data is a ConfigError."""
    global_batch = cfg.batch_size
    if global_batch % world_size:
        raise ConfigError(f"batch size {global_batch} must divide evenly over {world_size} processes")
    steps_per_epoch = num_images // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(f"batch size {global_batch} is larger than the dataset ({num_images} images)")
    total_steps = planned_steps(cfg.epochs, cfg.max_steps, steps_per_epoch)
    precision = resolve_precision(cfg.precision, device)
    return Plan(
        global_batch=global_batch,
        local_batch=global_batch // world_size,
        num_images=num_images,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        checkpoint_every=cfg.checkpoint_every or steps_per_epoch,
        sample_every=cfg.sample_every or progress_every(default_sample_every, total_steps),
        max_seconds=None if cfg.max_minutes is None else 60 * cfg.max_minutes,
        time_clock=cfg.lr_clock == "time",
        scheduled=cfg.lr_schedule != "constant" or cfg.warmup_steps > 0,
        precision=precision,
        bf16=precision == "bf16",
        skip_mode=cfg.on_nonfinite == "skip",
        check_each_step=device.type == "cpu",  # a host read per step is free on CPU, a stall on GPU
    )


def planned_steps(epochs: int, max_steps: int | None, steps_per_epoch: int) -> int:
    """Where a run ends: ``epochs`` epochs, capped by ``max_steps``."""
    total = epochs * steps_per_epoch
    return total if max_steps is None else min(total, max_steps)


@dataclass(frozen=True, slots=True)
class Parts:
    """The model and what :meth:`Trainer._build` builds around it when :meth:`Trainer.fit` starts
    (after the run directory is prepared: a resume loads the checkpoint, the metrics log opens files)."""

    model: GenerativeModel
    layout: torch.memory_format  # the model's memory format, given to every batch too
    settings: TrainSettings  # what the family's steps need from the config
    optimizers: dict[str, torch.optim.Optimizer]
    base_lrs: list[list[float]]  # each group's own rate (GANs: D's is lr * d_lr_mult), before a resume
    averager: Averager  # running sums of the step figures not yet logged
    resumed: dict[str, Any]  # the checkpoint's training state; {} for a new run
    nets: dict[str, torch.nn.Module]  # the networks as stepped: DDP- and compile-wrapped
    images: Tensor  # the training images on the device, uint8
    labels: Tensor
    real_images: Tensor  # up to 1,000 held-out images in [0, 1] on the device, for the callbacks
    log: MetricsLog
    callbacks: list[Callback]
    noise_gen: torch.Generator  # reseeded for every step
    params: list[Tensor]  # the floating-point weights, for the finiteness checks


@dataclass(slots=True)
class Progress:
    """What evolves as the loop runs; a checkpoint keeps what a resume needs of it (step, skipped, seconds)."""

    step: int  # optimiser steps done
    checked: int  # weights known finite after this step
    last_logged: int  # the step of the last metrics line
    last_saved: Path | None  # the newest checkpoint: this call's, or the one resumed from
    skipped: int = 0  # steps dropped by --on-nonfinite skip, over the whole run
    elapsed_before: float = 0.0  # training seconds before this call (from the checkpoint resumed)
    clock: float = 0.0  # training seconds before the next step
    t0: float = 0.0  # time.perf_counter() when this call's loop began
    images_done: int = 0  # images stepped over by this call
    lr_scale: float = 1.0  # the schedule's factor for the step just taken (stays 1 when unscheduled)
    perm_epoch: int = -1  # the epoch whose data order ``perm`` holds
    perm: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def resume_from(self, state: dict[str, Any]) -> None:
        """Continue the counters a checkpoint's training state carries ({} for a new run)."""
        self.elapsed_before = float(state.get("seconds", 0.0))
        self.clock = self.elapsed_before
        self.skipped = int(state.get("skipped", 0))


# -- the loop -------------------------------------------------------------------------------------
def train(
    run: RunConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
    heldout: Dataset | None = None,
) -> TrainResult:
    """Train ``run`` into ``run_dir``; with ``resume`` continue from its newest checkpoint."""
    return Trainer(run, run_dir, resume=resume, overwrite=overwrite, quiet=quiet, data=data, heldout=heldout).fit()


class Trainer:
    """One run: checks, data and plan (``__init__``), then model, loop, checkpoints and logs (:meth:`fit`).

    Its state is what is fixed for the run (the config, processes, device, data and the
    :class:`Plan`), the :class:`Parts` that :meth:`fit` builds once, and the :class:`Progress`
    the loop moves forward. Callbacks read ``model``, ``run_dir``, ``real_images``, ``step``,
    ``device`` and :meth:`heldout_images`.
    """

    def __init__(
        self,
        run: RunConfig,
        run_dir: Path | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        quiet: bool = False,
        data: Dataset | None = None,
        heldout: Dataset | None = None,
    ):
        run.validate()
        self.run, self.cfg = run, run.train
        self.resume, self.overwrite, self.quiet = resume, overwrite, quiet
        cfg = self.cfg
        self.d = init_distributed(
            "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        )
        self.device = resolve_device(cfg.device, self.d)
        if self.d.world_size > 1 and run_dir is None:
            raise ConfigError("multi-process training needs --out (all processes must share one run directory)")
        if resume and run_dir is None:
            raise ConfigError("resuming needs the run directory")
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(run)
        # fail before the slow data loading when there is nothing to resume
        candidates = ckpt.resume_candidates(self.run_dir) if resume else []
        if resume:  # the log a resume truncates: a FIFO or device there is refused before anything is written
            read_jsonl(self.run_dir / METRICS_FILE)
        # The whole model, built on the meta device: bad widths or impossible sizes fail here, before
        # the data is read or anything is written.
        shapes = dry_build(run.family, run.model)
        image_shape = shapes.image_shape

        if data is None:
            data = load_dataset(run.data.dataset, run.data.split, data_dir=run.data.data_dir, **run.data.load_options())
        run.data.sources = dict(data.sources)
        self.data = data
        self.heldout = heldout if heldout is not None else _heldout(run, data)
        if tuple(data.images.shape[1:]) != image_shape:
            raise ConfigError(
                f"the model is built for images {image_shape} (C, H, W; model.image_shape) but the "
                f"{run.data.dataset} images are {tuple(data.images.shape[1:])}: set model.image_shape "
                f"to {list(data.images.shape[1:])}"
            )

        self.plan = plan_run(
            cfg, data.images.shape[0], self.d.world_size, self.device, get_family(run.family).default_sample_every
        )
        # What a checkpoint must match to be continued by this run.
        self.identity = {
            "config": run.to_dict(),
            "num_images": self.plan.num_images,
            "steps_per_epoch": self.plan.steps_per_epoch,
        }
        # The newest intact checkpoint, read whole and checked against the model's shapes; the damaged
        # ones newer than it are set aside once the resumed run has started.
        self.damaged: list[Path] = []
        self.checkpoint = self._choose_checkpoint(candidates, shapes) if resume else None
        self.latest = self.checkpoint.path if self.checkpoint is not None else None
        self.start_step = self.checkpoint.step if self.checkpoint is not None else 0
        rank_log = os.environ.get("GENLAB_RANK_LOG")  # the test and debug hook (module docstring)
        self.rank_log = Path(rank_log) / f"rank-{self.d.rank}.jsonl" if rank_log else None
        self.progress = Progress(
            step=self.start_step, checked=self.start_step, last_logged=self.start_step, last_saved=self.latest
        )
        self._parts: Parts | None = None  # built by fit(), once

    def _choose_checkpoint(self, candidates: list[Path], shapes: torch.nn.Module) -> ckpt.Checkpoint:
        """The newest checkpoint that is intact (all its files, its step, its weights' shapes) and belongs
        to this run; a warning names each damaged one skipped. A checkpoint of other settings is refused."""
        damaged: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                meta = ckpt.read_checkpoint_meta(path)
                _check_recorded(path, meta)
            except CheckpointError as e:
                damaged.append((path, str(e)))
                continue
            _check_same_run(path, meta, self.identity)  # not damage: no other checkpoint of this run would do
            try:
                _check_planned(path, meta)
                found = ckpt.read_checkpoint(path, shapes, meta)
                _check_training_state(path, found.state)
            except CheckpointError as e:
                damaged.append((path, str(e)))
                continue
            if self.d.main:
                for bad, why in damaged:
                    print(
                        f"warning: skipping damaged checkpoint {bad.name} ({why}); resuming from {path.name} instead",
                        file=sys.stderr,
                    )
            self.damaged = [bad for bad, _ in damaged]
            return found
        raise CheckpointError(
            f"{self.run_dir}: no intact checkpoint to resume from: {'; '.join(why for _, why in damaged)}; "
            f"start again with --overwrite"
        )

    # -- what callbacks read ------------------------------------------------------------------------
    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise AttributeError("the model and its optimisers are built by Trainer.fit()")
        return self._parts

    @property
    def model(self) -> GenerativeModel:
        return self.parts.model

    @property
    def real_images(self) -> Tensor:
        return self.parts.real_images

    @property
    def metrics_log(self) -> MetricsLog | None:
        """metrics.jsonl and TensorBoard (None on processes other than the main one)."""
        return self.parts.log if self.d.main else None

    @property
    def step(self) -> int:
        """Optimiser steps done."""
        return self.progress.step

    def heldout_images(self, n: int) -> tuple[Tensor, Tensor]:
        """Up to ``n`` held-out images as floats in [0, 1] and their labels, on the CPU."""
        return _first(self.heldout.images, n).float().div(255), _first(self.heldout.labels, n)

    # -- fit: set-up, loop, finish --------------------------------------------------------------
    def fit(self) -> TrainResult:
        if self._parts is not None:
            raise RuntimeError("Trainer.fit() runs once; make a new Trainer to train again")
        if self.start_step >= self.plan.total_steps and finished_steps(self.run_dir) == self.start_step:
            # finish_run completed after that checkpoint: touch nothing
            return self._nothing_to_do(f"already trained for {self.start_step} steps", "--epochs or --max-steps")
        # Claim the run directory (an exclusive lock held until this process ends; --overwrite sets the
        # old run aside until the new one has started), so a second writer is refused, not mixed in.
        lock = claim_run_dir(self.run_dir, self.overwrite, resume=self.resume) if self.d.main else None
        try:
            return self._fit_claimed(lock)
        finally:
            if lock is not None:
                lock.release()

    def _fit_claimed(self, lock: RunLock | None) -> TrainResult:
        plan, progress = self.plan, self.progress
        try:
            if self.d.main and not self.resume:
                self.run.save(self.run_dir / CONFIG_FILE)
            if self.d.world_size > 1:
                dist.barrier()
            self._parts = parts = self._build()
        except BaseException:
            if lock is not None:
                lock.roll_back()  # the new run never started: the one it was to replace comes back
            raise
        if lock is not None:
            lock.commit()
            mark_latest(self.run_dir)  # runs/latest: what `genlab train --resume latest` continues
            for bad in self.damaged:  # out of the way of the next resume and of pruning (main process only)
                ckpt.set_aside(bad)
        self.checkpoint = None  # loaded: its tensors need not stay in memory
        for callback in parts.callbacks:
            callback.on_train_start(self)
        if self.device.type == "cpu":
            keep_freed_memory()
        progress.resume_from(parts.resumed)
        budget_spent = plan.time_clock and plan.max_seconds is not None and progress.clock >= plan.max_seconds
        if budget_spent and self.start_step == finished_steps(self.run_dir):
            parts.log.close()  # the decay already spent the whole budget: one more step would be at rate 0
            return self._nothing_to_do(
                f"already trained for its {self.cfg.max_minutes} minutes (lr_clock=time)", "a larger --max-minutes"
            )
        bar = _progress_bar(plan, self.start_step, enabled=self.d.main and not self.quiet)
        try:
            self._loop(bar)
        finally:
            bar.close()
            parts.log.close()
        return self._finish()

    def _nothing_to_do(self, why: str, longer: str) -> TrainResult:
        if self.d.main and not self.quiet:
            print(f"{self.run_dir}: {why}; nothing to do (pass {longer} to train longer)", file=sys.stderr)
        return TrainResult(self.run_dir, self.start_step, self.start_step / self.plan.steps_per_epoch, 0.0, 0.0, {})

    def _build(self) -> Parts:
        """Model, optimisers, resumed state, device data, metrics log and callbacks."""
        cfg, d, device = self.cfg, self.d, self.device
        set_seed(cfg.seed)
        model = build_model(self.run.family, self.run.model).to(device)
        layout = model.memory_format
        model = model.to(memory_format=layout)  # type: ignore[call-overload]  # torch's stubs lack this overload
        settings = TrainSettings(lr=cfg.lr, grad_clip=cfg.grad_clip, skip_nonfinite=self.plan.skip_mode)
        optimizers = model.configure_optimizers(settings)
        # Each group's own rate (GANs: D's is lr * d_lr_mult), before a resume loads the last scheduled one.
        base_lrs = [[g["lr"] for g in opt.param_groups] for opt in optimizers.values()]
        averager = Averager()
        resumed: dict[str, Any] = {}
        if self.checkpoint is not None:
            resumed = _restore(self.checkpoint, model, optimizers, averager)
            if d.main:
                _update_config(self.run, self.run_dir / CONFIG_FILE)  # e.g. --epochs extended the run

        nets = _wrap_networks(model, d, device, cfg.compile)
        images = self.data.images.to(device)
        labels = self.data.labels.to(device)
        real_images = _first(self.heldout.images, 1000).float().div(255).to(device)
        log = MetricsLog(
            self.run_dir,
            enabled=d.main,
            resume_step=self.start_step if self.resume else None,
            hparams=self.run.to_dict(),
        )
        callbacks = default_callbacks(model, self.plan.sample_every)
        return Parts(
            model=model,
            layout=layout,
            settings=settings,
            optimizers=optimizers,
            base_lrs=base_lrs,
            averager=averager,
            resumed=resumed,
            nets=nets,
            images=images,
            labels=labels,
            real_images=real_images,
            log=log,
            callbacks=callbacks,
            noise_gen=torch.Generator(device=device),
            params=_float_params(model),
        )

    def _loop(self, bar: ProgressReport) -> None:
        parts, plan, progress = self.parts, self.plan, self.progress
        if "rng" in parts.resumed:  # last: building the model and on_train_start may have drawn from the global RNGs
            ckpt.set_rng_states(parts.resumed["rng"])
        parts.model.train()
        progress.t0 = time.perf_counter()
        with deferred_signals() as stop:
            while progress.step < plan.total_steps:
                self._train_step()
                last = progress.step == plan.total_steps
                # The time clock counts the whole run's training time, so a resumed run goes on down
                # the same decay and stops where the budget ends; otherwise --max-minutes is per call.
                seconds = self._elapsed() if plan.time_clock else time.perf_counter() - progress.t0
                out_of_time = plan.max_seconds is not None and not last and seconds > plan.max_seconds
                halt = bool(stop)  # read once: the signal handler may fill `stop` at any moment
                if self.d.world_size > 1:  # every process must stop at the same step, or the others hang
                    halt, out_of_time, seconds = _agree_to_stop(stop, halt, out_of_time, seconds, self.device)
                progress.clock = seconds  # the next step's rate: one value, agreed by all processes
                self._log_progress(bar, last, out_of_time)
                if progress.step % plan.checkpoint_every == 0 or last or halt or out_of_time:
                    self._save()
                if halt and not last:
                    if self.d.world_size > 1:
                        # torchrun stops every worker as soon as one exits with an error: the others wait
                        # here until rank 0 has written the checkpoint the message below promises.
                        dist.barrier()
                    raise Interrupted(
                        f"interrupted by signal {stop['signal']} at step {progress.step}; checkpoint "
                        f"saved. Continue with: genlab train --resume {self.run_dir}"
                    )
                if out_of_time:
                    if self.d.main and plan.time_clock:  # the planned end: the rate has decayed to its last value
                        if not self.quiet:
                            print(
                                f"{self.run_dir}: the {self.cfg.max_minutes}-minute budget the rate decayed over "
                                f"is spent at step {progress.step}",
                                file=sys.stderr,
                            )
                    elif self.d.main:
                        print(
                            f"warning: stopped at step {progress.step} of {plan.total_steps}: --max-minutes "
                            f"{self.cfg.max_minutes} reached; continue with: genlab train --resume {self.run_dir}",
                            file=sys.stderr,
                        )
                    break

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        """This process's share of the step's global batch, from the epoch's seeded permutation."""
        plan, progress = self.plan, self.progress
        parts = self.parts
        epoch, i = divmod(step, plan.steps_per_epoch)
        if epoch != progress.perm_epoch:
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "data", epoch))
            progress.perm = torch.randperm(plan.num_images, generator=g).to(self.device)
            progress.perm_epoch = epoch
        lo = i * plan.global_batch + self.d.rank * plan.local_batch
        idx = progress.perm[lo : lo + plan.local_batch]
        # uint8 -> float in one pass
        x = parts.images.index_select(0, idx).div(255).contiguous(memory_format=parts.layout)
        return x, parts.labels.index_select(0, idx)

    def _train_step(self) -> None:
        """One optimiser step, its logs summed, and the divergence checks."""
        parts, plan, progress = self.parts, self.plan, self.progress
        cfg = self.cfg
        x, y = self._batch(progress.step)
        if plan.scheduled:
            spent = progress.clock / plan.max_seconds if plan.time_clock and plan.max_seconds is not None else None
            progress.lr_scale = lr_factor(cfg.lr_schedule, progress.step, plan.total_steps, cfg.warmup_steps, spent)
            self._set_lr(progress.lr_scale)
        parts.noise_gen.manual_seed(derive_seed(cfg.seed, "noise", progress.step))
        ctx = StepContext(progress.step, StepNoise(parts.noise_gen, self.d.rank, self.d.world_size), parts.settings)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=plan.bf16):
            out: StepOutput = parts.model.train_step(parts.nets, parts.optimizers, x, y, ctx)
        progress.step += 1
        if self.rank_log is not None:  # the test and debug hook: this process's rate, step by step
            rate = next(iter(parts.optimizers.values())).param_groups[0]["lr"]
            append_jsonl(self.rank_log, {"step": progress.step, "rank": self.d.rank, "lr": rate})
        for callback in parts.callbacks:
            callback.on_step_end(self)
        if plan.skip_mode and not bool(out.applied):
            progress.skipped += 1  # optimize() already read the loss on the host: no extra stall
        else:
            if plan.check_each_step and not plan.skip_mode and not _all_finite(out.loss):
                raise self._diverged(f"the loss is NaN or inf at step {progress.step}")
            parts.averager.add(out.logs)
        if plan.check_each_step:
            if not _weights_finite(parts.params):
                raise self._diverged(f"the weights became NaN or inf at step {progress.step} (a non-finite gradient)")
            progress.checked = progress.step
        progress.images_done += plan.global_batch

    def _set_lr(self, factor: float) -> None:
        parts = self.parts
        for opt, bases in zip(parts.optimizers.values(), parts.base_lrs, strict=False):
            for group, base in zip(opt.param_groups, bases, strict=False):
                group["lr"] = base * factor

    def _log_progress(self, bar: ProgressReport, last: bool, out_of_time: bool) -> None:
        parts, plan, progress = self.parts, self.plan, self.progress
        step, d = progress.step, self.d
        end_of_epoch = step % plan.steps_per_epoch == 0
        picture_due = d.main and plan.sample_every and (step % plan.sample_every == 0 or last or out_of_time)
        # Not at a signal: the resumed run logs exactly the lines an uninterrupted one would.
        if step % self.cfg.log_every == 0 or end_of_epoch or last or out_of_time:
            record = {"step": step, "epoch": round(step / plan.steps_per_epoch, 4), **parts.averager.pop()}
            if plan.skip_mode:
                record["skipped_steps"] = progress.skipped
            record["lr"] = self.cfg.lr * progress.lr_scale  # the rate of the step just taken (scale 1 unscheduled)
            record["seconds"] = round(self._elapsed(), 3)
            if not _finite(record):
                raise self._diverged(f"the mean loss of steps {progress.last_logged + 1}..{step} is NaN or inf")
            if picture_due:
                record.update(self._progress(step))
            parts.log.write(record)
            progress.last_logged = step
            bar.set_figures(**{k: v for k, v in record.items() if k.startswith("loss") and isinstance(v, float)})
        elif d.main and plan.sample_every and step % plan.sample_every == 0:
            parts.log.write({"step": step, "epoch": round(step / plan.steps_per_epoch, 4), **self._progress(step)})
        bar.update(step)
        if end_of_epoch:
            bar.milestone()

    def _progress(self, step: int) -> dict[str, float]:
        figures: dict[str, float] = {}
        for callback in self.parts.callbacks:
            figures.update(callback.on_progress(self, step))
        return figures

    def _elapsed(self) -> float:
        """Training seconds of this run, including those before a resume."""
        return self.progress.elapsed_before + time.perf_counter() - self.progress.t0

    def _save(self) -> None:
        if self.d.main:
            parts, progress = self.parts, self.progress
            _check_weights(parts.model, progress.checked, progress.step, progress.last_saved)
            state = {
                **_train_state(parts.optimizers, progress.step, self.plan.steps_per_epoch),
                "metrics": parts.averager.state(),
                "skipped": progress.skipped,
                "seconds": self._elapsed(),
            }
            progress.last_saved = ckpt.save_checkpoint(
                self.run_dir, progress.step, parts.model, state, keep=self.cfg.keep_checkpoints, meta=self.identity
            )

    def _diverged(self, what: str) -> DivergenceError:
        last_saved = self.progress.last_saved
        where = (
            f"the last good checkpoint is {last_saved}"
            if last_saved is not None
            else "no checkpoint had been written yet"
        )
        return DivergenceError(
            f"training diverged: {what}; nothing was saved after it and {where}. Start again "
            f"(--overwrite) with a lower --lr, --grad-clip, or --on-nonfinite skip"
        )

    def _finish(self) -> TrainResult:
        progress = self.progress
        seconds = time.perf_counter() - progress.t0
        ips = progress.images_done / max(seconds, 1e-9)
        summary: dict[str, Any] = {}
        if self.d.main:
            _check_weights(self.parts.model, progress.checked, progress.step, progress.last_saved)
            summary = self._write_outputs(progress.elapsed_before + seconds, ips, seconds)
            for w in summary.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
        if self.d.world_size > 1:
            dist.barrier()
        return TrainResult(
            self.run_dir,
            progress.step,
            progress.step / self.plan.steps_per_epoch,
            seconds,
            ips,
            summary,
            start_step=self.start_step,
            seconds_before=progress.elapsed_before,
        )

    def _write_outputs(self, seconds: float, images_per_second: float, call_seconds: float) -> dict[str, Any]:
        """Final weights, samples.png, loss.png, the callbacks' pictures and summary.json (main process).

        summary.json is written last: its presence marks a finished run. ``steps`` and ``seconds``
        are the run's totals; ``images_per_second`` and ``this_call`` are this call's (after a
        resume, the steps it ran, from ``start_step``).
        """
        from ..plots import plot_losses
        from ..sample import generate, save_grid

        model, run, run_dir = self.parts.model, self.run, self.run_dir
        step, skipped = self.progress.step, self.progress.skipped
        model.eval()
        ckpt.save_tensors(
            run_dir / MODEL_FILE, model.state_dict(), metadata={"family": run.family, "preset": run.preset}
        )
        g = torch.Generator().manual_seed(derive_seed(run.train.seed, "samples"))
        save_grid(generate(model, 64, generator=g), run_dir / "samples.png", nrow=8)
        plot_losses(run_dir / METRICS_FILE, run_dir / "loss.png", f"{run.family} / {run.preset}", model.describe_logs())
        summary: dict[str, Any] = {
            "steps": step,
            "seconds": round(seconds, 2),
            "images_per_second": round(images_per_second, 1),
            "precision": self.plan.precision,
            "this_call": {
                "start_step": self.start_step,
                "steps": step - self.start_step,
                "seconds": round(call_seconds, 2),
                "images_per_second": round(images_per_second, 1),
            },
        }
        if isinstance(model, DiagnosedModel):
            summary.update(model.diagnose(*self.heldout_images(5000)))
        summary.setdefault("warnings", [])
        for callback in self.parts.callbacks:
            callback.on_train_end(self, summary)
        if skipped:
            summary["skipped_steps"] = skipped
            summary["warnings"].append(f"{skipped} of {step} steps had a NaN/inf loss or gradient and were skipped")
        atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        return summary


def _agree_to_stop(
    stop: dict[str, int], halt: bool, out_of_time: bool, seconds: float, device: torch.device
) -> tuple[bool, bool, float]:
    """All-reduce (max) the stop flags so a signal or time-out seen by one process stops all,
    and the clock, so a time-based rate is the same in every process: (halt, out_of_time, seconds).

    Every process decides from the agreed flags alone. A signal that arrives during the all-reduce
    is already in ``stop`` but not in this step's flags; acting on it here would stop this process
    one step before the others, which would then wait for it forever. It counts at the next step.
    """
    flags = torch.tensor([float(halt), float(out_of_time), seconds], dtype=torch.float64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    halt = bool(flags[0] > 0)
    if halt:
        stop.setdefault("signal", signal.SIGTERM)
    return halt, bool(flags[1] > 0), float(flags[2])


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
    raise DivergenceError(
        f"training diverged: the weights became NaN or inf between steps {checked + 1} and "
        f"{step}; nothing was saved after it and {where}. Start again (--overwrite) with a "
        f"lower --lr, --grad-clip, or --on-nonfinite skip"
    )


def _update_config(run: RunConfig, path: Path) -> None:
    text = json.dumps(run.to_dict(), indent=2) + "\n"
    try:
        same = path.read_text() == text
    except OSError:
        same = False
    if not same:
        atomic_write_text(path, text)


def _check_recorded(path: Path, meta: dict[str, Any]) -> None:
    """state.json holds what the trainer writes beside the step: a config and the data's size."""
    where = path / "state.json"
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{where}: records no config, so it cannot be checked against this run")
    for key in ("num_images", "steps_per_epoch"):
        if type(meta.get(key)) is not int or meta[key] < 1:
            raise CheckpointError(f"{where}: records no {key.replace('_', ' ')}; the file is damaged")


def _check_same_run(path: Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
    """The checkpoint belongs to this run's config and data (a CheckpointError naming the differences)."""
    from ..config import config_differences

    saved = meta["config"]
    try:  # a setting added to genlab after the checkpoint was written gets its default, as config.json does
        saved = RunConfig.from_dict(saved, where=str(path)).to_dict()
    except ConfigError:
        pass  # compared as written: the difference then names the key
    diff = config_differences(saved, identity["config"])
    if diff:
        raise CheckpointError(
            f"{path} was written with other settings than {CONFIG_FILE} now holds: "
            f"{'; '.join(diff)}; resuming would not continue the same run (start a new one)"
        )
    for key, what in (("num_images", "images in the dataset"), ("steps_per_epoch", "steps per epoch")):
        if meta.get(key) != identity[key]:
            raise CheckpointError(
                f"{path}: written for {meta.get(key)} {what}, this run has {identity[key]}; "
                f"the data files changed since"
            )


def _check_planned(path: Path, meta: dict[str, Any]) -> None:
    """The checkpoint's step lies within the steps its own run planned (its config's epochs and max_steps)."""
    train = meta["config"].get("train")
    epochs = train.get("epochs") if isinstance(train, dict) else None
    max_steps = train.get("max_steps", None) if isinstance(train, dict) else None
    where = path / "state.json"
    if type(epochs) is not int or epochs < 1 or not (max_steps is None or (type(max_steps) is int and max_steps >= 1)):
        raise CheckpointError(f"{where}: records no valid epochs or max_steps; the file is damaged")
    total = planned_steps(epochs, max_steps, meta["steps_per_epoch"])
    if not 0 <= meta["step"] <= total:
        raise CheckpointError(
            f"{where}: records step {meta['step']}, beyond the {total} steps its run planned; the file is damaged"
        )


def _check_training_state(path: Path, state: dict[str, Any]) -> None:
    """The training state has the parts a resume restores (what fits the model is checked as it loads)."""
    where = path / "state.json"
    optimizers, rng, metrics = state.get("optimizers"), state.get("rng"), state.get("metrics")
    if not (isinstance(optimizers, dict) and all(isinstance(o, dict) for o in optimizers.values())):
        raise CheckpointError(f"{where}: no optimiser states; the file is damaged")
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), Tensor) and {"numpy", "python"} <= set(rng)):
        raise CheckpointError(f"{where}: no random-number-generator states; the file is damaged")
    if not (isinstance(metrics, dict) and isinstance(metrics.get("sums"), dict) and type(metrics.get("count")) is int):
        raise CheckpointError(f"{where}: no running sums of the metrics; the file is damaged")


def _heldout(run: RunConfig, data: Dataset) -> Dataset:
    """The test split for pictures and checks; the training data itself when that is all there is."""
    if run.data.split == "test":
        return data
    try:
        return load_dataset(run.data.dataset, "test", data_dir=run.data.data_dir, **run.data.load_options())
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
        nets = {k: cast(torch.nn.Module, torch.compile(v)) for k, v in nets.items()}
    return nets


def _train_state(optimizers: dict[str, torch.optim.Optimizer], step: int, steps_per_epoch: int) -> dict[str, Any]:
    return {
        "epoch": step // steps_per_epoch,
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": ckpt.rng_states(),
    }


def _restore(
    found: ckpt.Checkpoint, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], averager: Averager
) -> dict[str, Any]:
    """Load weights, optimiser and metric state; return the state (its RNGs are set by the caller)."""
    path, state = found.path, found.state
    ckpt.load_state_into(model, found.weights, str(path / MODEL_FILE))
    saved = state.get("optimizers")
    if not isinstance(saved, dict) or set(saved) != set(optimizers):
        raise CheckpointError(
            f"{path}: optimisers {sorted(saved or {})} do not match this model's {sorted(optimizers)}"
        )
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


def _progress_bar(plan: Plan, initial: int, enabled: bool) -> ProgressReport:
    """A bar in a terminal; a plain line every 30 s and at each epoch's end in a log (genlab.progress)."""
    from ..progress import Progress as ProgressReport

    return ProgressReport(
        plan.total_steps,
        desc="train",
        unit="step",
        initial=initial,
        enabled=enabled,
        per_unit=plan.global_batch,
        rate_unit="images",
        where=lambda step: f"epoch {step / plan.steps_per_epoch:.2f}",
        announce=True,
    )
