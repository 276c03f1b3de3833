"""`pops serve`: the browser UI for operators and equations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from pops import ui
from pops.base.devices import check_placement
from pops.base.files import check_output
from pops.base.reference import RELEASED_OPERATORS
from pops.cli.app import app, fail, run_or_fail
from pops.cli.placement import CpuOffload, Device, Dtype, GeneratorDevice

# Gradio's units (FileSize: powers of 1024).
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
# The smallest upload limit: below it no picture (nor embedding file) fits, and every upload would be refused.
MIN_FILE_SIZE = 1024

Models = Annotated[
    list[Path] | None,
    typer.Option(
        "--models",
        metavar="DIR",
        help="Models folder: operators/<kind>/ (save_pretrained) and renderers/, as `pops demo` writes them "
        "(default outputs/demo). Repeat it to offer several: the page lists these and can open no other.",
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Folder for runs, uploads and Gradio's cache; the only folder the server serves files from.",
    ),
]
Host = Annotated[str, typer.Option(help="Address to bind. The default is reachable from this machine only.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
Renderer = Annotated[
    str,
    typer.Option(
        help="Default renderer: auto (a saved kandinsky or ipadapter renderer, else the decoder, else retrieval), "
        "retrieval, decoder, kandinsky, ipadapter, ipadapter-depth or none.",
    ),
]
MaxFileSize = Annotated[str, typer.Option(help="Largest upload accepted, e.g. 10mb or 500kb.")]
QueueSize = Annotated[int, typer.Option(help="Most requests waiting in the queue; one runs at a time.")]


def parse_file_size(text: str) -> int | None:
    """Bytes of a size such as 10mb, 500kb or 2gb (the units Gradio reads), or None when it is not one."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*([kmg]?b)\s*", text.lower())
    if match is None or int(match.group(1)) < 1:
        return None
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


@app.command()
def serve(
    models: Models = None,
    out: Out = Path("outputs/ui"),
    host: Host = "127.0.0.1",
    port: Port = 7860,
    renderer: Renderer = "auto",
    max_file_size: MaxFileSize = "10mb",
    queue_size: QueueSize = 64,
    device: Device = None,
    dtype: Dtype = None,
    cpu_offload: CpuOffload = False,
    generator_device: GeneratorDevice = "cpu",
) -> None:
    """Serve the browser UI: upload images into an operator's slots or type an equation, see every step."""
    _check_server_options(renderer, port, queue_size, max_file_size)
    _check_folders(models or [], out)
    run_or_fail(check_output, out, overwrite=True, folder=True, what="--out")  # runs are added, never replaced
    run_or_fail(check_placement, device, dtype, generator_device)
    models = list(models or [Path("outputs/demo")])
    for folder in models:
        if not folder.is_dir() and str(folder) != RELEASED_OPERATORS:  # the released operators, from the hub
            typer.echo(f"warning: models folder {folder} does not exist yet", err=True)
    try:
        ui.serve(
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


def _check_server_options(renderer: str, port: int, queue_size: int, max_file_size: str) -> None:
    """The server's own options, one `error:` line for each misuse."""
    # Heavy imports here, not at the top: `pops --help` loads no torch (pops.models.model_set loads the operators).
    from pops.models.model_set import RENDERER_CHOICES

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


def _check_folders(models: list[Path], out: Path) -> None:
    """Each models folder that exists is a readable one (a damaged operator: one line now, not on every request), and
    none overlaps OUT, the folder the server serves files from; OUT is a folder."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.models.layout import check_models_folder

    for folder in models:
        if folder.is_symlink() and not folder.exists():  # not a folder still to come: one that can never be
            fail(f"--models {folder} is a symbolic link that leads nowhere (broken, or a loop)")
        if folder.exists() and not folder.is_dir():
            fail(f"--models {folder} is a file, not a models folder")
        if folder.is_dir():
            run_or_fail(check_models_folder, folder)
            inside = {out.resolve(), *out.resolve().parents} & {folder.resolve(), *folder.resolve().parents}
            if out.resolve() in inside or folder.resolve() in inside:
                # the server serves the files under OUT: the models folder must not be among them, nor hold them
                fail(f"--out {out} and the models folder {folder} overlap; the server serves OUT's files: give another")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder")
