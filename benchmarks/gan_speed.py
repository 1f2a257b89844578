"""Training images/s of each GAN preset, for the current code and an earlier revision, measured in the same run.

    python benchmarks/gan_speed.py                                 # 2ff1051 vs the working tree, 5 presets, 4 rounds
    python benchmarks/gan_speed.py --before HEAD~3 --presets dcgan,hinge-sn --seconds 30
    python benchmarks/gan_speed.py --precision bf16 --threads 2    # both sides in bf16 autocast, 2 threads
    python benchmarks/gan_speed.py --presets dcgan --seconds 4 --rounds 1   # smoke mode (~30 s)

"Before" is ``src/`` of ``--before`` (default 2ff1051, the last commit before the GAN speed work
of issue #20), extracted with ``git archive`` into a temporary folder; "after" is the working
tree's ``src/`` (uncommitted changes included). Every measurement is a fresh Python process with
``PYTHONPATH`` on one of the two and ``--threads`` applied (``OMP_NUM_THREADS`` and
``torch.set_num_threads``; by default torch's own choice). It trains the preset with
:func:`genlab.train`, as ``genlab train gan --preset P`` would, on Fashion-MNIST's 'fit' split
for ``--seconds`` of wall clock, logging every 10 steps, and reads the run's metrics.jsonl:
images/s = optimiser steps x batch size / seconds, between the first line after step 20 (start-up
and the first steps do not count) and the last; a budget too short to get past step 20 (a smoke
run) times from the first line, and says so.

Measurements alternate per round and preset, and the side that goes first swaps each round
(before, after | after, before | ...), so a slow spell of a shared machine or a drift over the
run lands on both sides. Prints, per preset: the median images/s before and after, and the
median of the per-round ratios after/before (each ratio pairs two adjacent measurements), with
torch's version, the thread count, the CPU and the two revisions. Writes every measurement to
``--out`` (default runs/bench-gan-speed/results.json). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BIG, cpu_model, print_table

ROOT = Path(__file__).resolve().parent.parent  # the repository: benchmarks/ and src/ side by side
DEFAULT_BEFORE = "2ff1051"
DEFAULT_PRESETS = "seed,dcgan,cgan,wgan-gp,hinge-sn"
WARM_UP_STEPS = 20  # steps before the timed window: allocator, first Adam step, caches
LOG_EVERY = 10
SIDES = ("before", "after")

# What one child process runs: train one preset with the genlab on PYTHONPATH, print one JSON line.
CHILD = r"""
import json, sys, tempfile
from pathlib import Path

spec = json.loads(sys.argv[1])
import torch

if spec["threads"]:
    torch.set_num_threads(spec["threads"])
import genlab

with tempfile.TemporaryDirectory() as tmp:
    run_dir = Path(tmp) / "run"
    genlab.train("gan", preset=spec["preset"], dataset="fashion-mnist", split="fit", out=run_dir, quiet=True,
                 **spec["settings"])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
logged = [x for x in lines if "seconds" in x]
timed = [x for x in logged if x["step"] > spec["warm_up_steps"]]
if len(timed) < 2:  # a budget too short for the warm-up (a smoke run, a busy machine): time what there is
    timed = logged
if len(timed) < 2:
    raise SystemExit(f"{lines[-1]['step']} steps in the budget, too few to time: raise --seconds")
first, last = timed[0], timed[-1]
batch = config["train"]["batch_size"]
print(json.dumps({
    "genlab_file": genlab.__file__,
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "batch_size": batch,
    "precision": summary.get("precision"),
    "from_step": first["step"],
    "steps": last["step"] - first["step"],
    "seconds": last["seconds"] - first["seconds"],
    "images_per_second": (last["step"] - first["step"]) * batch / (last["seconds"] - first["seconds"]),
}))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def describe_revisions(before: str) -> tuple[str, str]:
    """('2ff1051', 'f29df45 + working tree changes'): what each side of the comparison runs."""
    after = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "src"):
        after += " + working tree changes"
    return git("rev-parse", "--short", before), after


def extract_src(rev: str, dest: Path) -> Path:
    """``src/`` of ``rev``, written under ``dest`` by ``git archive`` (no worktree, no checkout)."""
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {rev} src failed")
    return dest / "src"


def measure(src: Path, preset: str, settings: dict, threads: int | None, cwd: Path) -> dict:
    """One training run in a fresh process on ``src``'s genlab: its images/s, or an error from its stderr."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    spec = {"preset": preset, "settings": settings, "threads": threads, "warm_up_steps": WARM_UP_STEPS}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], env=env, cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # PYTHONPATH must win over the venv's editable install, or both sides would time the same code.
    if not Path(result["genlab_file"]).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"the child imported {result['genlab_file']}, not the genlab under {src}")
    return result


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(rounds: list[dict]) -> dict:
    """Median images/s per side, and the median of the per-round ratios after/before."""
    ips = {side: [r[side]["images_per_second"] for r in rounds if "images_per_second" in r[side]] for side in SIDES}
    ratios = [
        r["after"]["images_per_second"] / r["before"]["images_per_second"]
        for r in rounds
        if "images_per_second" in r["before"] and "images_per_second" in r["after"]
    ]
    return {
        "before_images_per_second": median_or_none(ips["before"]),
        "after_images_per_second": median_or_none(ips["after"]),
        "ratio": median_or_none(ratios),
        "ratios": ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=DEFAULT_BEFORE, help=f"git revision to compare with (default {DEFAULT_BEFORE})")
    ap.add_argument("--presets", default=DEFAULT_PRESETS, help=f"GAN presets (default {DEFAULT_PRESETS})")
    ap.add_argument("--seconds", type=float, default=20.0, help="training budget per measurement (default 20)")
    ap.add_argument("--rounds", type=int, default=4, help="before/after pairs per preset (default 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument(
        "--precision",
        default="preset",
        choices=["preset", "fp32", "bf16"],
        help="each preset's own (default), or this on both sides (bf16: autocast)",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="override every preset's batch size")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: genlab's lookup)")
    ap.add_argument("--out", default="runs/bench-gan-speed/results.json")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be >= 1 and --seconds > 0")

    try:
        before_rev, after_rev = describe_revisions(args.before)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"git: {e.stderr.strip()}") from None
    presets = args.presets.split(",")
    settings: dict = {
        "device": args.device,
        "epochs": BIG,
        "max_minutes": args.seconds / 60,
        "log_every": LOG_EVERY,
        "sample_every": BIG,
        "checkpoint_every": BIG,
    }
    if args.precision != "preset":
        settings["precision"] = args.precision
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    if args.data_dir:
        settings["data_dir"] = os.path.abspath(args.data_dir)

    results: dict[str, list[dict]] = {p: [] for p in presets}
    failed: dict[tuple[str, str], str] = {}  # (preset, side) -> the error: not tried again
    with tempfile.TemporaryDirectory(prefix="gan-speed-") as tmp:
        srcs = {"before": extract_src(args.before, Path(tmp)), "after": ROOT / "src"}
        for i in range(args.rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]
            for preset in presets:
                row: dict = {}
                for side in order:
                    if (preset, side) in failed:
                        row[side] = {"error": failed[preset, side]}
                        continue
                    row[side] = measure(srcs[side], preset, dict(settings), args.threads, Path(tmp))
                    if "error" in row[side]:
                        failed[preset, side] = row[side]["error"]
                    figure = row[side].get("images_per_second")
                    if figure is None:
                        shown = row[side]["error"]
                    else:
                        m = row[side]
                        shown = f"{figure:,.0f} images/s (steps {m['from_step']}-{m['from_step'] + m['steps']})"
                        if m["from_step"] <= WARM_UP_STEPS:
                            shown += f", warm-up steps timed: the budget was too short to skip {WARM_UP_STEPS}"
                    print(f"round {i + 1}/{args.rounds} {preset:<9} {side:<6} {shown}", flush=True)
                results[preset].append(row)

    measured = [m for rows in results.values() for r in rows for m in r.values() if "torch" in m]
    torch_version = measured[0]["torch"] if measured else "?"
    threads = sorted({m["threads"] for m in measured}) or ["?"]
    summary = {p: summarise(rows) for p, rows in results.items()}
    print(
        f"\ntorch {torch_version}, {'/'.join(map(str, threads))} threads, {cpu_model()}, device {args.device}, "
        f"precision: {args.precision}, {args.seconds:g} s per measurement, {args.rounds} rounds\n"
        f"before: {before_rev}   after: {after_rev}\n"
    )

    def fmt(x: float | None, spec: str) -> str:
        return format(x, spec) if x is not None else "-"

    lines = []
    for p in presets:
        s = summary[p]
        rows = results[p]
        batch = next((r[side]["batch_size"] for r in rows for side in SIDES if "batch_size" in r[side]), None)
        precision = "/".join(
            dict.fromkeys(r[side]["precision"] or "?" for r in rows for side in SIDES if "precision" in r[side])
        )
        lines.append(
            f"{p:<10} {fmt(batch, 'd'):>6} {precision or '-':>10} {fmt(s['before_images_per_second'], ',.0f'):>12} "
            f"{fmt(s['after_images_per_second'], ',.0f'):>12} {fmt(s['ratio'], '.2f'):>7}"
        )
    print_table(
        f"{'preset':<10} {'batch':>6} {'precision':>10} {'before im/s':>12} {'after im/s':>12} {'ratio':>7}",
        lines,
        "images/s: median over the rounds; ratio: median of the per-round after/before ratios; "
        "precision: before/after where they differ",
    )
    for (preset, side), error in failed.items():
        print(f"{preset} {side}: {error}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "before": before_rev,
        "after": after_rev,
        "torch": torch_version,
        "threads": threads,
        "cpu": cpu_model(),
        "settings": {**vars(args), "warm_up_steps": WARM_UP_STEPS, "log_every": LOG_EVERY},
        "presets": {p: {**summary[p], "rounds": results[p]} for p in presets},
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
