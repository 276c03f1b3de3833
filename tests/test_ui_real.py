"""`pops serve` on a real models folder, driven by headless chromium: `pops models real` imports released operators
(tiny random checkpoints in the hub layout, on a tiny Kandinsky prior with its CLIP image encoder) and writes a
`kandinsky` renderer folder (a tiny Kandinsky 2.2 decoder pipeline); the page applies an operator and an equation
and shows the pictures the Kandinsky renderer drew. Everything is built here; nothing is downloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
from tests.helpers.cli import run_cli
from tests.helpers.images import random_images
from tests.helpers.real_stack import SIZE, write_hub

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-real")
    hub = write_hub(root / "hub")
    models = root / "real"
    args = ["--base", hub / "kandinsky-2-2-prior", "--checkpoints", hub / "operators"]
    args += ["--operator", "texturing", "--operator", "union"]
    args += ["--set", f"decoder={hub / 'kandinsky-2-2-decoder'}", "--set", "num_inference_steps=2"]
    result = run_cli("models", "real", models, *args, "--set", f"size={SIZE}")
    assert result.exit_code == 0, result.output
    pictures = {}
    for name, image in zip(("object.png", "texture.png", "other.png"), random_images(3, seed=21)):
        image.save(root / name)
        pictures[name] = root / name
    out = root / "served"
    options = ("--device", "cpu", "--generator-device", "cpu")
    with pops_serve(models, out, "pops_serve_real.log", *options, cwd=root) as url:
        yield {"url": url, "pictures": pictures, "out": out}


def run_records(out):
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/record.json")}


def test_browser_applies_released_operators_and_sees_kandinsky_pictures(real_server):
    url, pics, out = real_server["url"], real_server["pictures"], real_server["out"]
    manager, browser = open_browser()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="load")
        page.wait_for_selector("#run-texturing")
        info = page.inner_text("#models-info")
        assert "texturing, union" in info and "kandinsky" in info, info  # the imported operators, the real renderer

        # 1. The texturing tab: two pictures into the released operator's slots, rendered by Kandinsky.
        run_texturing_tab(page, pics)
        picture = valid_picture(page, url, "#result-gallery img")
        assert picture.size == (SIZE, SIZE)  # the decoder's size from renderer.json, not an input picture's
        assert len(np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0)) > 16  # drawn, not blank
        records = run_records(out)
        assert [r["renderer"] for r in records.values()] == ["kandinsky"]
        first = next(iter(records.values()))
        assert first["operators"]["texturing"].endswith("operators/texturing")  # the imported folder

        # 2. An equation over both imported operators: each step is rendered and shown.
        upload_to_equation_tab(page, pics)
        page.fill("#equation-text textarea", "let t = texturing(object.png, texture.png)\nunion(t, other.png)")
        status = click_and_wait(page, "#run-equation")
        assert "Done" in status and "2 operator steps" in status and "1 reused from the cache" in status, status
        captions = ["t = texturing(object.png, texture.png)", "output = union(t, other.png)"]
        wait_for_captions(page, captions)
        assert valid_picture(page, url, "#result-gallery img").size == (SIZE, SIZE)
        records = run_records(out)
        assert len(records) == 2 and all(r["renderer"] == "kandinsky" for r in records.values())
        page.screenshot(path=str(ARTIFACTS / "ui_real.png"), full_page=True)
    finally:
        browser.close()
        manager.stop()
