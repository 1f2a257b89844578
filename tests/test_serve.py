"""`genlab serve`: the JSON API (Starlette's TestClient, hostile requests included) and the page in a real
headless Chromium (Playwright driving Debian's /usr/bin/chromium) against a real `genlab serve` process.

The runs are trained here, briefly, on MNIST's test split: a VAE (encoder, likelihood, ranked
latent), a conditional VAE (labels), a DCGAN (a decoder alone) and a toy DDPM (a noise latent: no map,
no sliders, but random z, interpolation, DDIM-inversion encoding and a likelihood bound), so each
capability's panels show.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from genlab.cli import main
from genlab.serve import explorer as explorer_module
from genlab.serve.app import create_app
from genlab.serve.explorer import MAX_UPLOAD_BYTES, REFERENCE_CHUNK, RunExplorer

CHROMIUM = os.environ.get("GENLAB_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_DIR = os.environ.get("GENLAB_SCREENSHOT_DIR")  # keep the browser test's screenshots here


def _train(out: Path, mnist_dir: Path, family: str, preset: str, *flags: str) -> Path:
    args = ["train", family, "--preset", preset, "--dataset", "mnist", "--data-dir", str(mnist_dir)]
    args += ["--split", "test", "--out", str(out), "--quiet", *flags]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def runs(mnist_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    return {
        "vae": _train(root / "vae", mnist_dir, "vae", "mlp", "--max-steps", "40", "--log-every", "10"),
        "cvae": _train(root / "cvae", mnist_dir, "vae", "cvae", "--max-steps", "10"),
        "gan": _train(root / "gan", mnist_dir, "gan", "dcgan", "--max-steps", "3", "--set", "model.width=8"),
    }


# a U-Net of 8 and 16 channels, T = 100, 2 DDIM steps per decode: seconds to train, tens of ms to decode
TINY_DDPM = ["--set", "model.channels=8", "--set", "model.channel_mult=[1,2]", "--set", "model.timesteps=100"]
TINY_DDPM += ["--set", "model.attention=false", "--set", "model.sample_steps=2", "--set", "model.preview_steps=1"]


@pytest.fixture(scope="module")
def ddpm_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve-ddpm") / "ddpm"
    return _train(
        out, mnist_dir, "ddpm", "ddpm", "--max-steps", "4", "--log-every", "2", "--batch-size", "16", *TINY_DDPM
    )


@pytest.fixture(scope="module")
def explorers(runs) -> dict[str, RunExplorer]:
    return {name: RunExplorer.load(path, name, map_points=500) for name, path in runs.items()}


@pytest.fixture(scope="module")
def client(explorers) -> TestClient:
    return TestClient(create_app(explorers), raise_server_exceptions=False)


def png_of(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    im.load()
    return im


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def digit_png(explorer: RunExplorer, i: int = 0) -> bytes:
    return png_bytes(explorer.data.images[i, 0].numpy())


# -- the API --------------------------------------------------------------------------------------
def test_each_run_says_what_it_can_show(client):
    assert [r["name"] for r in client.get("/api/runs").json()] == ["vae", "cvae", "gan"]
    vae = client.get("/api/runs/vae").json()
    assert all(p["ok"] for p in vae["panels"].values())
    assert (
        vae["map"]["kind"] == "pca" and "PCA" in vae["map"]["caption"] and "of 20 dimensions" in vae["map"]["caption"]
    )
    assert len(vae["map"]["points"]) == len(vae["map"]["labels"]) == 500
    assert [s["label"] for s in vae["sliders"][:2]] == ["PC1", "PC2"]
    assert all(s["dim"] is not None for s in vae["sliders"][2:]) and "KL" in vae["ranking"]
    gan = client.get("/api/runs/gan").json()
    assert gan["map"]["kind"] == "plane" and gan["map"]["points"] is None
    assert not gan["panels"]["encode"]["ok"] and "EncoderModel" in gan["panels"]["encode"]["reason"]
    assert not gan["panels"]["likelihood"]["ok"]
    assert gan["interpolation_mode"] == "slerp" and "image change" in gan["ranking"]
    cvae = client.get("/api/runs/cvae").json()
    assert cvae["conditional"] and cvae["num_classes"] == 10


def test_decode_gives_one_png_per_latent_and_moves_with_z(client, explorers):
    d = explorers["vae"].latent_dim
    one = client.post("/api/runs/vae/decode", json={"z": [0.0] * d}).json()
    assert len(one["images"]) == 1 and png_of(one["images"][0]).size == (28, 28)
    three = client.post("/api/runs/vae/decode", json={"z": [[0.0] * d, [2.0] * d, [-2.0] * d]}).json()
    assert len(set(three["images"])) == 3 and three["images"][0] == one["images"][0]
    # a conditional model decodes the same z differently per class
    dc = explorers["cvae"].latent_dim
    a = client.post("/api/runs/cvae/decode", json={"z": [0.0] * dc, "label": 1}).json()["images"][0]
    b = client.post("/api/runs/cvae/decode", json={"z": [0.0] * dc, "label": 7}).json()["images"][0]
    assert a != b


def test_concurrent_decodes_share_forward_passes(explorers):
    ex = explorers["gan"]
    calls = []
    original = ex.decode

    def counting(z, labels):
        calls.append(z.shape[0])
        time.sleep(0.05)  # a slow model: requests pile up while one batch runs
        return original(z, labels)

    app = create_app({"gan": ex})

    async def burst():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as c:
            zs = [[float(i)] * ex.latent_dim for i in range(8)]
            return await asyncio.gather(*(c.post("/api/runs/gan/decode", json={"z": z}) for z in zs))

    ex.decode = counting  # type: ignore[method-assign]
    try:
        answers = asyncio.run(burst())
    finally:
        del ex.decode
    assert [r.status_code for r in answers] == [200] * 8
    assert sum(calls) == 8 and len(calls) < 8  # 8 latents, fewer passes
    assert len({r.json()["images"][0] for r in answers}) == 8  # each request got its own image back


def test_prior_draws_interpolation_and_test_points(client, explorers):
    draws = client.post("/api/runs/gan/prior", json={"n": 2, "seed": 5}).json()["z"]
    assert len(draws) == 2 and len(draws[0]) == explorers["gan"].latent_dim
    assert client.post("/api/runs/gan/prior", json={"n": 2, "seed": 5}).json()["z"] == draws  # seeded
    path = client.post("/api/runs/gan/interpolate", json={"a": draws[0], "b": draws[1], "steps": 6, "mode": "slerp"})
    assert path.status_code == 200 and len(path.json()["images"]) == 6
    pt = client.get("/api/runs/vae/points/3").json()
    assert len(pt["z"]) == explorers["vae"].latent_dim and png_of(pt["image"]).size == (28, 28)
    assert pt["label"] == int(explorers["vae"].latent_map.point_labels[3])


def test_encoding_a_digit_places_it_and_ranks_its_likelihood(client, explorers):
    out = client.post("/api/runs/vae/encode", content=digit_png(explorers["vae"])).json()
    assert png_of(out["reconstruction"]).size == (28, 28) and out["note"] == ""
    assert len(out["map_point"]) == 2 and len(out["map_cov"]) == 2 and len(out["std"]) == 20
    lik = out["likelihood"]
    assert lik["bound"] < 0 and 0 <= lik["below"] <= 1 and len(lik["hist"]["counts"]) == 30
    assert lik["test_n"] == 300  # an MLP VAE scores all its reference images well within the time budget
    # noise is nothing like a digit: its bound falls below the test images' and the hint says so
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    odd = client.post("/api/runs/vae/encode", content=png_bytes(noise)).json()["likelihood"]
    assert odd["bound"] < lik["bound"] and odd["below"] < 0.05 and ("unlike" in odd["hint"] or "unusual" in odd["hint"])
    # a dark digit on white, bigger than 28x28: inverted and resized, and said so
    big = np.asarray(Image.fromarray(255 - explorers["vae"].data.images[0, 0].numpy()).resize((112, 112)))
    note = client.post("/api/runs/vae/encode", content=png_bytes(big)).json()["note"]
    assert "inverted" in note and "resized from 112x112" in note
    # a transparent canvas is black underneath
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[10:18, 12:16] = 255
    assert client.post("/api/runs/vae/encode", content=png_bytes(rgba)).status_code == 200
    assert client.post("/api/runs/cvae/encode?label=3", content=digit_png(explorers["vae"])).status_code == 200


def test_a_slow_likelihood_is_ranked_among_fewer_test_images(runs, monkeypatch):
    """The reference is scored in chunks while they fit the budget: a DDPM's U-Net would take minutes for 300."""
    monkeypatch.setattr(explorer_module, "REFERENCE_SECONDS", 0.0)  # as if one chunk took the whole budget
    ex = RunExplorer.load(runs["vae"], "vae", map_points=50)
    lik = TestClient(create_app({"vae": ex})).post("/api/runs/vae/encode", content=digit_png(ex)).json()["likelihood"]
    assert lik["test_n"] == REFERENCE_CHUNK and sum(lik["hist"]["counts"]) == REFERENCE_CHUNK


def test_a_diffusion_run_offers_what_a_noise_latent_allows(ddpm_run):
    ex = RunExplorer.load(ddpm_run, "ddpm", map_points=50)
    info = TestClient(create_app({"ddpm": ex})).get("/api/runs/ddpm").json()
    assert info["latent_dim"] == 784 and info["map"] is None and info["sliders"] == []
    panels = info["panels"]
    assert {name for name, p in panels.items() if p["ok"]} == {"random", "interpolate", "encode", "likelihood"}
    assert "Gaussian noise" in panels["map"]["reason"] and panels["sliders"] == panels["map"]
    assert info["interpolation_mode"] == "slerp"


def test_run_panel_curves_pictures_and_evaluation(client, runs, tmp_path):
    panel = client.get("/api/runs/vae/panel").json()
    assert panel["preset"] == "mlp" and "784-400-20" in panel["description"] and panel["changed"] == []
    # the description is the preset's; what --set changed is said beside it
    assert client.get("/api/runs/gan/panel").json()["changed"] == ["model.width=8"]
    assert [p[0] for p in panel["curves"]["loss"]] == [10, 20, 30, 40]
    assert "samples.png" in panel["pictures"] and panel["evaluation"] == []
    pic = client.get("/api/runs/vae/files/samples.png")
    assert pic.status_code == 200 and pic.content[:8] == b"\x89PNG\r\n\x1a\n"
    # an evaluated run shows its headline metrics (a copy, with a metrics.json of evaluate's shape)
    copy = tmp_path / "evaluated"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(runs["vae"] / name, copy / name)
    rows = [{"label": "FID", "value": 12.5, "better": "lower", "extractor": "lenet"}, {"label": "IS", "value": "x"}]
    (copy / "metrics.json").write_text(json.dumps({"summary": rows, "n": 2000}))
    outside = tmp_path / "secret.png"
    outside.write_bytes(pic.content)
    (copy / "samples.png").symlink_to(outside)  # a picture that leads out of the run is never served
    (copy / "progress.png").write_bytes(b"not a png")
    evaluated = TestClient(create_app({"e": RunExplorer.load(copy, "e", map_points=50)}))
    ev = evaluated.get("/api/runs/e/panel").json()
    assert ev["evaluation"][0] == {"label": "FID", "value": 12.5, "std": None, "better": "lower"}
    assert ev["evaluation_n"] == 2000 and ev["curves"] == {} and ev["pictures"] == []
    assert evaluated.get("/api/runs/e/files/samples.png").status_code == 404
    assert evaluated.get("/api/runs/e/files/progress.png").status_code == 404


def _huge_png() -> bytes:
    return png_bytes(np.zeros((1, 5000), dtype=np.uint8))  # a few hundred bytes, 5000 px wide


@pytest.mark.parametrize(
    "method,path,body,status,words",
    [
        ("post", "/api/runs/vae/decode", {"z": [0.0, 0.0]}, 400, "20 numbers"),
        ("post", "/api/runs/vae/decode", {"z": [0.0] * 21}, 400, "20 numbers"),
        ("post", "/api/runs/vae/decode", b'{"z": [' + b",".join([b"NaN"] * 20) + b"]}", 400, "finite"),
        ("post", "/api/runs/vae/decode", b'{"z": [' + b",".join([b"Infinity"] * 20) + b"]}", 400, "finite"),
        ("post", "/api/runs/vae/decode", {"z": ["1"] * 20}, 400, "numbers only"),
        ("post", "/api/runs/vae/decode", {"z": [True] * 20}, 400, "numbers only"),
        ("post", "/api/runs/vae/decode", {"z": [1e300] * 20}, 400, "within"),
        ("post", "/api/runs/vae/decode", {"z": [[0.0] * 20] * 65}, 400, "at most 64"),
        ("post", "/api/runs/vae/decode", {"z": {"a": 1}}, 400, "list"),
        ("post", "/api/runs/vae/decode", {}, 400, "list"),
        ("post", "/api/runs/vae/decode", b"not json", 400, "JSON object"),
        ("post", "/api/runs/vae/decode", b"[1, 2]", 400, "JSON object"),
        ("post", "/api/runs/vae/decode", b"[" * 100_000, 400, "JSON object"),
        ("post", "/api/runs/vae/decode", b" " * (2 * 2**20), 413, "at most"),
        ("post", "/api/runs/cvae/decode", {"z": [0.0] * 20, "label": 10}, 400, "class index"),
        ("post", "/api/runs/cvae/decode", {"z": [0.0] * 20, "label": -1}, 400, "class index"),
        ("post", "/api/runs/cvae/decode", {"z": [0.0] * 20, "label": "3"}, 400, "class index"),
        ("post", "/api/runs/vae/interpolate", {"a": [0.0] * 20, "b": [1.0] * 20, "steps": 1000}, 400, "steps"),
        ("post", "/api/runs/vae/interpolate", {"a": [0.0] * 20, "b": [1.0] * 20, "mode": "cubic"}, 400, "mode"),
        ("post", "/api/runs/vae/interpolate", {"a": [0.0] * 20}, 400, "b must"),
        ("post", "/api/runs/vae/prior", {"n": 10**6}, 400, "n must"),
        ("post", "/api/runs/vae/prior", {"seed": -1}, 400, "seed must"),
        ("get", "/api/runs/vae/points/100000", None, 404, "point index"),
        ("get", "/api/runs/gan/points/0", None, 404, "no test images"),
        ("post", "/api/runs/nope/decode", {"z": [0.0]}, 404, "no run named 'nope'"),
        ("get", "/api/runs/..%2F..%2Fetc%2Fpasswd", None, 404, "Not Found"),
        ("get", "/api/runs/%2E%2E", None, 404, "no run named '..'"),
        ("get", "/api/runs/vae/files/config.json", None, 404, "not one of the run's pictures"),
        ("get", "/api/runs/vae/files/..%2Fconfig.json", None, 404, "Not Found"),
        ("get", "/api/runs/vae/files/progress.png", None, 404, "no progress.png"),
        ("get", "/static/..%2Fapp.py", None, 404, "Not Found"),
        ("get", "/static/app.py", None, 404, "no static file 'app.py'"),
        ("get", "/static/index.html", None, 404, "no static file"),
        ("get", "/static/../../../etc/passwd", None, 404, "Not Found"),
        ("get", "/nowhere", None, 404, "Not Found"),
        ("post", "/api/runs", {}, 405, "Method Not Allowed"),
        ("post", "/api/runs/vae/encode", b"", 400, "no image"),
        ("post", "/api/runs/vae/encode", b"GIF89a" + b"\0" * 100, 415, "PNG or JPEG"),
        ("post", "/api/runs/vae/encode", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, 415, "PNG or JPEG"),
        ("post", "/api/runs/vae/encode", b"x" * (MAX_UPLOAD_BYTES + 1), 413, "at most"),
        ("post", "/api/runs/vae/encode", "huge", 413, "5000x1 pixels"),
        ("post", "/api/runs/vae/encode?label=abc", b"", 400, "class index"),
        ("post", "/api/runs/gan/encode", "digit", 422, "EncoderModel"),
    ],
)
def test_hostile_requests_get_a_4xx_json_error(client, explorers, method, path, body, status, words):
    if body == "huge":
        body = _huge_png()
    elif body == "digit":
        body = digit_png(explorers["vae"])
    kwargs = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert client.get("/api/runs").status_code == 200  # and the server goes on


def test_a_run_directory_is_only_read(client, runs, explorers):
    def snapshot():
        return {p: p.stat().st_mtime_ns for p in runs["vae"].rglob("*")}

    before = snapshot()
    client.get("/api/runs/vae/panel")
    client.post("/api/runs/vae/encode", content=digit_png(explorers["vae"]))
    client.post("/api/runs/vae/decode", json={"z": [0.0] * 20})
    assert snapshot() == before


def test_loopback_server_refuses_foreign_host_headers(explorers):
    c = TestClient(create_app({"gan": explorers["gan"]}, allowed_hosts=["127.0.0.1", "localhost"]))
    assert c.get("/api/runs", headers={"host": "127.0.0.1:9000"}).status_code == 200
    assert c.get("/api/runs", headers={"host": "attacker.example"}).status_code == 400


def test_page_and_assets_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from elsewhere
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text


# -- the command ----------------------------------------------------------------------------------
def test_a_bad_run_is_one_error_line_before_any_server(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"genlab: error: {tmp_path / 'missing'}: no such run directory"]
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty")]) == 2
    assert "not a genlab run (no config.json)" in capsys.readouterr().err


def test_registering_the_command_loads_no_web_stack_nor_torch():
    """`genlab --help` registers `serve` (cli._extra_commands): that must not import Starlette, uvicorn or torch."""
    code = (
        "import argparse, json, sys, genlab.serve as s; s.register_cli(argparse.ArgumentParser().add_subparsers()); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert "genlab" in loaded and not {"starlette", "uvicorn", "torch"} & loaded


# -- the page in a real browser -------------------------------------------------------------------
def _start_server(*run_dirs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "genlab", "serve", *map(str, run_dirs), "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _url(proc: subprocess.Popen) -> str:
    """The URL ``genlab serve`` prints first, once its runs are loaded."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.match(r"genlab serve: (http://127\.0\.0\.1:\d+/)$", line.strip())
    if not m:
        proc.kill()
        pytest.fail(f"no URL from genlab serve: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    assert "loopback only" in proc.stdout.readline()
    return m.group(1)


def _new_src(page, selector: str, old: str | None) -> str:
    """Wait until the image's src is a PNG other than ``old``, and return it.

    Playwright's ``expect`` rather than ``wait_for_function``: the page's Content-Security-Policy
    forbids the string evaluation that the latter needs, and the test runs under that policy.
    """
    from playwright.sync_api import expect

    img = page.locator(selector)
    expect(img).to_have_attribute("src", re.compile("^data:image/png"), timeout=15_000)
    if old is not None:
        expect(img).not_to_have_attribute("src", old, timeout=15_000)
    src = img.get_attribute("src")
    assert src is not None
    return src


def _stop(proc: subprocess.Popen) -> int:
    """Ctrl-C (SIGINT) the server, as a user stops it, and its exit status."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_the_page_in_a_real_browser(runs, tmp_path):
    from playwright import sync_api  # imported here: collecting the other tests needs no browser stack
    from playwright.sync_api import expect

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GENLAB_TEST_CHROMIUM)")
    shots = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    proc = _start_server(runs["vae"], runs["gan"])  # loads its runs while the browser starts
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            url = _url(proc)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")

            # hovering the map decodes where the mouse is
            first = _new_src(page, "#decoded", None)
            box = page.locator("#map").bounding_box()
            page.mouse.move(box["x"] + 60, box["y"] + 80)
            hovered = _new_src(page, "#decoded", first)
            page.mouse.move(box["x"] + box["width"] - 60, box["y"] + box["height"] - 80, steps=5)
            hovered2 = _new_src(page, "#decoded", hovered)
            assert "map (" in page.inner_text("#decode-status")

            # a slider moves one dimension
            slider = page.locator(".zslider").nth(2)
            slider.fill(str(float(slider.get_attribute("max")) * 0.9))
            # the hover's last request may still be answered first: wait for the slider's own answer
            expect(page.locator("#decode-status")).to_contain_text("slider z", timeout=15_000)
            assert page.get_attribute("#decoded", "src") != hovered2

            # drawing a stroke encodes it: reconstruction, a mark on the map, the likelihood hint
            d = page.locator("#draw").bounding_box()
            page.mouse.move(d["x"] + 98, d["y"] + 30)
            page.mouse.down()
            page.mouse.move(d["x"] + 98, d["y"] + 166, steps=8)
            page.mouse.up()
            page.wait_for_selector("#encode-result:not([hidden])", timeout=20_000)
            assert page.get_attribute("#recon", "src").startswith("data:image/png")
            assert "nats" in page.inner_text("#likelihood")

            # interpolation between two points of the map
            page.click("#set-a")
            page.mouse.move(box["x"] + 100, box["y"] + 300)
            page.click("#set-b")
            expect(page.locator("#strip img")).to_have_count(10)
            page.wait_for_selector("#curves canvas")
            page.screenshot(path=str(shots / "serve-vae.png"), full_page=True)

            # the GAN: no encoder, said in one line; its plane still decodes on hover
            before = page.get_attribute("#decoded", "src")
            page.click("#run-tabs button[data-run=gan]")
            expect(page.locator("#run-title")).to_contain_text("gan/dcgan")
            assert "EncoderModel" in page.inner_text("#encode-card .na")
            after_switch = _new_src(page, "#decoded", before)
            page.mouse.move(box["x"] + 100, box["y"] + 100)
            page.mouse.move(box["x"] + 350, box["y"] + 350, steps=4)
            _new_src(page, "#decoded", after_switch)
            page.click("#random")
            expect(page.locator("#decode-status")).to_contain_text("random z")
            page.screenshot(path=str(shots / "serve-gan.png"), full_page=True)
            browser.close()
        assert errors == []
    finally:
        code = _stop(proc)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def test_a_diffusion_run_in_a_real_browser(ddpm_run, tmp_path):
    """A DDPM's latent is x_T, Gaussian noise: no map and no sliders (each says why), but random z,
    temperature, slerp interpolation, encoding by DDIM inversion with its likelihood bound, and the run panel."""
    from playwright import sync_api
    from playwright.sync_api import expect

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GENLAB_TEST_CHROMIUM)")
    shots = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    proc = _start_server(ddpm_run)
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            url = _url(proc)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            expect(page.locator("#run-title")).to_contain_text("ddpm/ddpm · 784-d latent")

            # the panels a noise latent cannot fill are hidden, each with its reason
            expect(page.locator("#map-card > .body")).to_be_hidden()
            expect(page.locator("#map-card > .na")).to_contain_text("Gaussian noise (a diffusion model's x_T)")
            expect(page.locator("#ranking")).to_contain_text("mean nothing alone")
            expect(page.locator(".zslider")).to_have_count(0)

            # z = 0 decodes; random z and the temperature move it
            first = _new_src(page, "#decoded", None)
            expect(page.locator("#decode-status")).to_contain_text("z = 0")
            page.click("#random")
            expect(page.locator("#decode-status")).to_contain_text("random z")
            drawn = _new_src(page, "#decoded", first)
            page.locator("#temperature").fill("0.5")
            expect(page.locator("#decode-status")).to_contain_text("temperature 0.50")
            _new_src(page, "#decoded", drawn)

            # slerp (prior draws) between two random latents
            expect(page.locator("#mode")).to_have_value("slerp")
            page.click("#set-a")
            page.click("#random")
            expect(page.locator("#decode-status")).to_contain_text("random z")
            page.click("#set-b")
            expect(page.locator("#strip img")).to_have_count(10)
            expect(page.locator("#interp-status")).to_contain_text("slerp from A to B")

            # a drawing is encoded by DDIM inversion and ranked by its bound among (some) test images
            d = page.locator("#draw").bounding_box()
            page.mouse.move(d["x"] + 98, d["y"] + 30)
            page.mouse.down()
            page.mouse.move(d["x"] + 98, d["y"] + 166, steps=8)
            page.mouse.up()
            expect(page.locator("#encode-result")).to_be_visible(timeout=20_000)
            expect(page.locator("#encode-status")).to_have_text("")
            assert page.get_attribute("#recon", "src").startswith("data:image/png")
            expect(page.locator("#likelihood")).to_contain_text("nats")
            expect(page.locator("#likelihood")).to_contain_text("test images' bounds")
            expect(page.locator("#decode-status")).to_contain_text("your image's latent")

            # the run panel: its preset, curves and sample grid (loaded: a broken image has no natural width)
            expect(page.locator("#run-desc")).to_contain_text("ddpm/ddpm: denoising diffusion")
            changed = "Changed from the preset: model.timesteps=100, model.channels=8,"  # what --set changed
            expect(page.locator("#run-desc")).to_contain_text(changed)
            expect(page.locator("#run-desc")).to_contain_text("train.batch_size=16.")
            expect(page.locator("#curves canvas")).not_to_have_count(0)
            grid = page.locator("#pictures img.samples")
            expect(grid).to_have_attribute("src", "/api/runs/ddpm/files/samples.png")
            grid.scroll_into_view_if_needed()
            assert grid.evaluate("img => img.complete && img.naturalWidth > 0")
            page.screenshot(path=str(shots / "serve-ddpm.png"), full_page=True)
            browser.close()
        assert errors == []
    finally:
        code = _stop(proc)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
