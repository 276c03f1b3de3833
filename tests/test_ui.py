"""`pops serve` end to end: a real server process, driven by headless Debian chromium through Playwright, and by
ten concurrent gradio_client requests. The models folder holds tiny operators (with the embedded EfficientNet
image encoder) and a retrieval renderer over small procedural pictures, all written by the test."""

from __future__ import annotations

import io
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tests.helpers.browser import (
    ARTIFACTS,
    click_and_wait,
    open_browser,
    pops_serve,
    run_texturing_tab,
    upload_to_equation_tab,
    valid_picture,
    wait_for_captions,
)
from tests.helpers.images import bomb_png

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RESOLUTION = 64  # encoder input size: small and fast; the pictures below are 64 px too
ENCODER_CONFIG = {"type": "efficientnet", "resolution": RESOLUTION, "bf16": False}


# ----- a tiny world: procedural pictures, tiny operators, a retrieval renderer ---------------------------------------
COLOURS = {"red": (210, 40, 40), "green": (40, 160, 70), "blue": (40, 80, 210), "gold": (220, 170, 30)}


def draw_object(shape: str, colour, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(image)
    box = (size * 0.2, size * 0.2, size * 0.8, size * 0.8)
    if shape == "disc":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(size * 0.5, size * 0.15), (size * 0.85, size * 0.8), (size * 0.15, size * 0.8)], fill=colour)
    return image


def draw_texture(colour, size: int = 64, period: int = 8) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(image)
    for x in range(0, size, period):
        d.rectangle((x, 0, x + period // 2 - 1, size), fill=colour)
    return image


def draw_scene(top, bottom, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(image)
    for y in range(size):
        t = y / (size - 1)
        d.line((0, y, size, y), fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return image


def build_models(root: Path) -> dict[str, Path]:
    """Write operators/<kind>/ and renderer/ under root, and three input pictures; returns the pictures' paths."""
    from pops.core.prior import make_prior
    from pops.encoders.efficientnet import EfficientNetEncoder
    from pops.operators.operator import Operator
    from pops.renderers.retrieval import RetrievalRenderer

    encoder = EfficientNetEncoder(RESOLUTION, bf16=False)
    gallery = [draw_object(s, c) for s in ("disc", "square", "triangle") for c in COLOURS.values()]
    gallery += [draw_texture(c) for c in COLOURS.values()] + [draw_scene((120, 180, 255), (230, 210, 150))]
    embeds = encoder.encode(gallery)
    for i, kind in enumerate(("texturing", "union", "scene")):
        torch.manual_seed(i)
        prior = make_prior(embedding_dim=1280, num_layers=1, num_attention_heads=2, attention_head_dim=8)
        with torch.no_grad():
            prior.clip_mean.copy_(embeds.mean(0, keepdim=True))
            prior.clip_std.copy_(embeds.std(0, keepdim=True) + 0.05)
        op = Operator.from_prior(prior, kind, encoder_configs={"image": dict(ENCODER_CONFIG)})
        op.save_pretrained(root / "operators" / kind)
    RetrievalRenderer(embeds, gallery).save_pretrained(root / "renderers" / "retrieval")
    inputs = root.parent / "inputs"
    inputs.mkdir(exist_ok=True)
    pictures = {
        "object.png": draw_object("disc", COLOURS["blue"]),
        "texture.png": draw_texture(COLOURS["gold"]),
        "scene.png": draw_scene((120, 180, 255), (230, 210, 150)),
    }
    for name, picture in pictures.items():
        picture.save(inputs / name)
    return {name: inputs / name for name in pictures}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    pictures = build_models(root / "models")
    shutil.copytree(root / "models", root / "unlisted")  # a models folder the server is not started with
    out = root / "served"
    with pops_serve(root / "models", out, "pops_serve.log", "--max-file-size", "2mb", cwd=root) as url:
        yield {
            "url": url,
            "pictures": pictures,
            "out": out,
            "root": root,
            "models": root / "models",
            "unlisted": root / "unlisted",
        }


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_server_is_local_limits_uploads_and_serves_only_its_output_folder(server):
    import json

    import httpx

    url = server["url"]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only (no --host given: the default)
    config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
    assert config["max_file_size"] == 2 * 1024 * 1024 and config["enable_queue"]
    too_big = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", b"0" * (3 * 1024 * 1024))}, timeout=30)
    assert too_big.status_code == 413
    # Files outside the output folder are never handed out: the models, the test's inputs, system files.
    outside = server["models"] / "operators" / "texturing" / "pops_config.json"
    for path in (outside, server["pictures"]["object.png"], Path("/etc/hostname")):
        response = httpx.get(f"{url}gradio_api/file={path}", timeout=10)
        assert response.status_code in (403, 404), path


def test_browser_operator_tab_and_chained_equation(server):
    url, pics = server["url"], server["pictures"]
    manager, browser = open_browser()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="load")
        page.wait_for_selector("#run-texturing")
        assert "texturing, union, scene" in page.inner_text("#models-info")

        # 1. Texturing: one image into each slot, run, wait for the rendered result.
        run_texturing_tab(page, pics)
        picture = valid_picture(page, url, "#result-gallery img")
        assert picture.size == (64, 64)  # a retrieval gallery picture

        # 2. A chained equation over uploaded files: every intermediate shows up as a captioned picture.
        upload_to_equation_tab(page, pics)
        page.fill(
            "#equation-text textarea",
            "let t = texture(object.png, texture.png)\nlet u = union(t, object.png)\nscene(u, scene.png)",
        )
        status = click_and_wait(page, "#run-equation")
        assert "Done" in status and "3 operator steps" in status, status
        captions = ["t = texture(object.png, texture.png)", "u = union(t, object.png)", "output = scene(u, scene.png)"]
        wait_for_captions(page, captions)
        steps_text = page.inner_text("#steps-gallery")
        assert "t = texture(object.png, texture.png) · cached" in steps_text  # computed by the texturing tab
        images = page.locator("#steps-gallery img")
        assert images.count() >= 6  # three inputs, three steps
        for i in range(images.count()):
            src = images.nth(i).get_attribute("src")
            body = page.request.get(src if src.startswith("http") else url + src.lstrip("/")).body()
            Image.open(io.BytesIO(body)).verify()
        assert page.locator("#downloads").inner_text().count(".safetensors") >= 3

        # 3. An error says where.
        page.fill("#equation-text textarea", "scene(u, scene.png")
        status = click_and_wait(page, "#run-equation")
        assert "line 1, column 19" in status and "expected ',' or ')'" in status, status
        page.fill(
            "#equation-text textarea",
            "let t = texture(object.png, texture.png)\nlet u = union(t, object.png)\nscene(u, scene.png)",
        )
        assert "Done" in click_and_wait(page, "#run-equation")
        wait_for_captions(page, captions)
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
    finally:
        browser.close()
        manager.stop()


def test_ten_concurrent_requests_complete_in_order(server):
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    client = Client(server["url"], verbose=False)
    obj, tex = server["pictures"]["object.png"], server["pictures"]["texture.png"]
    models = str(server["models"])
    jobs = []
    for i in range(10):
        job = client.submit(
            handle_file(str(obj)), handle_file(str(tex)), models, "retrieval", i, 0, 3, 1, api_name="/texturing"
        )
        # Wait until the server has queued this one before sending the next, so the order is well defined.
        deadline = time.time() + 30
        while job.status().code in (Status.STARTING, Status.JOINING_QUEUE) and time.time() < deadline:
            time.sleep(0.02)
        jobs.append(job)
    results = [job.result(timeout=180) for job in jobs]
    records = [r[3] for r in results]
    assert all(r and r.get("format") == "pops-equation/1" for r in records), [r[4] for r in results]
    assert [r["seed"] for r in records] == list(range(10))  # each answer belongs to its own request
    runs = [int(r["ui_run"].split("-")[2]) for r in records]
    assert runs == sorted(runs) and len(set(runs)) == 10  # served first come, first served
    for r in results:
        assert "Done" in r[4]


def test_new_seed_for_the_last_step_and_file_confinement_over_the_api(server):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    pics, models = server["pictures"], str(server["models"])
    settings = [models, "retrieval", 5, 0, 3, 2]  # models, renderer, seed, guidance (0: defaults), steps, samples
    files = [handle_file(str(pics["object.png"])), handle_file(str(pics["scene.png"]))]
    first = client.predict(
        "let t = union(object.png, object.png)\nscene(t, scene.png)", files, *settings, api_name="/equation"
    )
    assert first[3]["seeds"] == {"t": 5, "output": 5} and len(first[0]) == 2  # two samples
    again = client.predict(*settings, api_name="/resample")
    assert again[3]["seeds"] == {"t": 5, "output": 6}
    assert "1 reused from the cache" in again[4]
    # A few-step sampler by name, from the settings panel: it reaches every step and the record.
    fast = client.predict(
        "let t = union(object.png, object.png)\nscene(t, scene.png)",
        files,
        *settings[:4],
        2,
        2,
        "ddim",
        api_name="/equation",
    )
    assert "Done" in fast[4] and fast[3]["sampler"] == "ddim" and fast[3]["num_inference_steps"] == 2
    for equation in ("texture(/etc/hostname.png, object.png)", "texture(../inputs/object.png, object.png)"):
        refused = client.predict(equation, files, *settings, api_name="/equation")
        assert "reads only uploaded files" in refused[4] and refused[3] is None


def test_the_api_opens_no_models_folder_but_those_the_server_was_started_with(server):
    """gradio_client can send any string as the models folder: an unlisted models folder, a missing path and a file
    get the same refusal (nothing tells whether the path exists), and nothing of them is run or served."""
    import httpx
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    obj, tex = server["pictures"]["object.png"], server["pictures"]["texture.png"]
    unlisted = server["unlisted"]
    refusals = []
    for folder in (unlisted, server["root"] / "no-such-folder", Path("/etc/hostname")):
        try:
            answer = client.predict(
                handle_file(str(obj)),
                handle_file(str(tex)),
                str(folder),
                "retrieval",
                0,
                0,
                3,
                1,
                api_name="/texturing",
            )
        except Exception as exc:  # refused by the page's list before the backend sees it
            message = str(exc)
        else:
            assert answer[3] is None and not answer[0] and not answer[1] and not answer[2], answer
            message = answer[4]
        refusals.append(message.replace(repr(str(folder)), "<folder>").replace(str(folder), "<folder>"))
    assert len(set(refusals)) == 1, refusals
    assert "exist" not in refusals[0].lower()
    served = httpx.get(f"{server['url']}gradio_api/file={unlisted / 'operators' / 'texturing' / 'pops_config.json'}")
    assert served.status_code in (403, 404)
    listed = client.predict(
        handle_file(str(obj)),
        handle_file(str(tex)),
        str(server["models"]),
        "retrieval",
        0,
        0,
        3,
        1,
        api_name="/texturing",
    )
    assert "Done" in listed[4]


def test_bad_settings_and_files_over_the_api_are_one_line_refusals_leaving_no_run(server, tmp_path):
    """What an HTTP client may send besides the page's values — a guidance below 1 or out of the slider's range, huge
    sample counts, a decompression bomb or bytes that are no picture — is refused in one line (Gradio's own range
    check, or the backend's status); no run folder stays behind."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False)
    pics, models = server["pictures"], str(server["models"])
    (tmp_path / "notimage.png").write_text("no picture\n")
    bomb, junk = bomb_png(tmp_path / "bomb.png"), tmp_path / "notimage.png"
    runs = server["out"] / "runs"
    before = sorted(runs.iterdir())
    pair = ["object.png", "texture.png"]
    cases = [
        ("texture(object.png, texture.png)", pair, [5, 0.5, 3, 1], "[1, 100]"),
        ("texture(object.png, texture.png)", pair, [5, -3, 3, 1], "-3"),
        ("texture(object.png, texture.png)", pair, [5, 0, 3, 10**6], "1000000"),
        ("texture(object.png, bomb.png)", ["object.png", bomb], [0, 0, 3, 1], "decompression bomb"),
        ("texture(object.png, notimage.png)", ["object.png", junk], [0, 0, 3, 1], "not a readable"),
    ]
    for equation, names, numbers, expect in cases:
        files = [handle_file(str(pics[n] if isinstance(n, str) else n)) for n in names]
        try:
            answer = client.predict(equation, files, models, "retrieval", *numbers, api_name="/equation")
        except AppError as exc:  # Gradio's range check of a slider, before the backend
            status = str(exc)
        else:
            status = answer[4]
            assert status.startswith("**Error") and answer[3] is None and not answer[0], status
        assert expect in status and "internal error" not in status and "Traceback" not in status, status
    assert sorted(runs.iterdir()) == before
