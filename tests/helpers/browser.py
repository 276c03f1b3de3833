"""`pops serve` in a subprocess, and headless Debian chromium driving its page through Playwright."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.processes import REPO, free_port, pops_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"  # server logs and screenshots, kept after the run
STATUS = "#status [data-testid=markdown]"  # the status text itself, not Gradio's progress overlay


# ----- the server --------------------------------------------------------------------------------------------------
@contextmanager
def pops_serve(models: Path, out: Path, log_name: str, *options, cwd: Path):
    """`pops serve --models MODELS --out OUT` on a free port, with `options`, logging to test-artifacts/LOG_NAME;
    yields its URL once the page answers, and stops the server afterwards."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / log_name
    env = pops_env(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-c", "from pops.cli import main; main()", "serve", "--models", str(models)]
    cmd += ["--out", str(out), "--port", str(port), *map(str, options)]
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_page(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"pops serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"pops serve did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


# ----- the browser -------------------------------------------------------------------------------------------------
def open_browser():
    """Playwright's manager and a headless chromium (Debian's); stop both when done."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    manager = sync_playwright().start()
    browser = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return manager, browser


def valid_picture(page, base_url: str, selector: str) -> Image.Image:
    """The first picture at `selector`, fetched from the server and decoded."""
    src = page.locator(selector).first.get_attribute("src")
    assert src, f"no picture in {selector}"
    body = page.request.get(src if src.startswith("http") else base_url.rstrip("/") + "/" + src.lstrip("/")).body()
    image = Image.open(io.BytesIO(body))
    image.load()
    assert image.size[0] > 0 and image.size[1] > 0
    return image


def click_and_wait(page, selector: str, timeout: float = 90_000) -> str:
    """Click a run button and wait for the status line to report this run (done or error); return it."""
    before = page.inner_text(STATUS)
    page.click(selector)
    page.wait_for_function(
        "([selector, before]) => { const t = document.querySelector(selector).innerText;"
        " return t !== before && (t.includes('Done') || t.includes('Error')); }",
        arg=[STATUS, before],
        timeout=timeout,
    )
    return page.inner_text(STATUS)


def run_texturing_tab(page, pics) -> str:
    """The texturing tab: object.png and texture.png into its slots, run, wait for the result; return the status."""
    page.set_input_files("#texturing-object input[type=file]", str(pics["object.png"]))
    page.set_input_files("#texturing-texture input[type=file]", str(pics["texture.png"]))
    page.wait_for_selector("#texturing-object img")
    page.wait_for_selector("#texturing-texture img")
    status = click_and_wait(page, "#run-texturing")
    assert "Done" in status and "texturing(object.png, texture.png)" in status, status
    page.wait_for_selector("#result-gallery img", timeout=30_000)
    return status


def upload_to_equation_tab(page, pics) -> None:
    """Open the equation tab and upload every picture; wait until the file list names each one."""
    page.get_by_role("tab", name="Equation").click()
    page.set_input_files("#equation-files input[type=file]", [str(p) for p in pics.values()])
    for name in pics:
        page.wait_for_selector(f"#equation-files td.filename[aria-label='{name}']", timeout=30_000)


def wait_for_captions(page, captions) -> None:
    """Wait until the steps gallery shows every caption."""
    page.wait_for_function(
        f"{captions!r}.every(c => document.querySelector('#steps-gallery').innerText.includes(c))", timeout=30_000
    )
