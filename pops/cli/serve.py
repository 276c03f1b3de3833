"""`pops serve`: the browser UI for operators and equations."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from pops.base.reference import RELEASED_OPERATORS
from pops.cli import placement
from pops.cli.app import app, fail, run_or_fail

# Gradio's units (FileSize: powers of 1024).
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
# The smallest upload limit: below it no picture (nor embedding file) fits, and every upload would be refused.
MIN_FILE_SIZE = 1024


def parse_file_size(text: str) -> int | None:
    """Bytes of a size such as 10mb, 500kb or 2gb (the units Gradio reads), or None when it is not one."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*([kmg]?b)\s*", text.lower())
    if match is None or int(match.group(1)) < 1:
        return None
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


@app.command()
def serve(
    models: list[Path] | None = typer.Option(
        None,
        "--models",
        metavar="DIR",
        help="Models folder: operators/<kind>/ (save_pretrained) and renderer/, as `pops demo` writes them "
        "(default outputs/demo). Repeat it to offer several: the page lists these and can open no other.",
    ),
    out: Path = typer.Option(
        Path("outputs/ui"),
        "--out",
        "-o",
        help="Folder for runs, uploads and Gradio's cache; the only folder the server serves files from.",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind. The default is reachable from this machine only."),
    port: int = typer.Option(7860, help="Port to listen on."),
    renderer: str = typer.Option(
        "auto",
        help="Default renderer: auto (a saved kandinsky or ipadapter renderer, else the decoder, else retrieval), "
        "retrieval, decoder, kandinsky, ipadapter, ipadapter-depth or none.",
    ),
    max_file_size: str = typer.Option("10mb", help="Largest upload accepted, e.g. 10mb or 500kb."),
    queue_size: int = typer.Option(64, help="Most requests waiting in the queue; one runs at a time."),
    device: str | None = placement.DEVICE,
    dtype: str | None = placement.DTYPE,
    cpu_offload: bool = placement.CPU_OFFLOAD,
    generator_device: str = placement.GENERATOR_DEVICE,
) -> None:
    """Serve the browser UI: upload images into an operator's slots or type an equation, see every step."""
    from pops.models.folder import RENDERER_CHOICES

    if renderer not in RENDERER_CHOICES:
        fail(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERER_CHOICES)}")
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    if queue_size < 1:
        fail("--queue-size must be at least 1")
    limit = parse_file_size(max_file_size)
    if limit is None:
        fail(f"--max-file-size must be a size such as 10mb or 500kb, got {max_file_size!r}")
    if limit < MIN_FILE_SIZE:
        fail(f"--max-file-size {max_file_size} is smaller than any picture; give at least 1kb")
    from pops.models.layout import check_models_folder

    for folder in models or []:
        if folder.exists() and not folder.is_dir():
            fail(f"--models {folder} is a file, not a models folder")
        if folder.is_dir():
            run_or_fail(check_models_folder, folder)  # a damaged operator: one line now, not on every request
            inside = {out.resolve(), *out.resolve().parents} & {folder.resolve(), *folder.resolve().parents}
            if out.resolve() in inside or folder.resolve() in inside:
                # the server serves the files under OUT: the models folder must not be among them, nor hold them
                fail(f"--out {out} and the models folder {folder} overlap; the server serves OUT's files: give another")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder")
    from pops.base.files import check_output

    run_or_fail(check_output, out, overwrite=True, folder=True, what="--out")  # runs are added, never replaced
    from pops.base.devices import check_placement

    run_or_fail(check_placement, device, dtype, generator_device)
    models = list(models or [Path("outputs/demo")])
    for folder in models:
        if not folder.is_dir() and str(folder) != RELEASED_OPERATORS:  # the released operators, from the hub
            typer.echo(f"warning: models folder {folder} does not exist yet", err=True)
    from pops.ui import serve as run_server

    try:
        run_server(
            models,
            out,
            host=host,
            port=port,
            max_file_size=max_file_size,
            renderer=renderer,
            queue_size=queue_size,
            placement=dict(device=device, dtype=dtype, cpu_offload=cpu_offload or None),
            generator_device=generator_device,
        )
    except OSError as exc:
        fail(f"cannot start the server on {host}:{port}: {exc}")
