"""The options that place models, shared by `pops apply`, `serve`, `eval` and `render` (`pops train` has its own
shortcuts for its config keys); all checked by pops.base.devices.check_placement: CUDA asked for on a machine without
it is a one-line error. Each is an option type: `device: Device = None`."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[
    str | None, typer.Option("--device", help="cuda, cuda:1, cpu … (default: cuda when available, else cpu).")
]
Dtype = Annotated[
    str | None,
    typer.Option(
        "--dtype", help="fp16, bf16 or fp32 for the models (default: fp16 on a GPU for the CLIP and image models)."
    ),
]
CpuOffload = Annotated[
    bool,
    typer.Option(
        "--cpu-offload",
        help="Real renderers: keep the models in CPU memory and move each to the GPU only while it runs (less GPU "
        "memory, slower).",
    ),
]
GeneratorDevice = Annotated[
    str,
    typer.Option(
        "--generator-device",
        help="Where the sampling noise is drawn: cpu (the same numbers on every machine) or cuda (the reference's "
        "generator: on a GPU, the same seed gives the reference's samples).",
    ),
]
