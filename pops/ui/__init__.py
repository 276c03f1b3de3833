"""The browser UI (`pops serve`): a Gradio page over the equation runner. See pops/ui/app.py for the page and
pops/ui/backend.py for what a run does."""

from __future__ import annotations

import os
from pathlib import Path


def serve(
    models_dirs: list[str | Path] | str | Path | None,
    out_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    max_file_size: str = "10mb",
    renderer: str = "auto",
    queue_size: int = 64,
    block: bool = True,
    placement: dict | None = None,
    generator_device: str = "cpu",
):
    """Start the UI, offering the models folders `models_dirs` (the only ones a page may open; the first is the
    default). Every file it serves lies under `out_dir`: uploads and Gradio's own cache are kept there
    (GRADIO_TEMP_DIR), `allowed_paths` is that folder alone, and there is no share link. `placement` (device, dtype,
    cpu_offload) places the models of every folder; `generator_device` is where every run draws its noise."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Gradio reads these when it is imported, so set them first: the page's modules (gradio, torch) are imported
    # below, not at the top (which also keeps `pops --help`, whose `serve` command imports this package, fast).
    os.environ["GRADIO_TEMP_DIR"] = str(out / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pops.ui.app import CSS, build_app, theme
    from pops.ui.backend import Backend

    backend = Backend(models_dirs, out, placement=placement, generator_device=generator_device)
    demo = build_app(backend, default_renderer=renderer)
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(out)],
        max_file_size=max_file_size,
        show_error=True,
        ssr_mode=False,
        theme=theme(),
        css=CSS,
        footer_links=["api"],
        prevent_thread_lock=not block,
        quiet=False,
    )
    return demo
