"""Data-parallel training: torchrun with 2 gloo processes == 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _train(
    cmd_prefix: list[str], out: Path, mnist_dir: Path, extra: list[str], steps: str = "6", env: dict | None = None
) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env or {})}
    args = [
        "-m",
        "genlab",
        "train",
        "vae",
        "--preset",
        "mlp",
        "--dataset",
        "mnist",
        "--data-dir",
        str(mnist_dir),
        "--split",
        "test",
        "--batch-size",
        "64",
        "--max-steps",
        steps,
        "--out",
        str(out),
        "--precision",
        "fp32",
        "--quiet",
        *extra,
    ]  # fp32: bf16 would round the two batch splits differently
    done = subprocess.run([*cmd_prefix, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_processes_match_one_process(mnist_dir, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    _train(torchrun, tmp_path / "two", mnist_dir, [])
    _train([sys.executable], tmp_path / "one", mnist_dir, [])
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-4, rtol=1e-4), (k, (one[k] - two[k]).abs().max())
    # and training really moved the weights (the comparison is not between two untouched inits)
    _train([sys.executable], tmp_path / "other-seed", mnist_dir, ["--seed", "3"])
    other = load_file(tmp_path / "other-seed" / "model.safetensors")
    assert any(not torch.allclose(one[k], other[k], atol=1e-3) for k in one)
    # only rank 0 wrote the run directory's files, once
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())


def test_two_processes_share_one_time_clock_and_stop_together(mnist_dir, tmp_path):
    """--lr-clock time under torchrun: the clock travels in the per-step all-reduce (in float64), the
    rate decays over the 6-s budget and both processes stop there, having stepped with the same rate
    at every step (each process logs its own through the GENLAB_RANK_LOG hook)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29534"]
    out, rank_log = tmp_path / "timed", tmp_path / "rank-log"
    _train(
        torchrun,
        out,
        mnist_dir,
        ["--lr-schedule", "cosine", "--lr-clock", "time", "--max-minutes", "0.1", "--log-every", "5"],
        steps="1000000",
        env={"GENLAB_RANK_LOG": str(rank_log)},
    )
    ranks = [[json.loads(line) for line in (rank_log / f"rank-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    for r, lines in enumerate(ranks):
        assert [x["step"] for x in lines] == list(range(1, steps + 1)) and {x["rank"] for x in lines} == {r}
    assert [x["lr"] for x in ranks[0]] == [x["lr"] for x in ranks[1]]  # the same rate, step for step, bit for bit
    assert len({x["lr"] for x in ranks[0]}) > 3  # and a decaying one, not a constant that would agree trivially
    logged = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert logged and all(r["lr"] == ranks[0][r["step"] - 1]["lr"] for r in logged)  # what metrics.jsonl shows
    rates = [r["lr"] for r in logged]
    assert len(rates) > 3 and rates == sorted(rates, reverse=True)  # decaying over the 6 s
    # and well down when the budget ran out (the preset's lr is 1e-3); the slack allows a 3-s stall
    assert rates[-1] < 0.5 * 1e-3
    assert steps < 1000000


def _worker_pids(launcher: subprocess.Popen, timeout: float = 60.0) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (read from their environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        ranks = {}
        for pid in map(int, children):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except FileNotFoundError:  # a short-lived helper process of torchrun's, gone already
                continue
            rank = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
            if rank:
                ranks[int(rank[0])] = pid
        if len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError("torchrun did not start two workers")


def test_a_signal_to_one_process_stops_both_at_the_same_step(mnist_dir, tmp_path):
    """SIGTERM to rank 1 alone (as a cluster scheduler may deliver it): the flag travels in the
    per-step all-reduce, so both processes stop after the same step, rank 0 saves a checkpoint
    there, and neither hangs waiting for the other (the 120-s timeout would catch that)."""
    out, rank_log = tmp_path / "signalled", tmp_path / "rank-log"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "GENLAB_RANK_LOG": str(rank_log)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29535"]
    cmd += ["-m", "genlab", "train", "vae", "--preset", "mlp", "--dataset", "mnist", "--data-dir", str(mnist_dir)]
    cmd += ["--split", "test", "--batch-size", "64", "--max-steps", "1000000", "--precision", "fp32", "--quiet"]
    cmd += ["--checkpoint-every", "1000000", "--out", str(out)]
    log = tmp_path / "torchrun.log"  # a file, not a pipe: an undrained pipe could block a worker mid-step
    with log.open("w") as sink:
        launcher = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    pids: dict[int, int] = {}
    try:
        pids = _worker_pids(launcher)
        deadline = time.monotonic() + 90
        log1 = rank_log / "rank-1.jsonl"
        while not (log1.exists() and len(log1.read_text().splitlines()) >= 20):
            assert time.monotonic() < deadline and launcher.poll() is None, "training did not get going"
            time.sleep(0.1)
        os.kill(pids[1], signal.SIGTERM)
        launcher.wait(timeout=120)
    finally:
        launcher.kill()
        for pid in pids.values():  # a hung worker outlives its killed launcher
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    stderr = log.read_text()
    assert launcher.returncode != 0  # an interrupted run is not a finished one
    assert "interrupted by signal" in stderr
    last = [json.loads((rank_log / f"rank-{r}.jsonl").read_text().splitlines()[-1])["step"] for r in (0, 1)]
    assert last[0] == last[1] >= 20, f"the processes stopped at steps {last}"
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == [f"step-{last[0]:08d}"], (last, saved)  # the stopping step, and no other
