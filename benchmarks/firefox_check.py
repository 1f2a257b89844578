"""`genlab serve`'s page in Firefox ESR, driven by ``firefox_check/check.mjs`` (puppeteer-core, WebDriver BiDi).

Trains a tiny VAE, DCGAN and DDPM with the real CLI on MNIST's test split (or takes ``--runs``), starts
``genlab serve`` on a free port, runs the node check against the URL it prints, then stops the server
with Ctrl-C (SIGINT) and checks that it exits 0. Screenshots land in ``--out``. Not part of CI (no node
there); see firefox_check/README.md.

    python benchmarks/firefox_check.py --data-dir ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "firefox_check"
TINY_DDPM = [
    *("--set", "model.channels=8", "--set", "model.channel_mult=[1,2]", "--set", "model.timesteps=100"),
    *("--set", "model.attention=false", "--set", "model.sample_steps=2", "--set", "model.preview_steps=1"),
]
RUNS = {  # a few seconds each: the page is under test, not the models
    "vae": ["vae", "--preset", "mlp", "--max-steps", "200", "--log-every", "20"],
    "gan": ["gan", "--preset", "dcgan", "--max-steps", "20", "--log-every", "5", "--set", "model.width=8"],
    "ddpm": ["ddpm", "--preset", "ddpm", "--max-steps", "6", "--log-every", "2", "--batch-size", "16", *TINY_DDPM],
}


def genlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "genlab", *args]


def train(root: Path, data_dir: str | None) -> list[Path]:
    runs = []
    for name, args in RUNS.items():
        out = root / name
        data = ["--data-dir", data_dir] if data_dir else []
        cmd = genlab("train", *args, "--dataset", "mnist", *data, "--split", "test", "--out", str(out), "--quiet")
        print(f"training {name}: {' '.join(cmd[3:])}", flush=True)
        subprocess.run(cmd, check=True)
        runs.append(out)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", type=Path, help="serve these run directories instead of training three")
    ap.add_argument("--data-dir", help="MNIST folder for the tiny runs (default: genlab's own lookup)")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="screenshots (default firefox_check/out/)")
    ap.add_argument("--firefox", default="/usr/bin/firefox-esr")
    args = ap.parse_args()
    if not (HERE / "node_modules" / "puppeteer-core").is_dir():
        print(f"run `npm ci` in {HERE} first (puppeteer-core, no browser download)", file=sys.stderr)
        return 2
    node = shutil.which("node")
    if node is None:
        print("no node on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="genlab-firefox-") as tmp:
        run_dirs = args.runs or train(Path(tmp), args.data_dir)
        server = subprocess.Popen(
            genlab("serve", *map(str, run_dirs), "--port", "0", "--quiet"), stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline().strip()
            m = re.fullmatch(r"genlab serve: (http://\S+/)", line)
            if m is None:
                print(f"no URL from genlab serve: {line!r}", file=sys.stderr)
                return 1
            print(f"serving {len(run_dirs)} run(s) at {m.group(1)}", flush=True)
            checked = subprocess.run([node, str(HERE / "check.mjs"), m.group(1), str(args.out), args.firefox])
        finally:
            server.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                code = server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
        print(f"genlab serve exited {code} on SIGINT")
        return 1 if checked.returncode or code else 0


if __name__ == "__main__":
    sys.exit(main())
