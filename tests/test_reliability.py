"""Crashes, signals, divergence and hostile input: what a run survives, end to end on real MNIST.

Runs are tiny (the seed VAE, batch 500 on the 10,000-image test split: 20 steps an
epoch) and single-threaded: with two cores shared between test processes, extra
intra-op threads only spin and wait, and one thread count everywhere is what
makes "bit-identical" well defined (a reduction split over more threads adds in
another order).
"""

from __future__ import annotations

import errno
import gzip
import json
import math
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.models.vae import PRESETS, VAE, VAEConfig
from genlab.runs import LOCK_FILE

ARGS = [
    "--preset",
    "seed",
    "--dataset",
    "mnist",
    "--split",
    "test",
    "--batch-size",
    "500",
    "--epochs",
    "2",
    "--checkpoint-every",
    "7",
    "--log-every",
    "5",
    "--keep-checkpoints",
    "3",
    "--quiet",
]
STEPS = 40  # 2 epochs of 20 steps


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_args(mnist_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "vae", *ARGS, "--data-dir", str(mnist_dir), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory) -> Path:
    """The reference: 2 epochs, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(train_args(mnist_dir, out)) == 0
    return out


@pytest.fixture
def run_copy(straight, tmp_path) -> Path:
    """A finished run (with checkpoints) that a test may damage."""
    return Path(shutil.copytree(straight, tmp_path / "run"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock column."""
    return [
        {k: v for k, v in json.loads(ln).items() if k != "seconds"}
        for ln in (run / "metrics.jsonl").read_text().splitlines()
    ]


def assert_same_as_straight(run: Path, straight: Path) -> None:
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert metrics(run) == metrics(straight)
    drop = {"seconds", "images_per_second", "this_call"}  # wall-clock figures, and where this call began
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in drop}
    assert summary == {k: v for k, v in json.loads((straight / "summary.json").read_text()).items() if k not in drop}
    for a, b in zip(ckpt.checkpoint_dirs(run), ckpt.checkpoint_dirs(straight)):
        assert a.name == b.name
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


# A child process running the real CLI; ``slow_from`` makes each step from then on sleep, ``hang_at``
# blocks one step for good, so the test can act at a known point whatever the machine's load.
CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from genlab.models.vae import VAE
from genlab.cli import main
slow_from, hang_at = int(sys.argv[1]), int(sys.argv[2])
original = VAE.train_step
def train_step(self, nets, opt, x, y, ctx):
    if ctx.step == hang_at:
        time.sleep(120)
    if ctx.step >= slow_from:
        time.sleep(0.2)
    return original(self, nets, opt, x, y, ctx)
VAE.train_step = train_step
sys.exit(main(sys.argv[3:]))
"""


def start_child(args: list[str], slow_from: int = 10**9, hang_at: int = -1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(slow_from), str(hang_at), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"child exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("child made no progress")
        time.sleep(0.02)


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass
    return steps


# -- 1, 2: checkpoints and exact resume -------------------------------------------------------------
def test_checkpoints_hold_everything_and_are_bounded(straight):
    dirs = ckpt.checkpoint_dirs(straight)
    assert [p.name for p in dirs] == ["step-00000028", "step-00000035", "step-00000040"]  # every 7 + the end, 3 kept
    assert not list((straight / "checkpoints").glob(".tmp*"))
    for p in dirs:
        assert {f.name for f in p.iterdir()} == {"model.safetensors", "state.safetensors", "state.json"}
        for f in p.iterdir():
            assert f.read_bytes()[:1] != b"\x80" and f.read_bytes()[:2] != b"PK"  # never a pickle
    meta = json.loads((dirs[-1] / "state.json").read_text())
    assert meta["step"] == STEPS and meta["config"]["train"]["lr"] == 0.001 and meta["steps_per_epoch"] == 20
    model = VAE(PRESETS["seed"].model)
    state = ckpt.load_checkpoint(dirs[-1], model)
    assert set(state["rng"]) >= {"torch", "numpy", "python"} and state["epoch"] == 2
    assert state["optimizers"]["vae"]["state"][0]["exp_avg"].shape == model.encoder[0][0].weight.shape
    # the final checkpoint and the final weights agree (the files differ only in their metadata)
    final, last = ckpt.load_tensors(straight / "model.safetensors"), ckpt.load_tensors(dirs[-1] / "model.safetensors")
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_sigkill_in_second_epoch_then_resume_is_bit_identical(mnist_dir, straight, tmp_path):
    out = tmp_path / "killed"
    # step 32 (0-based) never returns: by then step-28 is saved and step 30 logged (after the checkpoint)
    child = start_child(train_args(mnist_dir, out), hang_at=32)
    wait_for(child, lambda: 30 in logged_steps(out) and (out / "checkpoints" / "step-00000028").is_dir())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3')  # as if the kill had cut a line in half
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert_same_as_straight(out, straight)


# -- crash consistency: SIGKILL anywhere, checkpoint writes included ----------------------------------------
# One Python process imports torch and genlab once, then forks a child per run, so a kill costs a fork,
# not a second of imports. Each child counts what it does in the main thread (training steps, metrics
# lines, fsyncs, renames, deletions: every step of every atomic write and of checkpoint pruning) and
# SIGKILLs itself just before the chosen one: a kill -9 at an exact point whatever the machine's load.
CRASHER = """
import json, os, random, signal, sys, threading, traceback
import torch
torch.set_num_threads(1)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot, scipy.stats, torch._dynamo  # slow imports done once here, not in every child
from torch.utils.tensorboard import SummaryWriter
import genlab.explore, genlab.plots, genlab.sample
import genlab.training.logs as logs
from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.models.vae import VAE

spec = json.loads(sys.argv[1])
MAIN = threading.get_ident()
counter = {"events": 0, "kill_at": 0, "where": None}

def event(what):
    if threading.get_ident() != MAIN:  # TensorBoard's writer thread: its timing is not deterministic
        return
    counter["events"] += 1
    if counter["events"] == counter["kill_at"]:
        inside = any(f.name == "save_checkpoint" for f in traceback.extract_stack())
        with open(counter["where"], "w") as f:
            json.dump({"event": what, "in_checkpoint_write": inside}, f)
        os.kill(os.getpid(), signal.SIGKILL)

def counted(what, fn):
    def wrapper(*args, **kwargs):
        event(what)
        return fn(*args, **kwargs)
    return wrapper

for name in ("fsync", "replace", "unlink", "rmdir"):
    setattr(os, name, counted(name, getattr(os, name)))
VAE.train_step = counted("step", VAE.train_step)
logs.append_jsonl = counted("metrics line", logs.append_jsonl)

def run(args, kill_at, log):
    where = log + ".kill"
    pid = os.fork()
    if pid == 0:
        counter.update(events=0, kill_at=kill_at, where=where)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1), os.dup2(fd, 2)
        try:
            code = main(args)
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush(), sys.stderr.flush()
        with open(log + ".events", "w") as f:
            f.write(str(counter["events"]))
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, status
        with open(where) as f:
            return {"killed": json.load(f)}
    with open(log + ".events") as f:
        return {"exit": os.WEXITSTATUS(status), "events": int(f.read())}

def go_on(out):
    # as a user would: resume from a checkpoint if one was completed, else start the run again
    if ckpt.checkpoint_dirs(out):
        return ["train", "--resume", out, "--quiet"]
    return spec["train"] + ["--out", out, "--overwrite"]

logs_dir = spec["logs"]
reference = run(spec["train"] + ["--out", spec["reference"]], 0, f"{logs_dir}/reference")
assert reference.get("exit") == 0, reference
total = reference["events"]
rng = random.Random(spec["seed"])
n = spec["attempts"]
report = {"events": total, "attempts": []}
for i in range(n):
    out = f"{spec['runs']}/{i}"
    first = rng.randint(i * total // n + 1, (i + 1) * total // n)  # spread over the whole run
    again = rng.randint(1, total // 2)  # then kill the continuation too, if it gets that far
    log = f"{logs_dir}/{i}"
    steps = [run(spec["train"] + ["--out", out], first, log)]
    steps.append(run(go_on(out), again, log))
    steps.append(run(go_on(out), 0, log))
    report["attempts"].append({"out": out, "kills": [first, again], "results": steps, "log": log})
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks a prepared process per run")
def test_sigkill_anywhere_then_resume_is_bit_identical(mnist_dir, straight, tmp_path):
    """Kill -9 a training at 16 points spread over a whole run (a fixed seed picks them; the
    continuation is killed again), checkpoint writes and pruning included, then continue it as a user
    would (--resume, or start again before any checkpoint): every time the final weights, metrics.jsonl,
    summary and checkpoints equal the uninterrupted run's, no checkpoint is ever damaged (none is
    skipped), and no half-written file is left behind."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "runs").mkdir()
    spec = {
        "train": train_args(mnist_dir, tmp_path / "unused")[:-2],  # without --out
        "reference": str(tmp_path / "reference"),
        "runs": str(tmp_path / "runs"),
        "logs": str(tmp_path / "logs"),
        "seed": 20240611,
        "attempts": 8,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, json.dumps(spec)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert_same_as_straight(tmp_path / "reference", straight)  # the counted run is the straight run
    kills = [r["killed"] for a in report["attempts"] for r in a["results"] if "killed" in r]
    assert len(kills) >= 12, report
    assert sum(k["in_checkpoint_write"] for k in kills) >= 4, kills  # some inside checkpoint writes
    names = {p.relative_to(straight) for p in straight.rglob("*") if "tensorboard" not in p.parts}
    for attempt in report["attempts"]:
        run = Path(attempt["out"])
        assert attempt["results"][-1].get("exit") == 0, attempt
        assert_same_as_straight(run, straight)
        assert {p.relative_to(run) for p in run.rglob("*") if "tensorboard" not in p.parts} == names, attempt
        output = Path(attempt["log"]).read_text()
        assert "warning: skipping damaged checkpoint" not in output and "Traceback" not in output, output


def test_sigterm_checkpoints_exits_130_and_resumes_exactly(mnist_dir, straight, tmp_path):
    out = tmp_path / "stopped"
    child = start_child(train_args(mnist_dir, out), slow_from=10)
    wait_for(child, lambda: 10 in logged_steps(out))
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"genlab train --resume {out}" in lines[0] and "signal 15" in lines[0], err
    step = int(lines[0].split("at step ")[1].split(";")[0])
    # step 10 when the signal lands between logging step 10 and the loop's signal check (a loaded machine)
    assert 10 <= step < STEPS
    assert ckpt.checkpoint_dirs(out)[-1].name == f"step-{step:08d}"
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert_same_as_straight(out, straight)


@pytest.mark.parametrize("times", [1, 2])
def test_sigint_in_process(mnist_dir, tmp_path, monkeypatch, capsys, times):
    """Ctrl-C finishes the step and checkpoints it; a second Ctrl-C stops at once, without one."""
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        if ctx.step == 9:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(VAE, "train_step", train_step)
    out = tmp_path / "ctrl-c"
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a shell's background job
    assert main(train_args(mnist_dir, out)) == 130
    err = capsys.readouterr().err.strip()
    names = [p.name for p in ckpt.checkpoint_dirs(out)]
    if times == 1:
        assert "signal 2 at step 10" in err and "--resume" in err and names == ["step-00000007", "step-00000010"]
    else:
        assert err == "genlab: interrupted" and names == ["step-00000007"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_resume_of_a_finished_run_touches_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_resume_extends_a_finished_run(run_copy, capsys):
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--max-steps", "45", "--quiet"]) == 0
    assert json.loads((run_copy / "config.json").read_text())["train"]["max_steps"] == 45
    assert logged_steps(run_copy)[-2:] == [40, 45]
    assert ckpt.checkpoint_dirs(run_copy)[-1].name == "step-00000045"


def test_resume_refuses_other_settings(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["train"]["lr"] = 0.01  # valid, but not the run the checkpoint belongs to
    (run_copy / "config.json").write_text(json.dumps(config))
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(run_copy) == before
    assert main(["train", "--resume", str(run_copy), "--lr", "0.5"]) == 2
    assert "--lr cannot change a run being resumed" in capsys.readouterr().err


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed(run_copy, capsys):
    """A checkpoint written by an older genlab lacks settings added since; they mean their defaults."""
    config = json.loads((run_copy / "config.json").read_text())
    for key in ("prior", "pseudo_inputs", "iw_samples"):
        del config["model"][key]
    (run_copy / "config.json").write_text(json.dumps(config))
    for state in run_copy.glob("checkpoints/*/state.json"):
        meta = json.loads(state.read_text())
        for key in ("prior", "pseudo_inputs", "iw_samples"):
            del meta["config"]["model"][key]
        state.write_text(json.dumps(meta))
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--max-steps", "45", "--quiet"]) == 0
    assert logged_steps(run_copy)[-1] == 45
    last = ckpt.checkpoint_dirs(run_copy)[-1] / "state.json"
    meta = json.loads(last.read_text())
    meta["config"]["model"]["prior"] = "vamp"  # a real difference is still refused
    last.write_text(json.dumps(meta))
    assert main(["train", "--resume", str(run_copy), "--epochs", "4", "--quiet"]) == 2
    assert "model.prior" in capsys.readouterr().err


def stop_by_the_clock_then_resume(mnist_dir, out, monkeypatch, *extra: str) -> None:
    """Train until a fake clock (one second per read) passes --max-minutes, then resume without it."""
    clock = iter(range(10**6))
    monkeypatch.setattr("genlab.training.loop.time.perf_counter", lambda: next(clock) * 1.0)
    assert main(train_args(mnist_dir, out, *extra, "--max-minutes", "0.2")) == 0  # 12 "seconds"
    done = ckpt.checkpoint_dirs(out)[-1]
    assert 0 < int(done.name[5:]) < STEPS and (out / "model.safetensors").is_file()
    monkeypatch.undo()
    config = json.loads((out / "config.json").read_text())
    config["train"]["max_minutes"] = None
    (out / "config.json").write_text(json.dumps(config))  # allowed: it only says when to stop
    assert main(["train", "--resume", str(out), "--quiet"]) == 0


def test_max_minutes_stops_at_a_checkpoint_and_resumes(mnist_dir, straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "budget"
    stop_by_the_clock_then_resume(mnist_dir, out, monkeypatch)
    assert "--max-minutes" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


# -- 4: divergence ----------------------------------------------------------------------------------------
def nan_at(monkeypatch, bad_step: int) -> None:
    """Make optimiser step ``bad_step`` (1-based) see a NaN batch: NaN loss, NaN gradients."""
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        if ctx.step + 1 == bad_step:
            x = torch.full_like(x, float("nan"))
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(VAE, "train_step", train_step)


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch, capsys):
    nan_at(monkeypatch, 17)
    out = tmp_path / "nan"
    assert main(train_args(mnist_dir, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step 17" in err and "step-00000014" in err, err
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-00000007", "step-00000014"]
    weights = ckpt.load_tensors(ckpt.checkpoint_dirs(out)[-1] / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (out / "model.safetensors").exists()
    assert all(s < 17 for s in logged_steps(out))


def test_weights_turning_infinite_stop_the_run_at_that_step(mnist_dir, tmp_path, monkeypatch, capsys):
    """A finite loss with a weight made inf by the update (an overflowing step): caught at that step."""
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        logs = original(self, nets, opt, x, y, ctx)
        if ctx.step + 1 == 17:
            with torch.no_grad():
                next(self.parameters()).view(-1)[5] = float("inf")
        return logs

    monkeypatch.setattr(VAE, "train_step", train_step)
    out = tmp_path / "inf"
    assert main(train_args(mnist_dir, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights became NaN or inf at step 17" in err, err
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-00000007", "step-00000014"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_weight_check_sees_any_non_finite_weight_and_no_finite_one(bad):
    from genlab.training.loop import _float_params, _weights_finite

    model = VAE(PRESETS["mlp"].model)
    with torch.no_grad():
        if bad is None:  # finite, but every sum of them overflows float32: must still pass
            for p in model.parameters():
                p.fill_(3e38)
        else:
            list(model.parameters())[-1].view(-1)[-1] = bad
    assert _weights_finite(_float_params(model)) is (bad is None)


def test_on_nonfinite_skip_drops_the_bad_step(mnist_dir, tmp_path, monkeypatch, capsys):
    nan_at(monkeypatch, 17)
    out = tmp_path / "skip"
    assert main(train_args(mnist_dir, out, "--on-nonfinite", "skip")) == 0
    assert "1 of 40 steps" in capsys.readouterr().err
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in lines)  # finite: the skipped step is not averaged in
    assert lines[-1]["skipped_steps"] == 1
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_grad_clip_limits_the_update(mnist_dir, straight, tmp_path):
    torch.manual_seed(0)
    start = VAE(PRESETS["seed"].model).state_dict()

    def moved(run: Path) -> float:
        end = ckpt.load_tensors(run / "model.safetensors")
        return max(float((end[k] - start[k]).abs().max()) for k in start)

    out = tmp_path / "clipped"
    assert main(train_args(mnist_dir, out, "--max-steps", "5", "--grad-clip", "1e-12")) == 0
    assert json.loads((out / "config.json").read_text())["train"]["grad_clip"] == 1e-12
    # Adam divides by the gradient's scale; only a norm far below its eps (1e-8) shrinks the step
    assert moved(out) < 1e-5 < 1e-3 < moved(straight)


# -- 5: hostile and bad input ---------------------------------------------------------------------------
def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("genlab: error:"), err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("train", "colour", 1, "unknown key(s) colour"),
        ("train", "lr", -1.0, "train.lr"),
        ("train", "batch_size", 0, "train.batch_size"),
        ("model", "latent_dim", 0, "latent_dim"),
        ("train", "epochs", "ten", "epochs"),
        ("data", "dataset", "cifar", "cifar"),
        (None, "family", "flow", "flow"),
    ],
)
def test_bad_config_json_on_resume_and_sample(run_copy, tmp_path, capsys, section, key, value, words):
    config = json.loads((run_copy / "config.json").read_text())
    (config[section] if section else config)[key] = value
    (run_copy / "config.json").write_text(json.dumps(config))
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy)]) == 2
    one_line_error(capsys, words)
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys, words)
    assert snapshot(run_copy) == before and not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_damaged_config_json(run_copy, tmp_path, capsys, content):
    (run_copy / "config.json").write_bytes(content)
    assert main(["train", "--resume", str(run_copy)]) == 2
    one_line_error(capsys, "config.json")
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys, "config.json")


def test_debug_shows_the_traceback(run_copy):
    (run_copy / "config.json").write_text("{")
    with pytest.raises(GenlabError):
        main(["--debug", "train", "--resume", str(run_copy)])


def save_other_model(path: Path, **config) -> None:
    ckpt.save_tensors(path, VAE(VAEConfig(**config)).state_dict())


@pytest.mark.parametrize(
    "config",
    [dict(arch="conv", conv_channels=(32, 64), latent_dim=32), dict(hidden=(64,), latent_dim=3, likelihood="mse")],
)
def test_weights_of_another_architecture(run_copy, tmp_path, capsys, config):
    save_other_model(run_copy / "model.safetensors", **config)
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys, "do not fit this model's architecture")
    for checkpoint in ckpt.checkpoint_dirs(run_copy):  # all of them: resuming falls back past a damaged one
        save_other_model(checkpoint / "model.safetensors", **config)
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "3"]) == 2
    err = one_line_error(capsys, "no intact checkpoint", "do not fit this model's architecture")
    assert all(name in err for name in ("step-00000028", "step-00000035", "step-00000040"))
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    "convert",
    [
        lambda t: t.double().fill_(1e300),  # finite in float64, inf once cast to the model's float32
        lambda t: t.to(torch.int32),
        lambda t: t.bool(),
        lambda t: t.to(torch.complex64),
    ],
)
def test_weights_of_another_dtype_are_refused_not_cast(run_copy, tmp_path, capsys, convert):
    path = run_copy / "model.safetensors"
    weights = load_file(path)
    name = next(iter(weights))
    weights[name] = convert(weights[name])
    ckpt.save_tensors(path, weights)
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys, f"{name}: file ")
    assert not (tmp_path / "s.npy").exists()


def test_a_gan_run_from_genlab_0_1_still_loads(mnist_dir, tmp_path):
    """Older GAN runs stored the progress batch as buffers (fixed_z, real_diversity): dropped on load."""
    out = tmp_path / "gan"
    assert (
        main(
            [
                "train",
                "gan",
                "--preset",
                "seed",
                "--data-dir",
                str(mnist_dir),
                "--split",
                "test",
                "--max-steps",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    weights = load_file(out / "model.safetensors")
    assert not {"fixed_z", "real_diversity"} & set(weights)
    weights |= {"fixed_z": torch.zeros(64, 100), "real_diversity": torch.ones(())}
    ckpt.save_tensors(out / "model.safetensors", weights)
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    weights["not_a_weight"] = torch.zeros(1)  # anything else unexpected is still refused
    ckpt.save_tensors(out / "model.safetensors", weights)
    assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / "t.npy")]) == 2


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_named_model_safetensors_is_refused_unexecuted(run_copy, tmp_path, capsys, writer):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists(), "the payload must work, or the test proves nothing"
    marker = tmp_path / "code-ran"
    for target in (run_copy / "model.safetensors", *(p / "model.safetensors" for p in ckpt.checkpoint_dirs(run_copy))):
        if writer == "torch.save":
            torch.save({"encoder.0.0.weight": Payload(marker)}, target)
        else:
            target.write_bytes(pickle.dumps({"w": Payload(marker)}))
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys, "pickle", "never loads")
    assert main(["train", "--resume", str(run_copy), "--epochs", "3"]) == 2
    one_line_error(capsys, "pickle")
    assert not marker.exists()


def test_run_directory_with_missing_files(run_copy, tmp_path, capsys):
    out = str(tmp_path / "s.npy")
    (run_copy / "model.safetensors").unlink()
    assert main(["sample", str(run_copy), "--out", out, "--quiet"]) == 0  # falls back to the newest checkpoint
    shutil.rmtree(run_copy / "checkpoints")
    assert main(["sample", str(run_copy), "--out", out, "--overwrite"]) == 2
    one_line_error(capsys, "no model.safetensors and no checkpoint")
    assert main(["train", "--resume", str(run_copy)]) == 2
    one_line_error(capsys, "no checkpoint to resume from")
    (run_copy / "config.json").unlink()
    assert main(["sample", str(run_copy), "--out", out, "--overwrite"]) == 2
    one_line_error(capsys, "config.json", "no such file")
    assert main(["train", "--resume", str(run_copy)]) == 2
    one_line_error(capsys, "config.json")
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "no such run directory")


def test_damaged_checkpoint_state(run_copy, capsys):
    for checkpoint in ckpt.checkpoint_dirs(run_copy):
        meta = json.loads((checkpoint / "state.json").read_text())
        meta["state"] = {"__dict__": [["rng", 5]]}
        (checkpoint / "state.json").write_text(json.dumps(meta))
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "3"]) == 2
    one_line_error(capsys, "step-00000040/state.json: no optimiser states", "step-00000028")
    assert snapshot(run_copy) == before


# -- a damaged newest checkpoint: resuming falls back to the newest intact one ------------------------------
def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)  # no writer: reading it would wait forever


def _edit_state(checkpoint: Path, **changes) -> None:
    meta = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**meta, **changes}))


DAMAGE = {
    "state.safetensors missing": (lambda c: (c / "state.safetensors").unlink(), "state.safetensors: file is missing"),
    "state.json missing": (lambda c: (c / "state.json").unlink(), "state.json: file is missing"),
    "model.safetensors a FIFO": (
        lambda c: _fifo(c / "model.safetensors"),
        "model.safetensors: cannot read the checkpoint file: it is a named",
    ),
    "state.safetensors a FIFO": (
        lambda c: _fifo(c / "state.safetensors"),
        "state.safetensors: cannot read the checkpoint file: it is a named",
    ),
    "model.safetensors padded to 40 GB": (
        lambda c: os.truncate(c / "model.safetensors", 40 * 2**30),  # sparse: no disk used
        "header accounts for",
    ),
    "state.json cut short": (
        lambda c: (c / "state.json").write_bytes((c / "state.json").read_bytes()[:200]),
        "state.json: unreadable",
    ),
    "step 10**12": (lambda c: _edit_state(c, step=10**12), "records step 1000000000000, but its folder is"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_falls_back_past_a_damaged_newest_checkpoint(run_copy, straight, capsys, damage):
    """The newest checkpoint lost a file (or holds a FIFO, a padded file, a forged step): resuming warns in one
    line, continues from the one before, bit-identically, and moves the damaged one out of the way."""
    spoil, words = DAMAGE[damage]
    spoil(run_copy / "checkpoints" / "step-00000040")
    assert main(["train", "--resume", str(run_copy), "--quiet"]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "checkpoint" in ln]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: skipping damaged checkpoint step-00000040 (") and words in warnings[0]
    assert warnings[0].endswith("resuming from step-00000035 instead")
    assert_same_as_straight(run_copy, straight)  # step-00000040 written again, as in the straight run
    assert (run_copy / "checkpoints" / ".damaged-step-00000040").is_dir()
    assert main(["train", "--resume", str(run_copy)]) == 0  # the damaged one no longer stands in the way
    assert "warning: skipping" not in capsys.readouterr().err


def test_a_checkpoint_beyond_its_runs_plan_is_refused(run_copy, capsys):
    """state.json claiming step 10**12 in a folder so named: the run planned 40 steps (2 epochs of 20)."""
    forged = run_copy / "checkpoints" / f"step-{10**12:08d}"
    shutil.copytree(ckpt.checkpoint_dirs(run_copy)[-1], forged)
    _edit_state(forged, step=10**12)
    for real in ckpt.checkpoint_dirs(run_copy)[:-1]:
        shutil.rmtree(real)
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "3"]) == 2
    one_line_error(capsys, "records step 1000000000000, beyond the 40 steps its run planned")
    assert snapshot(run_copy) == before


def test_fifos_for_every_checkpoint_file_never_hang_a_resume(run_copy, capsys):
    for i, checkpoint in enumerate(ckpt.checkpoint_dirs(run_copy)):
        _fifo(checkpoint / ("model.safetensors", "state.safetensors", "state.json")[i])
    _fifo(run_copy / "summary.json")
    child = subprocess.run(  # in a child process, so that a hang is a timeout, not a stuck test run
        [sys.executable, "-m", "genlab", "train", "--resume", str(run_copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 2, child.stderr
    err = child.stderr.strip()
    assert len(err.splitlines()) == 1 and "no intact checkpoint" in err and err.count("is a named pipe") == 3, err


def test_what_a_killed_claim_leaves_is_debris_not_a_run(mnist_dir, tmp_path, capsys):
    """A kill between creating and deleting the writability probe, or in the middle of writing config.json,
    leaves .write-test or .config.json.XXXX.tmp beside the lock file: the next run clears them. In a folder
    genlab never claimed (no lock file) a .tmp file is the user's, and the folder is refused, untouched."""
    out = tmp_path / "run"
    out.mkdir()
    for name in (LOCK_FILE, ".write-test", ".config.json.k2j4x.tmp"):
        (out / name).touch()
    assert main(train_args(mnist_dir, out, "--max-steps", "1")) == 0
    assert not (out / ".write-test").exists() and not (out / ".config.json.k2j4x.tmp").exists()
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".notes.tmp").write_text("keep me")
    assert main(train_args(mnist_dir, mine, "--max-steps", "1")) == 2
    one_line_error(capsys, "already holds files")
    assert main(train_args(mnist_dir, mine, "--max-steps", "1", "--overwrite")) == 2
    one_line_error(capsys, "not a genlab run directory")
    assert [p.name for p in mine.iterdir()] == [".notes.tmp"] and (mine / ".notes.tmp").read_text() == "keep me"


def test_output_that_cannot_be_written(mnist_dir, run_copy, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(train_args(mnist_dir, blocker / "run")) == 2  # root ignores chmod; a file in the path stops anyone
    one_line_error(capsys, "cannot write")
    assert main(train_args(mnist_dir, blocker)) == 2
    one_line_error(capsys, "not a directory")
    assert main(["sample", str(run_copy), "--out", str(blocker / "s.npy")]) == 2
    one_line_error(capsys, "cannot write")
    assert blocker.read_text() == "not a folder"


def test_existing_output_is_kept_without_overwrite(run_copy, tmp_path, capsys):
    out = tmp_path / "s.npy"
    out.write_bytes(b"mine")
    assert main(["sample", str(run_copy), "--out", str(out)]) == 2
    one_line_error(capsys, "--overwrite")
    assert out.read_bytes() == b"mine"


def test_full_disk_keeps_the_previous_checkpoint(mnist_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up once the first checkpoint is on it
        if ckpt.checkpoint_dirs(out) and stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(train_args(mnist_dir, out)) == 2
    one_line_error(capsys, "disk is full", "step-00000014")
    monkeypatch.undo()
    [kept] = ckpt.checkpoint_dirs(out)
    assert kept.name == "step-00000007"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    ckpt.load_checkpoint(kept, VAE(PRESETS["seed"].model))  # complete and loadable


def test_full_disk_keeps_the_previous_model_file(run_copy, monkeypatch):
    target = run_copy / "model.safetensors"
    before = target.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(GenlabError, match="disk is full"):
        ckpt.save_tensors(target, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in run_copy.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE) == []


def test_checksum_mismatch_via_cli(mnist_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", data)
    labels = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # still a valid labels file, but not the official one
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    assert main(["train", "vae", "--data-dir", str(data), "--split", "test", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "checksum mismatch")
    assert not (tmp_path / "r").exists()


def test_resume_is_bit_identical_for_a_channels_last_conv_gan(mnist_dir, tmp_path):
    """DCGAN trains in channels_last; its optimiser moments must be restored in that layout."""
    from genlab.cli import main

    def run(out, steps, *extra):
        args = [
            "train",
            "gan",
            "--preset",
            "dcgan",
            "--dataset",
            "mnist",
            "--data-dir",
            str(mnist_dir),
            "--split",
            "test",
            "--batch-size",
            "32",
            "--set",
            "model.width=8",
            "--checkpoint-every",
            "6",
            "--max-steps",
            str(steps),
            "--quiet",
            *extra,
        ]
        assert main(args + ["--out", str(out)] if not extra else args) == 0

    run(tmp_path / "straight", 12)
    run(tmp_path / "stopped", 6)
    assert main(["train", "--resume", str(tmp_path / "stopped"), "--max-steps", "12", "--quiet"]) == 0
    assert (tmp_path / "straight" / "model.safetensors").read_bytes() == (
        tmp_path / "stopped" / "model.safetensors"
    ).read_bytes()


_FAULTS_PER_STEP = """
import resource, sys, torch
from genlab.models.base import adam
from genlab.models.vae import PRESETS, VAE
from genlab.training import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
model = VAE(PRESETS["mlp"].model)
opt = adam(model.parameters(), 1e-3)
x, eps = torch.rand(512, 1, 28, 28), torch.randn(512, 20)
def step():
    opt.zero_grad(set_to_none=True)
    model(x, None, eps)["loss"].backward()
    opt.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    """The trainer's allocator setting: a batch-512 mlp step must not page-fault its activations anew."""

    def faults_per_step(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    default, kept = faults_per_step("default"), faults_per_step("keep")
    assert default > 100, default  # glibc's default trims and re-maps the 1.6 MB activations each step
    assert kept < default / 10, (kept, default)  # what remains is not the activations (~400 pages)


# -- 5: learning-rate schedules ---------------------------------------------------------------------------
def test_cosine_schedule_with_warmup_sets_each_steps_rate(mnist_dir, tmp_path, monkeypatch):
    """The rate Adam uses at step s is lr * min(1, (s+1)/warmup) * (1 + cos(pi s / total)) / 2, logged as such."""
    seen = []
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        seen.append(opt["vae"].param_groups[0]["lr"])
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(VAE, "train_step", train_step)
    out = tmp_path / "cos"
    assert (
        main(
            train_args(
                mnist_dir, out, "--lr", "0.01", "--lr-schedule", "cosine", "--warmup-steps", "4", "--log-every", "1"
            )
        )
        == 0
    )
    expected = [0.01 * min(1, (s + 1) / 4) * (1 + math.cos(math.pi * s / STEPS)) / 2 for s in range(STEPS)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert seen[3] == pytest.approx(0.01 * (1 + math.cos(math.pi * 3 / STEPS)) / 2)  # warm-up over
    assert 0 < seen[-1] < 1e-4  # the last step's rate, nearly 0
    assert [m["lr"] for m in metrics(out)] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_linear_schedule_scales_both_gan_rates(mnist_dir, tmp_path, monkeypatch):
    """Each optimiser keeps its own base rate: D's lr * d_lr_mult decays by the same factor as G's."""
    from genlab.models.gan import GAN

    seen = []
    original = GAN.train_step

    def train_step(self, nets, opt, x, y, ctx):
        seen.extend([opt["generator"].param_groups[0]["lr"], opt["discriminator"].param_groups[0]["lr"]])
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(GAN, "train_step", train_step)
    assert (
        main(
            [
                "train",
                "gan",
                "--preset",
                "seed",
                "--dataset",
                "mnist",
                "--data-dir",
                str(mnist_dir),
                "--split",
                "test",
                "--batch-size",
                "500",
                "--epochs",
                "1",
                "--lr",
                "0.001",
                "--lr-schedule",
                "linear",
                "--set",
                "model.d_lr_mult=4",
                "--out",
                str(tmp_path / "gan"),
                "--quiet",
            ]
        )
        == 0
    )
    expected = [rate * (1 - s / 20) for s in range(20) for rate in (0.001, 0.004)]  # (G, D) at each step
    assert seen == pytest.approx(expected, rel=1e-12)


def test_scheduled_run_stopped_by_the_clock_resumes_bit_identical(mnist_dir, straight, tmp_path, monkeypatch):
    """The schedule is a function of the step, so a resumed run takes exactly the straight run's rates."""
    schedule = ("--lr-schedule", "cosine", "--warmup-steps", "6")
    assert main(train_args(mnist_dir, tmp_path / "straight", *schedule)) == 0
    out = tmp_path / "budget"
    stop_by_the_clock_then_resume(mnist_dir, out, monkeypatch, *schedule)
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "straight" / "model.safetensors").read_bytes()
    # and the schedule did change the weights: ``straight`` is the same run at a constant rate
    assert (straight / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()


def test_time_clock_decays_the_rate_over_max_minutes_and_resumes_down_the_same_curve(
    mnist_dir, tmp_path, monkeypatch, capsys
):
    """--lr-clock time: step s takes lr * (1 + cos(pi * t / budget)) / 2, t the training seconds before it
    (a fake clock: one second per step), and the run ends with the budget, not the planned 60 steps."""
    seen, now = [], [0.0]
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        seen.append(opt["vae"].param_groups[0]["lr"])
        now[0] += 1.0
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(VAE, "train_step", train_step)
    monkeypatch.setattr("genlab.training.loop.time.perf_counter", lambda: now[0])
    out = tmp_path / "timed"
    clock = ("--lr", "0.01", "--lr-schedule", "cosine", "--lr-clock", "time", "--epochs", "3")
    assert main(train_args(mnist_dir, out, *clock, "--max-minutes", "0.5")) == 0  # 30 "seconds"

    def rate(s, budget):  # step s starts after s "seconds" of training
        return 0.01 * (1 + math.cos(math.pi * min(s / budget, 1))) / 2

    assert seen == pytest.approx([rate(s, 30) for s in range(31)], rel=1e-12, abs=1e-15)  # after the 31st, t > 30
    assert logged_steps(out)[-1] == 31 and ckpt.checkpoint_dirs(out)[-1].name == "step-00000031"
    weights = (out / "model.safetensors").read_bytes()

    assert main(["train", "--resume", str(out)]) == 0  # the budget is spent: nothing to train
    assert "nothing to do" in capsys.readouterr().err
    assert len(seen) == 31 and (out / "model.safetensors").read_bytes() == weights

    assert main(["train", "--resume", str(out), "--max-minutes", "0.75", "--quiet"]) == 0  # 45 "seconds" in all
    assert seen[31:] == pytest.approx([rate(s, 45) for s in range(31, 46)], rel=1e-12, abs=1e-15)  # stretched
    assert logged_steps(out)[-1] == 46 and json.loads((out / "summary.json").read_text())["steps"] == 46


@pytest.mark.parametrize(
    "flags, expected",
    [({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), ({"avx512f", "avx2"}, "fp32"), (set(), "fp32")],
)
def test_precision_auto_autocasts_only_where_the_cpu_has_bf16(mnist_dir, tmp_path, monkeypatch, flags, expected):
    autocast = []
    original = VAE.train_step

    def train_step(self, nets, opt, x, y, ctx):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return original(self, nets, opt, x, y, ctx)

    monkeypatch.setattr(VAE, "train_step", train_step)
    monkeypatch.setattr("genlab.device._cpu_flags", lambda: flags)
    out = tmp_path / "auto"
    assert main(train_args(mnist_dir, out, "--precision", "auto", "--epochs", "1", "--device", "cpu")) == 0
    assert autocast == [expected == "bf16"] * 20
    assert json.loads((out / "summary.json").read_text())["precision"] == expected
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "auto"  # resolved per machine


# -- one writer per run directory --------------------------------------------------------------------
def test_two_trainings_into_one_out_never_mix(mnist_dir, tmp_path):
    """Two real processes started together on one --out: one trains, the other is refused with one line
    and writes nothing, so config, weights and metrics all come from the same run (seeds 5 and 6)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    for attempt in range(3):
        out = tmp_path / f"race{attempt}"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "genlab",
                    *train_args(mnist_dir, out, "--seed", str(seed), "--max-steps", "30", "--quiet"),
                ],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed in (5, 6)
        ]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        winner = 5 + [code for code, _ in results].index(0)
        loser_err = next(err for code, err in results if code == 2)
        # refused while the other trains, or (if it finished first) because the folder holds its run
        assert "is being written by another genlab process" in loser_err or "already holds files" in loser_err
        assert len(loser_err.strip().splitlines()) == 1, loser_err
        assert json.loads((out / "config.json").read_text())["train"]["seed"] == winner
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps))  # one run's lines, not two interleaved


def test_resume_of_a_run_being_written_is_refused(run_copy, capsys):
    from genlab.runs import RunLock

    lock = RunLock(run_copy).acquire()  # another writer, as far as this process's resume can tell
    try:
        before = snapshot(run_copy)
        assert main(["train", "--resume", str(run_copy), "--epochs", "3"]) == 2
        one_line_error(capsys, "is being written by another genlab process", f"pid {os.getpid()}")
        assert snapshot(run_copy) == before
    finally:
        lock.release()
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--quiet"]) == 0  # free again


def test_overwrite_keeps_the_old_run_until_the_new_one_has_started(run_copy, mnist_dir, monkeypatch, capsys):
    from genlab.training import Trainer

    before = snapshot(run_copy)

    def failing_build(self):
        raise GenlabError("simulated failure while building the new run")

    monkeypatch.setattr(Trainer, "_build", failing_build)
    assert main(train_args(mnist_dir, run_copy, "--seed", "9", "--overwrite")) == 2
    one_line_error(capsys, "simulated failure")
    assert snapshot(run_copy) == before  # the old run is back, byte for byte
    assert not (run_copy / ".replaced").exists()
    monkeypatch.undo()
    assert main(train_args(mnist_dir, run_copy, "--seed", "9", "--overwrite", "--max-steps", "3")) == 0
    assert json.loads((run_copy / "config.json").read_text())["train"]["seed"] == 9
    assert not (run_copy / ".replaced").exists()


@pytest.mark.parametrize(
    "flags,words",
    [
        (["--latent-dim", "1000000000000"], "more than this machine's"),
        (["--set", "model.hidden=[1000000000000]"], "more than this machine's"),
        (["--set", "model.image_shape=[1,32,32]"], "set model.image_shape to [1, 28, 28]"),
    ],
)
def test_impossible_models_fail_before_anything_is_written(mnist_dir, tmp_path, capsys, flags, words):
    out = tmp_path / "never"
    assert main(train_args(mnist_dir, out, *flags)) == 2
    one_line_error(capsys, words)
    assert not out.exists()
