"""Files that survive a crash, files read from strangers, and the JSON-lines logs: one home for all.

Every file genlab writes goes through :func:`atomic_write_bytes`: written to a temporary
name in the same folder, flushed, renamed over the target (``os.replace`` is atomic on
POSIX) and the rename made durable, so a reader sees the old file or the new one, never
half of one. ``*.jsonl`` logs are appended one line at a time and read back tolerantly:
a line cut short by a crash is skipped, never fatal.

Every file genlab reads from a run directory, a dataset folder or a samples folder goes
through :func:`open_regular` (or :func:`read_bytes_capped` / :func:`read_json` on top of it):
it must be a regular file (a FIFO would block forever, ``/dev/zero`` never ends) no larger
than a cap suited to its kind, so a stranger's directory costs one clear error, at once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
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


def check_writable_folder(folder: Path) -> None:
    """Refuse, before any work, a folder that cannot be made or written to (its nearest existing ancestor
    decides): a command must not sample for minutes and then fail to save."""
    folder = Path(folder)
    probe = folder if str(folder) else Path(".")
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise GenlabError(f"cannot write into {folder}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GenlabError(f"cannot write into {folder}: {probe} is not writable")


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


# -- reading files a stranger may have made -----------------------------------------------------
MAX_JSON_BYTES = 8 * 2**20  # config.json, metrics.json, summary.json, nll.json: kilobytes when genlab writes them
MAX_JSONL_BYTES = 256 * 2**20  # metrics.jsonl: ~1 million log lines
MAX_JSON_DEPTH = 64  # genlab's own JSON nests 6 deep; deeper is junk that recursion would choke on


class MissingFileError(GenlabError):
    """The file to read does not exist (callers that treat absence as "nothing yet" catch this)."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_unless_regular(path: Path, mode: int, what: str, verb: str = "read") -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise GenlabError(f"{path}: cannot {verb} the {what}: it is {kind}; genlab uses only regular files")


def open_regular(path: Path, max_bytes: int, what: str) -> tuple[int, int]:
    """Open ``path`` for reading as ``(fd, size)`` once it is known to be a regular file of at most ``max_bytes``.

    The open is non-blocking, so a FIFO swapped in after the first check cannot hang it, and the
    checks are made again on the open descriptor (``fstat``), so no swap gets past them. A missing
    file raises :class:`MissingFileError`; anything else unreadable one :class:`GenlabError`
    naming the file and ``what`` it should be. The caller closes ``fd``.
    """
    path = Path(path)
    try:
        _refuse_unless_regular(path, os.stat(path).st_mode, what)  # devices are never even opened
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except OSError as e:
        raise GenlabError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        _refuse_unless_regular(path, info.st_mode, what)
        if info.st_size > max_bytes:
            raise GenlabError(
                f"{path}: the {what} is {info.st_size:,} bytes, more than the {max_bytes:,} such a file "
                f"may be; it is damaged or not a genlab file"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_bytes_capped(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`), read at once."""
    fd, size = open_regular(path, max_bytes, what)
    try:
        chunks, got = [], 0
        while got < size:  # a file that shrinks meanwhile ends early; one that grows is read to its old size
            chunk = os.read(fd, min(size - got, 2**24))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise GenlabError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    finally:
        os.close(fd)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and objects more than ``limit`` deep; no recursion."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]  # containers only: a list of a million numbers costs no stack entries
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(data: bytes | str, where: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as Python values; damaged, non-UTF-8 or absurdly nested text is one :class:`GenlabError`."""
    try:
        value = json.loads(data)
    except RecursionError:
        value = None
        too_deep = True
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and over-long integers are ValueErrors
        raise GenlabError(f"{where}: the {what} is not valid JSON ({' '.join(str(e).split())[:200]})") from None
    else:
        too_deep = json_depth_exceeds(value, max_depth)
    if too_deep:
        raise GenlabError(
            f"{where}: the {what} nests lists or objects more than {max_depth} deep; it is not a genlab file"
        )
    return value


def read_json(path: Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file a stranger may have made: a regular file, at most ``max_bytes``, valid and sanely nested.

    Any problem is one :class:`GenlabError` (:class:`MissingFileError` when the file is absent);
    the caller still checks the structure it uses.
    """
    return parse_json(read_bytes_capped(path, max_bytes, what), str(path), what)


def read_jsonl(path: Path, max_bytes: int = MAX_JSONL_BYTES) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, in order; blank, damaged or non-object lines are skipped.

    A missing file reads as no records: a run that has not logged yet. One that is not a regular
    file or is over ``max_bytes`` is a :class:`GenlabError`.
    """
    path = Path(path)
    try:
        data = read_bytes_capped(path, max_bytes, "JSON-lines log")
    except MissingFileError:
        return []
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and not json_depth_exceeds(record, MAX_JSON_DEPTH):
            records.append(record)
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as a line (creating the file and its folder).

    The log must be a regular file: opening is non-blocking, so a FIFO in its place is refused
    rather than waited on, and a device (``/dev/null``) is refused rather than fed.
    """
    path = Path(path)
    line = (json.dumps(record) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO nobody reads: non-blocking open says so instead of waiting
            raise GenlabError(
                f"{path}: cannot append to the JSON-lines log: it is a named pipe (FIFO); genlab uses only "
                f"regular files"
            ) from None
        raise GenlabError(f"cannot append to {path}: {why(e)}") from None
    try:
        _refuse_unless_regular(path, os.fstat(fd).st_mode, "JSON-lines log", verb="append to")
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise GenlabError(f"cannot append to {path}: {why(e)}") from None
    finally:
        os.close(fd)
