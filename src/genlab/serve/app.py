"""The explorer's web app: a static page and a small JSON API over :class:`RunExplorer` objects.

Routes (``{run}`` is one of the names the server was started with; nothing else is looked up):

    GET  /                               the page (index.html, app.js, style.css from the package)
    GET  /api/runs                       [{name, title}]
    GET  /api/runs/{run}                 map, sliders, which panels are available and why not
    GET  /api/runs/{run}/panel           preset, training curves, sample grid, evaluation
    GET  /api/runs/{run}/files/{name}    one of the run's pictures (a fixed list of names)
    GET  /api/runs/{run}/points/{i}      a test image on the map: its latent and the image
    POST /api/runs/{run}/decode          {"z": [...] or [[...], ...], "label": int} -> PNG data URLs
    POST /api/runs/{run}/prior           {"n": int, "seed": int} -> draws from p(z)
    POST /api/runs/{run}/interpolate     {"a", "b", "steps", "mode", "label"} -> decoded path
    POST /api/runs/{run}/encode?label=   a PNG's bytes -> reconstruction, map point, likelihood

Every refusal is a 4xx with ``{"error": "..."}``. Decode requests that arrive while a decode
runs are decoded together in one batch (:class:`DecodeBatcher`): hovering from several tabs costs
one forward pass per round, not one per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib import resources
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import GenlabError
from .explorer import (
    MAX_INTERP_STEPS,
    MAX_UPLOAD_BYTES,
    RUN_PICTURES,
    RequestError,
    RunExplorer,
    run_panel,
    run_picture,
)

MAX_JSON_BYTES = 1 * 2**20  # 64 latents of a 784-d noise latent fit with room to spare
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Everything the page loads comes from this server; inline code and other origins are refused outright
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"
log = logging.getLogger("genlab.serve")


class DecodeBatcher:
    """Decodes concurrent requests of one run together: those that arrive while a batch runs form the next.

    The model runs in a worker thread (the event loop keeps serving); torch on a CPU gains little from
    running two forward passes at once, and a batch of B latents costs far less than B passes.
    """

    def __init__(self, explorer: RunExplorer):
        self.explorer = explorer
        self._queue: list[tuple[torch.Tensor, torch.Tensor | None, asyncio.Future]] = []
        self._running = False

    async def decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> list[str]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((z, labels, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                z = torch.cat([item[0] for item in batch])
                labels = None if batch[0][1] is None else torch.cat([item[1] for item in batch])  # type: ignore[misc]
                try:
                    images = await run_in_threadpool(self.explorer.decode, z, labels)
                except Exception as e:  # every waiter hears of it; the batcher goes on
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                start = 0
                for zi, _, fut in batch:
                    if not fut.done():  # a client that went away leaves a cancelled future
                        fut.set_result(images[start : start + zi.shape[0]])
                    start += zi.shape[0]
        finally:
            self._running = False


def _static(name: str) -> bytes:
    return resources.files("genlab.serve").joinpath("static").joinpath(name).read_bytes()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it passes ``limit`` bytes (never read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body is {int(declared):,} bytes; at most {limit:,}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body is over {limit:,} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await _read_body(request, MAX_JSON_BYTES)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _int_field(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"{key} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def create_app(explorers: dict[str, RunExplorer], allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app serving ``explorers`` (name -> loaded run).

    ``allowed_hosts``: Host headers accepted (None: any). A server on loopback should list only
    loopback names, so a web page elsewhere cannot reach it by pointing its own domain at 127.0.0.1
    (DNS rebinding).
    """
    batchers = {name: DecodeBatcher(ex) for name, ex in explorers.items()}

    def explorer(request: Request) -> RunExplorer:
        name = request.path_params["run"]
        if name not in explorers:
            raise RequestError(f"no run named {name!r}; this server has: {', '.join(explorers)}", 404)
        return explorers[name]

    async def page(request: Request) -> Response:
        return Response(
            _static("index.html"), media_type=STATIC["index.html"], headers={"Content-Security-Policy": CSP}
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":  # a fixed list: no path from a request reaches the disk
            raise RequestError(f"no static file {name!r}", 404)
        return Response(_static(name), media_type=STATIC[name])

    async def runs(request: Request) -> Response:
        return JSONResponse([{"name": n, "title": f"{ex.run.family}/{ex.run.preset}"} for n, ex in explorers.items()])

    async def info(request: Request) -> Response:
        return JSONResponse(explorer(request).info())

    async def panel(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(run_panel, explorer(request)))

    async def run_file(request: Request) -> Response:
        from ..io import read_bytes_capped

        ex = explorer(request)
        name = request.path_params["name"]
        if name not in RUN_PICTURES:
            raise RequestError(f"{name!r} is not one of the run's pictures ({', '.join(RUN_PICTURES)})", 404)
        path = run_picture(ex.run_dir, name)
        try:
            data = read_bytes_capped(path, 32 * 2**20, "picture") if path is not None else b""
        except GenlabError:
            data = b""
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):  # served as image/png, so it must be one
            raise RequestError(f"this run has no {name}", 404)
        return Response(data, media_type="image/png")

    async def point(request: Request) -> Response:
        return JSONResponse(explorer(request).point(request.path_params["index"]))

    async def decode(request: Request) -> Response:
        ex = explorer(request)
        body = await _json_body(request)
        z = ex.check_latents(body.get("z"))
        labels = ex.check_label(body.get("label"), z.shape[0])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        images = await batchers[ex.name].decode(z, labels)
        return JSONResponse({"images": images, "ms": round((loop.time() - t0) * 1000, 1)})

    async def prior(request: Request) -> Response:
        ex = explorer(request)
        body = await _json_body(request)
        n = _int_field(body, "n", 1, 1, 64)
        seed = _int_field(body, "seed", 0, 0, 2**63 - 1)
        z = await run_in_threadpool(ex.prior_draws, n, seed)
        return JSONResponse({"z": [[round(float(v), 5) for v in row] for row in z]})

    async def interpolate(request: Request) -> Response:
        ex = explorer(request)
        body = await _json_body(request)
        a, b = ex.check_latents(body.get("a"), "a"), ex.check_latents(body.get("b"), "b")
        if a.shape[0] != 1 or b.shape[0] != 1:
            raise RequestError("a and b must each be one latent")
        steps = _int_field(body, "steps", 9, 2, MAX_INTERP_STEPS)
        mode = body.get("mode", "lerp")
        if mode not in ("lerp", "slerp"):
            raise RequestError(f"mode must be lerp or slerp, got {mode!r}")
        labels = ex.check_label(body.get("label"), 1)
        frames = await run_in_threadpool(ex.interpolate, a, b, steps, mode, labels)
        return JSONResponse({"images": frames, "mode": mode})

    async def encode(request: Request) -> Response:
        ex = explorer(request)
        label_text = request.query_params.get("label")
        label: int | None = None
        if label_text is not None:
            if not label_text.isdigit() or len(label_text) > 6:
                raise RequestError(f"label must be a class index, got {label_text!r}")
            label = int(label_text)
        data = await _read_body(request, MAX_UPLOAD_BYTES)
        return JSONResponse(await run_in_threadpool(ex.encode_image, data, label))

    async def request_error(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, RequestError) else 400
        return JSONResponse({"error": exc.message if isinstance(exc, GenlabError) else str(exc)}, status_code=status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("error serving %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/runs", runs),
        Route("/api/runs/{run}", info),
        Route("/api/runs/{run}/panel", panel),
        Route("/api/runs/{run}/files/{name}", run_file),
        Route("/api/runs/{run}/points/{index:int}", point),
        Route("/api/runs/{run}/decode", decode, methods=["POST"]),
        Route("/api/runs/{run}/prior", prior, methods=["POST"]),
        Route("/api/runs/{run}/interpolate", interpolate, methods=["POST"]),
        Route("/api/runs/{run}/encode", encode, methods=["POST"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={GenlabError: request_error, HTTPException: http_error, Exception: server_error},
    )
