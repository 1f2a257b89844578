"""Files that survive a crash, and the JSON-lines logs: one home for both.

Every file genlab writes goes through :func:`atomic_write_bytes`: written to a temporary
name in the same folder, flushed, renamed over the target (``os.replace`` is atomic on
POSIX) and the rename made durable, so a reader sees the old file or the new one, never
half of one. ``*.jsonl`` logs are appended one line at a time and read back tolerantly:
a line cut short by a crash is skipped, never fatal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import GenlabError


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; outputs should read like any other file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        remove_quietly(Path(tmp))
        raise GenlabError(f"cannot write {path}: {why(e)}; the previous file, if any, is unchanged") from None
    except BaseException:
        remove_quietly(Path(tmp))
        raise


def why(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return e.strerror or str(e)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: without this a power cut can undo it (ext4, xfs)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems cannot open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_quietly(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        pass


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, in order; blank, damaged or non-object lines are skipped.

    A missing file reads as no records: a run that has not logged yet.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (creating the file and its folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise GenlabError(f"cannot append to {path}: {why(e)}") from None
