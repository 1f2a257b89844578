"""Decode round trips of `genlab serve` over real HTTP on loopback, for every VAE and GAN preset.

Each preset's model is built with its initial weights (a decode costs the same trained or not),
served by the real app under uvicorn in a background thread, and asked to decode one latent
``--n`` times by one keep-alive client, the way the page asks while the mouse moves. Prints the
median and 90th percentile round trip per preset, and the server-side decode time.

    python benchmarks/serve_latency.py --n 200
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2
import torch
import uvicorn

from genlab.models import FAMILIES, all_presets, build_model
from genlab.models.base import LatentModel, NoiseLatentModel
from genlab.serve import _bind as serve_socket
from genlab.serve.app import create_app
from genlab.serve.explorer import RunExplorer


def serve(explorers: dict[str, RunExplorer]) -> tuple[uvicorn.Server, str]:
    sock = serve_socket("127.0.0.1", 0)  # the socket `genlab serve` listens on, TCP_NODELAY included
    config = uvicorn.Config(create_app(explorers), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="round trips per preset")
    p.add_argument("--families", default="vae,gan", help=f"comma-separated, of {', '.join(FAMILIES)}")
    args = p.parse_args()
    torch.manual_seed(0)
    explorers = {}
    for family, preset in all_presets():
        if family not in args.families.split(","):
            continue
        model = build_model(family, preset.model).eval()
        if not isinstance(model, LatentModel) or isinstance(model, NoiseLatentModel):
            continue
        run = SimpleNamespace(family=family, preset=preset.name)
        explorers[f"{family}-{preset.name}"] = RunExplorer(f"{family}-{preset.name}", Path("."), model, run)
    server, base = serve(explorers)
    print(f"{'preset':<18} {'latent':>6}  {'median ms':>9}  {'p90 ms':>7}  {'server ms':>9}")
    with httpx2.Client(base_url=base) as client:
        for name, ex in explorers.items():
            label = 0 if ex.model.conditional else None
            for _ in range(10):  # warm-up: first calls pay for allocations and thread start
                client.post(f"/api/runs/{name}/decode", json={"z": [0.0] * ex.latent_dim, "label": label})
            trips, inside = [], []
            for i in range(args.n):
                z = [0.01 * i] * ex.latent_dim
                t0 = time.perf_counter()
                r = client.post(f"/api/runs/{name}/decode", json={"z": z, "label": label})
                trips.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                inside.append(r.json()["ms"])
            p90 = statistics.quantiles(trips, n=10)[-1]
            print(
                f"{name:<18} {ex.latent_dim:>6}  {statistics.median(trips):>9.1f}  {p90:>7.1f}  "
                f"{statistics.median(inside):>9.1f}"
            )
    server.should_exit = True


if __name__ == "__main__":
    main()
