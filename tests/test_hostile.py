"""A hostile-input corpus: each case is a stranger's file or a bad argument, run through the real CLI.

Every case must end in exit code 2 with exactly one stderr line starting ``genlab: error:``, no
traceback, nothing written and nothing the user had lost or changed (the whole working folder is
snapshotted before and after). Cases that a regression would turn into a hang (a FIFO) or an
endless read (``/dev/zero``, a 20 GB sparse file) run in one child process in which each call has
10 s (``SIGALRM``) and the process 4 GiB of address space, so a regression fails instead of hanging
or exhausting memory. Last, hypothesis mutates a real run's ``config.json`` (for ``sample``) and a
``metrics.json`` (for ``compare``): every outcome is exit 0, or exit 2 with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.cli import main


# -- running the CLI and watching the folder ----------------------------------------------------
def run_cli(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``genlab ARGV`` run in ``cwd``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(before)
    return rc, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): kind plus content hash (or size and mtime when large)."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest() if info.st_size <= 2**20 else info.st_mtime_ns
                found[rel] = ("file", info.st_size, content)
            elif stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = (stat.S_IFMT(info.st_mode),)
    return found


def assert_refused(rc: object, err: str, words: str = "") -> None:
    assert rc == 2, f"exit code {rc}; stderr: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert err.startswith("genlab: error:") and err.count("\n") == 1 and err.endswith("\n"), err[-3000:]
    assert words.lower() in err.lower(), f"{words!r} not in {err!r}"


# -- the runs every case damages a copy of ------------------------------------------------------
@pytest.fixture(scope="module")
def runs(mnist_dir, tmp_path_factory) -> SimpleNamespace:
    """Two tiny real runs: the seed VAE and a conditional VAE (3 steps each on MNIST's test split)."""
    root = tmp_path_factory.mktemp("hostile-runs")
    made = {}
    for name, preset in (("vae", "seed"), ("cvae", "cvae")):
        out = root / name
        argv = ["train", "vae", "--preset", preset, "--dataset", "mnist", "--data-dir", str(mnist_dir)]
        argv += ["--split", "test", "--max-steps", "3", "--batch-size", "32", "--out", str(out), "--quiet"]
        rc, _, err = run_cli(argv, root)
        assert rc == 0, err
        made[name] = out
    return SimpleNamespace(**made)


def workspace(tmp: Path, runs: SimpleNamespace, cvae: bool = False) -> Path:
    """A folder holding a copy of the VAE run as ``R`` (and of the conditional one as ``C``)."""
    work = tmp / "work"
    work.mkdir()
    shutil.copytree(runs.vae, work / "R", symlinks=True)
    if cvae:
        shutil.copytree(runs.cvae, work / "C", symlinks=True)
    return work


# -- hostile files ------------------------------------------------------------------------------
def replace(path: Path, make: Callable[[Path], None]) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    make(path)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def to_dev_null(path: Path) -> None:
    os.symlink("/dev/null", path)


def sparse_20gb(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(20 * 2**30)  # a hole: costs no disk


def text(content: str | bytes) -> Callable[[Path], None]:
    data = content.encode() if isinstance(content, str) else content
    return lambda path: path.write_bytes(data)


DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, pixels: bytes | None = None, extra: bytes = b"") -> bytes:
    """A grayscale 8-bit PNG; ``pixels`` default all black, ``extra`` chunks go before the image data."""
    raw = pixels if pixels is not None else b"".join(b"\0" + bytes(width) for _ in range(min(height, 28)))
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + extra + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def bomb_png() -> bytes:
    return _png(20_000, 20_000)  # Pillow: DecompressionBombError at open


def ztxt_png() -> bytes:
    bomb = zlib.compress(bytes(50 * 2**20), 9)  # 50 MB of text in ~50 KB
    return _png(28, 28, extra=_chunk(b"zTXt", b"Comment\0\0" + bomb))  # Pillow: ValueError


def npy_with_header(header: dict, data: bytes = b"\0" * 784 * 3, version: tuple[int, int] = (1, 0)) -> bytes:
    buf = io.BytesIO()
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue() + data


def lying_npy() -> bytes:  # a small file declaring 34 million images: numpy would try to allocate 26 GB
    return npy_with_header({"descr": "|u1", "fortran_order": False, "shape": (34_000_000, 1, 28, 28)})


def png_folder(*pngs: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        for i, data in enumerate(pngs):
            (path / f"{i:03d}.png").write_bytes(data)

    return make


GOOD_PNG = _png(28, 28)


def row(key: str, value: object, better: str = "lower", **extra: object) -> dict:
    return {
        "key": key,
        "label": key.upper(),
        "value": value,
        "better": better,
        "extractor": "cnn",
        "explain": "x",
    } | extra


def good_metrics(**override) -> dict:
    """A metrics.json as genlab evaluate writes it (the rows compare uses, with their usual fields)."""
    rows = [row("fid", 12.5), row("kid", 0.01, std=0.001), row("ks", 3, of=20), row("memo", 0.01, "target:0.01")]
    result = {
        "genlab_version": "0.1.0",
        "dataset": "mnist",
        "reference": {"split": "test", "n": 10000, "n_subset": 200},
        "n": 200,
        "seed": 0,
        "metrics_requested": ["fid", "kid", "ks", "memo"],
        "source": {"kind": "run", "path": "R", "name": "R"},
        "extractors": {},
        "summary": rows,
        "details": {},
        "notes": [],
        "seconds": 1.0,
    }
    result.update(override)
    return result


def metrics(**override) -> Callable[[Path], None]:
    return text(json.dumps(good_metrics(**override)))


# -- the corpus ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    argv: list[str]  # run in the workspace: R is the VAE run, C the conditional one
    damage: dict[str, Callable[[Path], None] | Edit] = field(default_factory=dict)  # relative path -> the damage
    words: str = ""  # expected in the error message
    cvae: bool = False
    seconds: int = 10  # a guarded case's alarm


@dataclass
class Edit:
    """Damage that changes the real JSON file in place (rather than replacing it)."""

    change: Callable[[dict], object]


def prepare(case: Case, tmp: Path, runs: SimpleNamespace) -> Path:
    work = workspace(tmp, runs, cvae=case.cvae)
    for rel, make in case.damage.items():
        if isinstance(make, Edit):
            doc = json.loads((work / rel).read_text())
            make.change(doc)
            (work / rel).write_text(json.dumps(doc))
        else:
            replace(work / rel, make)
    return work


SAMPLE = ["sample", "R", "--out", "s.png"]
RESUME_5 = ["train", "--resume", "R", "--max-steps", "5", "--quiet"]
COMPARE = ["compare", "R", "R", "--out", "c.html"]
EVAL_PNGS = ["evaluate", "pngs", "--dataset", "mnist"]

# Cases a regression would turn into a hang or an endless read: run in a guarded child process.
GUARDED = [
    Case("fifo-config-sample", SAMPLE, {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-resume", ["train", "--resume", "R", "--quiet"], {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-explore", ["explore", "R", "--what", "manifold"], {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-nll", ["nll", "R"], {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-compare", COMPARE, {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-evaluate", ["evaluate", "R"], {"R/config.json": fifo}, "named pipe"),
    Case("fifo-config-evaluate-nll", ["evaluate", "R", "--nll"], {"R/config.json": fifo}, "named pipe"),
    Case("fifo-metrics-compare", COMPARE, {"R/metrics.json": fifo}, "named pipe"),
    Case(
        "fifo-log-compare",
        COMPARE,
        {"R/metrics.json": metrics(), "R/metrics.jsonl": fifo},
        "named pipe",
    ),
    Case(
        "fifo-samples-png-compare",
        COMPARE,
        {"R/metrics.json": metrics(), "R/samples.png": fifo},
        "named pipe",
    ),
    Case("fifo-log-resume", RESUME_5, {"R/metrics.jsonl": fifo}, "named pipe"),
    Case("devnull-log-resume", RESUME_5, {"R/metrics.jsonl": to_dev_null}, "device"),
    Case("fifo-npy", ["evaluate", "x.npy", "--dataset", "mnist"], {"x.npy": fifo}, "named pipe"),
    Case("fifo-png", EVAL_PNGS, {"pngs": png_folder(GOOD_PNG), "pngs/zz.png": fifo}, "named pipe"),
    Case("devzero-config-sample", SAMPLE, {"R/config.json": dev_zero}, "character device"),
    Case("devzero-config-resume", ["train", "--resume", "R", "--quiet"], {"R/config.json": dev_zero}, "character"),
    Case("devzero-metrics-compare", COMPARE, {"R/metrics.json": dev_zero}, "character device"),
    Case("devzero-npy", ["evaluate", "x.npy", "--dataset", "mnist"], {"x.npy": dev_zero}, "character device"),
    Case("sparse-config-sample", SAMPLE, {"R/config.json": sparse_20gb}, "21,474,836,480 bytes"),
    Case("sparse-config-nll", ["nll", "R"], {"R/config.json": sparse_20gb}, "21,474,836,480 bytes"),
    Case("sparse-metrics-compare", COMPARE, {"R/metrics.json": sparse_20gb}, "21,474,836,480 bytes"),
    Case(
        "sparse-log-compare",
        COMPARE,
        {"R/metrics.json": metrics(), "R/metrics.jsonl": sparse_20gb},
        "21,474,836,480 bytes",
    ),
    Case("sparse-npy", ["evaluate", "x.npy", "--dataset", "mnist"], {"x.npy": sparse_20gb}, "not a readable .npy"),
    Case("sparse-png", EVAL_PNGS, {"pngs": png_folder(GOOD_PNG), "pngs/zz.png": sparse_20gb}, "bytes, more than"),
    Case(
        "endless-flow-steps-sample",
        SAMPLE,
        {"R/config.json": Edit(lambda config: config["model"].update(flow_steps=10**12))},
        "flow_steps must be at most 64",
        seconds=3,
    ),
]

# Cases that cannot hang: run in this process.
CASES = [
    # damaged JSON where a run's config belongs
    Case("deep-config-sample", SAMPLE, {"R/config.json": text(DEEP)}, "more than 64 deep"),
    Case("deep-object-config-sample", SAMPLE, {"R/config.json": text(DEEP_OBJECT)}, "more than 64 deep"),
    Case("deep-config-nll", ["nll", "R"], {"R/config.json": text(DEEP)}, "deep"),
    Case("deep-config-explore", ["explore", "R", "--what", "traverse"], {"R/config.json": text(DEEP)}, "deep"),
    Case("deep-config-evaluate-nll", ["evaluate", "R", "--nll"], {"R/config.json": text(DEEP)}, "deep"),
    Case("deep-config-resume", ["train", "--resume", "R", "--quiet"], {"R/config.json": text(DEEP)}, "deep"),
    Case("deep-config-compare", COMPARE, {"R/config.json": text(DEEP)}, "deep"),
    Case("list-config-sample", SAMPLE, {"R/config.json": text("[]")}, "expected a JSON object"),
    Case("list-config-compare", COMPARE, {"R/config.json": text("[]")}, "expected a JSON object"),
    Case("list-config-explore", ["explore", "R", "--what", "manifold"], {"R/config.json": text("[]")}, "JSON object"),
    Case("list-config-evaluate", ["evaluate", "R"], {"R/config.json": text("[]")}, "expected a JSON object"),
    Case("cut-config-sample", SAMPLE, {"R/config.json": text('{"family": "vae", "mod')}, "not valid JSON"),
    Case("binary-config-sample", SAMPLE, {"R/config.json": text(b"\xff\xfe\x00garbage\x80")}, "not valid JSON"),
    Case("huge-int-config-sample", SAMPLE, {"R/config.json": text('{"family": ' + "9" * 5000 + "}")}, "valid JSON"),
    Case("dir-config-sample", SAMPLE, {"R/config.json": lambda p: p.mkdir()}, "a directory"),
    Case("dangling-config-sample", SAMPLE, {"R/config.json": lambda p: os.symlink("nowhere", p)}, "no such file"),
    # damaged metrics.json in compare: refused (docs/evaluation.md), never silently re-evaluated
    Case("summary-5-compare", COMPARE, {"R/metrics.json": text('{"summary": 5}')}, "not a genlab evaluation"),
    Case("list-metrics-compare", COMPARE, {"R/metrics.json": text("[]")}, "not a JSON object"),
    Case("deep-metrics-compare", COMPARE, {"R/metrics.json": text(DEEP)}, "deep"),
    Case("cut-metrics-compare", COMPARE, {"R/metrics.json": text(json.dumps(good_metrics())[:-40])}, "valid JSON"),
    Case("row-junk-compare", COMPARE, {"R/metrics.json": metrics(summary=[5])}, "summary[0]"),
    Case("row-no-label-compare", COMPARE, {"R/metrics.json": metrics(summary=[{"key": "fid", "value": 1}])}, "label"),
    Case("bad-target-compare", COMPARE, {"R/metrics.json": metrics(summary=[row("k", 1, "target:x")])}, "target"),
    Case("huge-value-compare", COMPARE, {"R/metrics.json": metrics(summary=[row("k", 10**400)])}, "not a number"),
    Case("list-std-compare", COMPARE, {"R/metrics.json": metrics(summary=[row("k", 1, std=[1])])}, "not a number"),
    Case("string-n-compare", COMPARE, {"R/metrics.json": metrics(n="200")}, "sample count"),
    Case("notes-junk-compare", COMPARE, {"R/metrics.json": metrics(notes=[1])}, "notes"),
    Case("dir-metrics-compare", COMPARE, {"R/metrics.json": lambda p: p.mkdir()}, "a directory"),
    Case("no-config-compare", COMPARE, {"R/config.json": lambda p: None}, "no config.json"),
    # hostile samples in evaluate
    Case("bomb-png", EVAL_PNGS, {"pngs": png_folder(GOOD_PNG, bomb_png())}, "decompression bomb"),
    Case("ztxt-png", EVAL_PNGS, {"pngs": png_folder(ztxt_png())}, "too large"),
    Case("big-png", EVAL_PNGS, {"pngs": png_folder(_png(4000, 1))}, "must be 28x28"),
    Case("not-png", EVAL_PNGS, {"pngs": png_folder(b"GIF89a" + bytes(100))}, "not a readable PNG"),
    Case("cut-png", EVAL_PNGS, {"pngs": png_folder(GOOD_PNG[:40])}, "not a readable PNG"),
    Case("dir-png", EVAL_PNGS, {"pngs": png_folder(GOOD_PNG), "pngs/d.png": lambda p: p.mkdir()}, "a directory"),
    Case("lying-npy", ["evaluate", "x.npy", "--dataset", "mnist"], {"x.npy": text(lying_npy())}, "declares shape"),
    Case(
        "lying-npy-with-n",
        ["evaluate", "x.npy", "--dataset", "mnist", "-n", "10"],
        {"x.npy": text(lying_npy())},
        "declares shape",
    ),
    Case(
        "object-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(npy_with_header({"descr": "|O", "fortran_order": False, "shape": (3,)}, b""))},
        "pickle",
    ),
    Case(
        "struct-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(npy_with_header({"descr": [("a", "<f4")], "fortran_order": False, "shape": (3, 28, 28)}))},
        "dtype",
    ),
    Case(
        "shape-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(npy_with_header({"descr": "|u1", "fortran_order": False, "shape": (3, 784)}))},
        "shape",
    ),
    Case(
        "junk-header-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(b"\x93NUMPY\x01\x00\x10\x00{'descr': __import__('os')}\n")},
        "not a readable .npy",
    ),
    Case(
        "v3-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(b"\x93NUMPY\x03\x00" + bytes(20))},
        "not a readable .npy",
    ),
    Case("empty-npy", ["evaluate", "x.npy", "--dataset", "mnist"], {"x.npy": text(b"")}, "not a readable .npy"),
    Case(
        "v2-lying-npy",
        ["evaluate", "x.npy", "--dataset", "mnist"],
        {"x.npy": text(npy_with_header({"descr": "<f4", "fortran_order": True, "shape": (9, 28, 28)}, version=(2, 0)))},
        "declares shape",
    ),
    # bad arguments: bounded before any work
    Case("evaluate-seed", ["evaluate", "R", "--seed", "-1"], {}, "--seed"),
    Case("sample-seed", ["sample", "R", "--out", "s.png", "--seed", "18446744073709551616"], {}, "--seed"),
    Case("sample-device", ["sample", "R", "--out", "s.png", "--device", "tpu"], {}, "--device"),
    Case("traverse-steps-0", ["explore", "R", "--what", "traverse", "--steps", "0"], {}, "--steps"),
    Case("traverse-steps-neg", ["explore", "R", "--what", "traverse", "--steps", "-2"], {}, "--steps"),
    Case("label-n-neg", ["sample", "C", "--label", "3", "-n", "-1", "--out", "s.png"], {}, "-n", cvae=True),
    Case("label-too-big", ["sample", "C", "--label", "10", "--out", "s.png"], {}, "--label", cvae=True),
    Case("label-unconditional", ["sample", "R", "--label", "3", "--out", "s.png"], {}, "conditional"),
    Case("compare-into-run", ["compare", "R", "R", "--out", "R/config.json"], {}, "HTML"),
    Case("compare-into-run-html", ["compare", "R", "R", "--out", "R/c.html"], {}, "inside the run directory"),
    Case("sample-huge-n", ["sample", "R", "-n", "1000000000000", "--out", "s.npy"], {}, "-n"),
    Case("sample-grid-too-big", ["sample", "R", "-n", "100000", "--out", "s.png"], {}, "unreadable"),
    Case("sample-bad-suffix", ["sample", "R", "--out", "s.txt"], {}, ".png"),
    Case("manifold-huge-n", ["explore", "R", "--what", "manifold", "--n", "100000"], {}, "at most 100"),
    Case("reconstruct-neg-n", ["explore", "R", "--what", "reconstruct", "--n", "-5"], {}, "--n"),
    Case("nll-k-0", ["nll", "R", "--k", "0"], {}, "--k"),
    Case("evaluate-n-0", ["evaluate", "R", "-n", "0"], {}, "-n"),
    Case("compare-n-0", ["compare", "R", "R", "-n", "0"], {}, "-n"),
    Case("npy-without-dataset", ["evaluate", "x.npy"], {"x.npy": text(lying_npy())}, "--dataset"),
    Case("evaluate-missing", ["evaluate", "nowhere.npy", "--dataset", "mnist"], {}, "no such"),
]


def _params(cases: list[Case]) -> list:
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique"
    return [pytest.param(c, id=c.id) for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_hostile_input_is_one_line_and_changes_nothing(case: Case, runs, tmp_path):
    work = prepare(case, tmp_path, runs)
    before = snapshot(work)
    rc, _, err = run_cli(case.argv, work)
    assert_refused(rc, err, case.words)
    assert snapshot(work) == before


# A child process runs every guarded case: one import of torch for all, each call under a 10-s alarm,
# the process under a 4-GiB address-space limit, the whole under a 120-s timeout.
_DRIVER = r"""
import contextlib, io, json, os, resource, signal, sys, traceback

resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from genlab.cli import main

class Blocked(BaseException):  # not an OSError: nothing in genlab may catch it
    pass

def alarm(signum, frame):
    raise Blocked("still running when its alarm rang")

signal.signal(signal.SIGALRM, alarm)
results = {}
for case_id, cwd, argv, seconds in json.load(sys.stdin):
    os.chdir(cwd)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        signal.alarm(seconds)
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            rc = None
            err.write(traceback.format_exc())
        finally:
            signal.alarm(0)
    results[case_id] = [rc, err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def guarded_results(runs, tmp_path_factory) -> dict[str, tuple]:
    """case id -> (exit code, stderr, snapshot before, snapshot after) for every GUARDED case."""
    root = tmp_path_factory.mktemp("guarded")
    works, befores = {}, {}
    for case in GUARDED:
        (root / case.id).mkdir()
        works[case.id] = prepare(case, root / case.id, runs)
        befores[case.id] = snapshot(works[case.id])
    todo = [[case.id, str(works[case.id]), case.argv, case.seconds] for case in GUARDED]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CUDA's start-up would not fit in 4 GiB of address space
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER], input=json.dumps(todo), capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {cid: (rc, err, befores[cid], snapshot(works[cid])) for cid, (rc, err) in results.items()}


@pytest.mark.parametrize("case", _params(GUARDED))
def test_files_that_never_end_or_block_are_refused_at_once(case: Case, guarded_results):
    rc, err, before, after = guarded_results[case.id]
    assert_refused(rc, err, case.words)
    assert after == before


# -- damaged but harmless: tolerated ------------------------------------------------------------
def test_compare_tolerates_a_damaged_training_log(runs, tmp_path):
    """A truncated last line, junk lines and absurd numbers in metrics.jsonl: the curves leave them out."""
    work = workspace(tmp_path, runs)
    (work / "R" / "metrics.json").write_text(json.dumps(good_metrics()))
    with open(work / "R" / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 1e999}\n{"step": 1' + "0" * 400 + ', "loss": 1}\n[1, 2]\n"text"\n')
        f.write('{"step": 10, "loss": ' + "9" * 400 + ', "deep": ' + "[" * 200 + "]" * 200 + "}\n")
        f.write(DEEP + "\n" + '{"step": 11, "loss": NaN, "kl": -Infinity}\n{"step": 12, "lo')
    rc, out, err = run_cli(COMPARE, work)
    assert rc == 0, err
    assert "wrote c.html" in out
    assert "Training curves" in (work / "c.html").read_text()


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from genlab.evaluate import load_samples

    levels = [0, 257, 32768, 65535]  # 16-bit: 257 is 1/255 of the range
    for i, level in enumerate(levels):
        Image.fromarray(np.full((28, 28), level, dtype=np.uint16)).save(tmp_path / f"{i}.png")
    Image.fromarray(np.full((28, 28), 51, dtype=np.uint8)).save(tmp_path / "4.png")  # 8-bit beside them
    x = load_samples(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0], [0, 1 / 255, 32768 / 65535, 1, 0.2], rtol=1e-6)


def test_npy_reads_only_the_images_scored(tmp_path):
    """-n N reads N images of a large .npy; float64 and Fortran order load too."""
    from genlab.evaluate import load_samples

    x = np.random.default_rng(0).random((50, 1, 28, 28))
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_allclose(load_samples(tmp_path / "a.npy", 7), x[:7].astype(np.float32))
    np.save(tmp_path / "f.npy", np.asfortranarray(x[:, 0]))
    np.testing.assert_allclose(load_samples(tmp_path / "f.npy", 5)[:, 0], x[:5, 0].astype(np.float32))


# -- fuzz: mutated config.json for sample, mutated metrics.json for compare -----------------------
JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, 1, 2, 3, -1, 10**12, 2**63, 2**64, -(2**63), 10**30]),  # no mid-sized widths:
        # a width of 10**5 builds a real model of gigabytes before its weights are found not to fit
        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5]),
        st.text(max_size=20),
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


ACTIONS = st.sampled_from(["set"] * 6 + ["delete", "add", "wrap", "whole"])


def _mutate(doc: dict, data: st.DataObject) -> object:
    """``doc`` with one or two of its values (mostly the settings two levels down) made junk or removed."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 2))):
        node = doc
        while True:  # walk down objects (and lists), rarely stopping early
            keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            inner = [k for k in keys if isinstance(node[k], (dict, list)) and node[k]]
            key = data.draw(st.sampled_from(keys + 3 * inner))  # sections and rows more often than leaves
            if not isinstance(node[key], (dict, list)) or not node[key] or data.draw(st.integers(0, 5)) == 0:
                break
            node = node[key]
        action = data.draw(ACTIONS)
        if action == "whole":
            return data.draw(JUNK)
        if not keys or action == "add":
            if isinstance(node, dict):
                node[data.draw(st.text(max_size=8))] = data.draw(JUNK)
            else:
                node.append(data.draw(JUNK))
        elif action == "delete":
            del node[key]
        elif action == "wrap":  # the right value, one level too deep
            node[key] = [node[key]]
        else:
            node[key] = data.draw(JUNK)
    return doc


@pytest.fixture(scope="module")
def fuzz_work(runs, tmp_path_factory) -> Path:
    work = workspace(tmp_path_factory.mktemp("fuzz"), runs)
    (work / "R" / "metrics.jsonl").unlink()  # no training curves: compare stays quick
    return work


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _exit_0_or_one_line(rc: object, err: str) -> None:
    assert rc in (0, 2), f"exit code {rc}: {err[-3000:]}"
    if rc == 2:
        assert_refused(rc, err)
    else:
        assert "Traceback" not in err


@FUZZ
@given(data=st.data())
def test_fuzzed_config_json_in_sample(fuzz_work, runs, data):
    original = json.loads((runs.vae / "config.json").read_text())
    mutated = _mutate(original, data)
    (fuzz_work / "R" / "config.json").write_text(json.dumps(mutated))  # NaN and Infinity as Python writes them
    try:
        rc, _, err = run_cli(["sample", "R", "-n", "4", "--out", "s.png", "--overwrite", "--quiet"], fuzz_work)
    finally:
        shutil.copyfile(runs.vae / "config.json", fuzz_work / "R" / "config.json")
    _exit_0_or_one_line(rc, err)


@FUZZ
@given(data=st.data())
def test_fuzzed_metrics_json_in_compare(fuzz_work, data):
    mutated = _mutate(good_metrics(), data)
    (fuzz_work / "R" / "metrics.json").write_text(json.dumps(mutated))
    rc, _, err = run_cli(["compare", "R", "R", "--out", "c.html", "--overwrite", "--quiet"], fuzz_work)
    _exit_0_or_one_line(rc, err)
