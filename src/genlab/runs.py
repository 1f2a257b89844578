"""Run directories: their names, their files, and claiming one for a new run."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GenlabError
from .io import remove_quietly

if TYPE_CHECKING:
    from .config import RunConfig

CONFIG_FILE = "config.json"  # every setting, resolved: the directory alone rebuilds its model
MODEL_FILE = "model.safetensors"  # the final weights
METRICS_FILE = "metrics.jsonl"  # one JSON object per log step
SUMMARY_FILE = "summary.json"  # written last by a finished training
CHECKPOINT_DIR = "checkpoints"  # resumable checkpoints, one folder per step
LOCK_FILE = ".genlab-lock"  # held (flock) by the one process writing the run; never deleted while in use
REPLACED_DIR = ".replaced"  # --overwrite: the old run waits here until the new one has started
WRITE_PROBE = ".write-test"  # created and deleted by a claim to test the folder is writable
_OURS = (LOCK_FILE, REPLACED_DIR)  # genlab's bookkeeping, never part of a run


def _is_debris(name: str) -> bool:
    """Left by a genlab process killed mid-write: the claim's probe, or an atomic write's ``.NAME.XXXX.tmp``."""
    return name == WRITE_PROBE or (name.startswith(".") and name.endswith(".tmp"))


def _clear_debris(run_dir: Path) -> None:
    """Delete what killed genlab writers left in a folder genlab claimed before (under the lock: no
    other process writes there now). Never called on a folder genlab has not claimed: a user's own
    ``.notes.tmp`` is not debris."""
    for item in run_dir.iterdir():
        if _is_debris(item.name) and item.is_file():
            remove_quietly(item)


RUNS_DIR = "runs"  # where runs go by default, relative to the current directory
LATEST = "latest"  # RUNS_DIR/latest: a link to the run started last there; `--resume latest` follows it


def default_run_dir(run: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    # folder:/a/b/icons -> "icons": a path's slashes must not nest the run directory
    dataset = (
        os.path.basename(run.data.dataset.rstrip("/")) if run.data.dataset.startswith("folder:") else run.data.dataset
    )
    return Path(RUNS_DIR) / f"{run.family}-{run.preset}-{dataset}-{stamp}"


def mark_latest(run_dir: Path) -> None:
    """Point ``runs/latest`` at ``run_dir`` when the run lives directly in ``./runs`` (the default place).

    Runs elsewhere leave it alone: a link appearing beside a run in any folder named by ``--out``
    would litter the user's folders. The link is relative (the runs folder can move) and replaced
    atomically (a new link renamed over the old), so a reader never sees it missing. Best effort:
    a filesystem without symlinks, or a real folder named ``latest`` there, only skips the link.
    """
    runs = Path(os.path.abspath(RUNS_DIR))
    run_dir = Path(os.path.abspath(run_dir))
    if run_dir.parent != runs or run_dir.name == LATEST:
        return
    tmp = runs / f".{LATEST}.{os.getpid()}.tmp"
    try:
        remove_quietly(tmp)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, runs / LATEST)
    except OSError:
        remove_quietly(tmp)


def latest_run() -> Path:
    """The run ``runs/latest`` points to, else the newest ``runs/*`` holding a config.json (by its time)."""
    runs = Path(RUNS_DIR)
    link = runs / LATEST
    if (link / CONFIG_FILE).is_file():
        return runs / os.readlink(link) if link.is_symlink() else link
    found = [p for p in runs.glob(f"*/{CONFIG_FILE}") if p.parent.name != LATEST] if runs.is_dir() else []
    if not found:
        raise GenlabError(
            f"no run to resume: {os.path.abspath(RUNS_DIR)} holds no genlab run "
            f"(`latest` means the newest run under ./{RUNS_DIR}; pass the run directory instead)"
        )
    return max(found, key=lambda p: p.stat().st_mtime).parent


def resolve_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``"latest"`` as :func:`latest_run`; any other value as the path it is."""
    return latest_run() if os.fspath(run_dir) == LATEST else Path(run_dir)


class RunLock:
    """An exclusive claim on a run directory, held for the life of the process that writes it.

    ``flock`` on ``RUN/.genlab-lock``: the kernel releases it when the process ends, however it
    ends (``kill -9`` included), so a crashed run never leaves a stale claim. The file itself is
    never deleted (not even by ``--overwrite``): deleting a lock file another process has open lets
    a third create a new one and both would hold "the" lock.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None
        self.replaced: Path | None = None  # the old run set aside by --overwrite, until commit()
        self.new_run = False  # claimed for a new run: roll_back empties it again

    def commit(self) -> None:
        """The new run has started: the run it replaces (``--overwrite``) is deleted for good."""
        self.new_run = False
        if self.replaced is not None:
            remove_quietly(self.replaced)
            self.replaced = None

    def roll_back(self) -> None:
        """The new run failed before it started: delete what it wrote and put the old run back."""
        if not self.new_run:
            return
        for item in self.run_dir.iterdir():
            if item.name not in _OURS:
                remove_quietly(item)
        if self.replaced is None:
            return
        for item in self.replaced.iterdir():
            os.replace(item, self.run_dir / item.name)
        remove_quietly(self.replaced)
        self.replaced = None

    def acquire(self) -> RunLock:
        path = self.run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise GenlabError(f"cannot write to {self.run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise GenlabError(f"cannot lock {path}: {e.strerror or e}") from None
            raise GenlabError(
                f"{self.run_dir} is being written by another genlab process"
                f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to finish, "
                f"or train into another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def claim_run_dir(run_dir: Path, overwrite: bool, *, resume: bool = False) -> RunLock:
    """Claim ``run_dir`` for this process: create it (a new run) and lock it, atomically with its checks.

    A new run refuses a folder that already holds files unless ``overwrite`` (which only replaces a
    genlab run); ``resume`` needs the run to exist. Two processes claiming one folder at once: one
    gets it, the other a clear error, and nothing of either is mixed into the other's run.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise GenlabError(f"{run_dir} exists and is not a directory")
    # Claimed by genlab before (it holds the lock file, or is the run being resumed): what a killed
    # genlab process left half-written there is debris, not a run's files.
    ours = resume or (run_dir / LOCK_FILE).exists()
    if not resume:
        _refuse_foreign(run_dir, overwrite, ours)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GenlabError(f"cannot write to {run_dir}: {e.strerror or e}") from None
    lock = RunLock(run_dir).acquire()
    try:
        if ours:
            _clear_debris(run_dir)
        if not resume:  # under the lock: what another process wrote before we got it counts too
            _refuse_foreign(run_dir, overwrite, ours)
            _set_aside(run_dir, lock)
            lock.new_run = True
            probe = run_dir / WRITE_PROBE
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as e:
        lock.release()
        raise GenlabError(f"cannot write to {run_dir}: {e.strerror or e}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def _set_aside(run_dir: Path, lock: RunLock) -> None:
    """Move an old run's files into RUN/.replaced/ (renames: instant, no copy) for commit or roll_back.

    A ``.replaced`` folder left by a run killed before it started is an older copy: it goes.
    """
    old = [p for p in run_dir.iterdir() if p.name not in _OURS]
    stash = run_dir / REPLACED_DIR
    remove_quietly(stash)
    if not old:
        return
    stash.mkdir()
    for item in old:
        os.replace(item, stash / item.name)
    lock.replaced = stash


def _refuse_foreign(run_dir: Path, overwrite: bool, ours: bool) -> None:
    """Refuse to clobber an earlier run unless asked; never delete a folder that is not a run.

    ``ours``: genlab claimed the folder before, so debris of a killed genlab process does not count.
    """
    contents = (
        [p for p in run_dir.iterdir() if p.name not in _OURS and not (ours and _is_debris(p.name))]
        if run_dir.is_dir()
        else []
    )
    if not contents:
        return
    if not overwrite:
        raise GenlabError(
            f"{run_dir} already holds files; continue it with --resume {run_dir}, "
            f"replace it with --overwrite, or choose another --out"
        )
    if not (run_dir / CONFIG_FILE).is_file():
        raise GenlabError(
            f"{run_dir} is not a genlab run directory (no config.json): "
            f"--overwrite only replaces genlab runs; choose another --out"
        )


def finished_steps(run_dir: Path) -> int | None:
    """Steps recorded by the last complete training (summary.json is written last), if any.

    summary.json is read as checkpoints are (a regular file, opened without blocking, of bounded size):
    a FIFO or a huge file in its place reads as no finished training.
    """
    from .checkpoint import STATE_JSON_LIMIT, read_capped  # late: checkpoint imports this module

    try:
        summary = json.loads(read_capped(run_dir / SUMMARY_FILE, STATE_JSON_LIMIT))
    except (GenlabError, ValueError, RecursionError):
        return None
    steps = summary.get("steps") if isinstance(summary, dict) else None
    return steps if isinstance(steps, int) and (run_dir / MODEL_FILE).is_file() else None


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Claim, check and empty ``run_dir`` for a new run, then let the claim go (no lifetime lock)."""
    lock = claim_run_dir(run_dir, overwrite)
    lock.commit()
    lock.release()
