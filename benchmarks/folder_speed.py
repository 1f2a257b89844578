"""How fast genlab's folder pipeline loads a folder of images: the first load (decoding) and a cached one.

    python benchmarks/folder_speed.py --data /tmp/emoji32                     # 3 rounds, 1 thread
    python benchmarks/folder_speed.py --data /tmp/emoji64 --json runs/bench-folder-speed/emoji64.json
    python benchmarks/folder_speed.py --data PHOTOS --image-size 64 --rounds 5 --threads 2
    python benchmarks/folder_speed.py --data /tmp/emoji32 --rounds 1             # smoke mode (seconds)

(``python benchmarks/make_emoji_dataset.py --out /tmp/emoji32 --size 32`` makes a test folder.)

What is timed is what ``genlab train --dataset folder:PATH`` pays before its first step:
``genlab.data.load_dataset('folder:PATH', split, image_size=..., skip_bad_images=...)`` for the
"train" split and then the "test" split (:mod:`genlab.folders`). Each round runs two fresh Python
processes (imports are not timed, only the two calls):

- **first load**: ``XDG_CACHE_HOME`` points at a new, empty temporary folder, so the cache is
  built from nothing (every file listed, read and sha256-hashed, every header read, every image
  decoded, composited, resized and written into ``<cache>/genlab/datasets/folders/<key>.npy``),
  and the user's own cache (``~/.cache/genlab``) is neither read nor touched;
- **cached load**: the same two calls in another fresh process on the cache the first one built,
  so nothing is memoised in memory: each split lists, reads and hashes every file again to find
  its key, then maps the cache.

Printed per load: images (both splits), seconds (the median over ``--rounds``), images/s, MB of
source files (the folder's .png/.jpg/.jpeg bytes) per second, and where the time went, read by
wrapping genlab.folders' own steps with timers:

- "list": listing the folder tree, and "hash": reading every file, its sha256 and the cache key
  (each split does both, so a load of train + test does them twice);
- "map": reading the cache index and memory-mapping the .npy;
- "decode": the first load's cache build (header pass, decoding, resizing, writing the cache);
- "other": the rest (tensors over the map, the labels).

A cached load maps the pixels without reading them: training pages them in as it goes.

The source files are in the OS page cache after the first read (by this script or whatever made
them), so these are warm-file figures; a cold disk is slower to read and is not measured (dropping
the page cache needs root). ``--threads`` sets ``OMP_NUM_THREADS`` and ``torch.set_num_threads``
in the child processes (decoding itself is Pillow's, one image at a time). The temporary caches
are removed at the end. ``--json FILE`` writes every round and the medians. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cpu_model, print_table

STEPS = ("list", "hash", "map", "decode", "other")

# One child process: time load_dataset for train then test with the cache under spec["cache_home"],
# with genlab.folders' steps wrapped by timers; print one JSON line.
CHILD = r"""
import json, os, sys, time

spec = json.loads(sys.argv[1])
import torch

torch.set_num_threads(spec["threads"])
import PIL
import genlab
import genlab.data as data
import genlab.folders as folders

scan_files = folders._scan  # the unwrapped listing, for the source bytes afterwards
seconds = {"scan": 0.0, "key": 0.0, "read_hash": 0.0, "map": 0.0, "decode": 0.0, "wrap": 0.0}
calls = {"decode": 0}
stack = []  # per active timed call: seconds spent in timed calls inside it (subtracted: exclusive times)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        if calls.get("building"):  # inside the cache build: its time is all "decode"
            return fn(*args, **kwargs)
        stack.append(0.0)
        if name == "decode":
            calls["decode"] += 1
            calls["building"] = True
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            calls["building"] = False
            inner = stack.pop()
            seconds[name] += dt - inner
            if stack:
                stack[-1] += dt
    return wrapper


# load_folder's own time (its exclusive part) is reading each file and hashing it
folders._scan = timed("scan", folders._scan)
folders._cache_key = timed("key", folders._cache_key)
folders._read_cache = timed("map", folders._read_cache)
folders._build = timed("decode", folders._build)
folders.load_folder = timed("read_hash", folders.load_folder)
data._load_folder = timed("wrap", data._load_folder)

name = "folder:" + spec["root"]
options = {"image_size": spec["image_size"], "skip_bad_images": spec["skip_bad_images"]}
split_seconds, images, caches = {}, {}, set()
for split in ("train", "test"):
    t0 = time.perf_counter()
    ds = data.load_dataset(name, split, **options)
    split_seconds[split] = time.perf_counter() - t0
    images[split] = int(ds.images.shape[0])
    caches.add(ds.sources["cache"])
    shape = list(ds.images.shape[1:])
total = sum(split_seconds.values())
root = folders.folder_root(name)
source_bytes = sum((root / rel).stat().st_size for rel, _ in scan_files(root)[0])
steps = {
    "list": seconds["scan"],
    "hash": seconds["key"] + seconds["read_hash"],
    "map": seconds["map"],
    "decode": seconds["decode"],
}
steps["other"] = total - sum(steps.values())
print(json.dumps({
    "seconds": total,
    "split_seconds": split_seconds,
    "steps": steps,
    "timers": seconds,
    "builds": calls["decode"],
    "images": images,
    "shape": shape,
    "source_files": len(scan_files(root)[0]),
    "source_bytes": source_bytes,
    "caches": sorted(caches),
    "genlab_file": genlab.__file__,
    "torch": torch.__version__,
    "pillow": PIL.__version__,
    "threads": torch.get_num_threads(),
}))
"""


def measure(spec: dict, cache_home: Path, threads: int) -> dict:
    """One load (train + test) in a fresh process with ``XDG_CACHE_HOME=cache_home``; exits on an error."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({**spec, "threads": threads})], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"loading {spec['root']} failed:\n{proc.stderr.strip()}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for cache in result["caches"]:  # the user's own cache must never be read or written here
        if not Path(cache).resolve().is_relative_to(cache_home.resolve()):
            raise SystemExit(f"the cache {cache} is not under the temporary {cache_home}: XDG_CACHE_HOME was ignored")
    return result


def summarise(loads: list[dict]) -> dict:
    """Medians over the rounds: seconds, each step's seconds, and the rates they give."""
    first = loads[0]
    n = sum(first["images"].values())
    seconds = statistics.median(x["seconds"] for x in loads)
    return {
        "images": n,
        "seconds": seconds,
        "images_per_second": n / seconds,
        "source_mb_per_second": first["source_bytes"] / 1e6 / seconds,
        "steps": {step: statistics.median(x["steps"][step] for x in loads) for step in STEPS},
        "split_seconds": {s: statistics.median(x["split_seconds"][s] for x in loads) for s in first["split_seconds"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the folder of images (as in --dataset folder:PATH)")
    ap.add_argument("--image-size", type=int, default=None, help="resize and centre-crop to N x N (default: as stored)")
    ap.add_argument("--skip-bad-images", action="store_true", help="leave unreadable files out, as genlab train can")
    ap.add_argument("--rounds", type=int, default=3, help="first + cached load pairs (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads in the children (default 1)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every round and the medians here")
    args = ap.parse_args()
    if args.rounds < 1 or args.threads < 1:
        ap.error("--rounds and --threads must be >= 1")
    root = Path(os.path.abspath(os.path.expanduser(args.data)))
    if not root.is_dir():
        ap.error(f"--data {args.data}: no such folder")
    spec = {"root": str(root), "image_size": args.image_size, "skip_bad_images": args.skip_bad_images}

    rounds = []
    with tempfile.TemporaryDirectory(prefix="folder-speed-") as tmp:
        for i in range(args.rounds):
            cache_home = Path(tmp) / f"round-{i + 1}"  # a new, empty cache every round
            cache_home.mkdir()
            first = measure(spec, cache_home, args.threads)
            cached = measure(spec, cache_home, args.threads)
            if first["builds"] != 1 or cached["builds"] != 0:
                raise SystemExit(
                    f"round {i + 1}: the first load built the cache {first['builds']} time(s) and the cached load "
                    f"{cached['builds']}, not 1 and 0: the measurement is not what it claims"
                )
            rounds.append({"first": first, "cached": cached})
            print(
                f"round {i + 1}/{args.rounds}: first load {first['seconds']:.3f} s, cached {cached['seconds']:.3f} s",
                flush=True,
            )

    summary = {kind: summarise([r[kind] for r in rounds]) for kind in ("first", "cached")}
    info = rounds[0]["first"]
    c, h, w = info["shape"]
    mb = info["source_bytes"] / 1e6
    print(
        f"\n{root}: {info['source_files']} image files ({mb:,.1f} MB) -> {info['images']['train']} train + "
        f"{info['images']['test']} test images of {c}x{h}x{w}"
        f"{f' (--image-size {args.image_size})' if args.image_size else ''}\n"
        f"torch {info['torch']}, Pillow {info['pillow']}, {info['threads']} thread(s), {cpu_model()}, "
        f"Python {platform.python_version()}, {args.rounds} round(s)\n"
    )
    lines = []
    for kind, label in (("first", "first load"), ("cached", "cached load")):
        s = summary[kind]
        steps = "".join(f" {s['steps'][step]:>8.3f}" if s["steps"][step] else f" {'-':>8}" for step in STEPS)
        lines.append(
            f"{label:<12} {s['images']:>7,} {s['seconds']:>8.3f} {s['images_per_second']:>10,.0f} "
            f"{s['source_mb_per_second']:>8,.1f}{steps}"
        )
    print_table(
        f"{'load':<12} {'images':>7} {'seconds':>8} {'images/s':>10} {'MB/s':>8}"
        + "".join(f" {step + ' s':>8}" for step in STEPS),
        lines,
        f"seconds: median over {args.rounds} round(s) of load_dataset train + test in a fresh process "
        "(first: empty cache; cached: the cache the first built); MB/s: source file bytes per second; "
        "list: the folder tree; hash: read and sha256 every file (list and hash: each split); "
        "map: cache index + memory map; "
        "decode: decode, resize and write the cache; other: the rest (steps: medians, so they need not sum)",
    )

    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "folder": str(root),
            "settings": vars(args),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "summary": summary,
            "rounds": rounds,
        }
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
