"""``genlab serve``: explore trained runs' latent spaces in the browser.

The command loads each run once (:class:`genlab.serve.explorer.RunExplorer`), then serves a
static page and a JSON API (:mod:`genlab.serve.app`) with uvicorn. Nothing here is imported by
``genlab --help``: Starlette, uvicorn and torch load only when the command runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from ..errors import GenlabError

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 lets the system pick a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise GenlabError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Connections accepted from this socket inherit TCP_NODELAY. Without it, uvicorn's response body,
    # written after its headers, waited for the browser's delayed ACK: 40 ms on every decode.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise GenlabError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ModuleNotFoundError as e:
        raise GenlabError(
            f"genlab serve needs {e.name}: installing genlab brings it (or pip install {e.name})"
        ) from None
    from ..device import inference_device
    from ..runs import resolve_run_dir
    from .app import create_app
    from .explorer import RunExplorer, unique_names

    run_dirs = [resolve_run_dir(r) for r in args.runs]
    for d in run_dirs:  # every run checked before any is loaded: a typo in the third costs no waiting
        if not d.is_dir():
            raise GenlabError(f"{d}: no such run directory")
        if not (d / "config.json").is_file():
            raise GenlabError(f"{d}: not a genlab run (no config.json)")
    device = inference_device(args.device)
    sock = _bind(args.host, args.port)  # before loading: a taken port or a wrong --host fails at once
    explorers = {}
    try:
        for d, name in zip(run_dirs, unique_names(run_dirs)):
            if not args.quiet:
                print(f"loading {d} ...", file=sys.stderr, flush=True)
            explorers[name] = RunExplorer.load(d, name, device=str(device))
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    loopback = _is_loopback(args.host)
    app = create_app(explorers, allowed_hosts=[*LOOPBACK_NAMES] if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    print(f"genlab serve: http://{shown}:{port}/", flush=True)
    if loopback:
        print("  listening on loopback only: this machine's browsers can open it; --host 0.0.0.0 to share it")
    else:
        print(f"  listening on {host}: anyone who can reach this machine can use it (no authentication)")
    print("  Ctrl-C stops it", flush=True)
    try:  # the socket already listens: a browser that connects now waits in its backlog, not refused
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises Ctrl-C: here it is the way to stop
        pass
    finally:
        sock.close()
    print("genlab serve: stopped", flush=True)
    return 0


def register_cli(subparsers) -> None:
    """Add ``genlab serve`` (picked up by genlab.cli)."""
    from ..argtypes import bounded_int

    p = subparsers.add_parser(
        "serve",
        help="explore runs' latent spaces in the browser",
        description="Start a local web page for one or more runs: hover the latent map to decode, move "
        "the most informative dimensions, interpolate, draw an image and see where it lands. "
        "Works for every model with a latent space; panels a model cannot fill say why.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (`latest`: runs/latest)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=0, help="port (default 0: a free one)")
    p.add_argument("--device", default="auto", help="where the models run (default auto)")
    p.add_argument("--quiet", action="store_true", help="no loading lines")
    p.set_defaults(func=cmd_serve)
