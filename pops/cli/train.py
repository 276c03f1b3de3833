"""`pops train CONFIG.yaml`: train one operator on cached embeddings (also under `accelerate launch -m pops train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base.devices import check_placement, dtype_name, resolve_dtype
from pops.cli.app import app, run_or_fail

SIGTERM_EXIT = 143  # 128 + SIGTERM, what schedulers expect from a job that stopped on their signal

Config = Annotated[Path, typer.Argument(help="Training config (YAML), e.g. configs/train/texturing.yaml.")]
Override = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        "-o",
        help="Set a config key, dotted for sections: --override max_steps=500 --override optim.lr=1e-4. Repeatable.",
    ),
]
Resume = Annotated[
    str | None,
    typer.Option(
        help="Shortcut for --override resume=…: 'auto' (newest checkpoint in output_dir) or a checkpoint folder."
    ),
]
OutputDir = Annotated[Path | None, typer.Option("--output-dir", help="Shortcut for --override output_dir=….")]
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Shortcut for --override device=…: cpu or cuda (default: accelerate's choice, a GPU when there is one; "
        "which GPU each process takes is accelerate's).",
    ),
]
Dtype = Annotated[
    str | None,
    typer.Option(
        "--dtype", help="Shortcut for --override mixed_precision=…: fp16 or bf16 mixed precision, fp32 = none."
    ),
]
GeneratorDevice = Annotated[
    str | None,
    typer.Option(
        "--generator-device",
        help="Shortcut for --override validation.generator_device=…: where the validation samples' noise is drawn, "
        "cpu (the same numbers on every machine) or cuda (the reference's generator).",
    ),
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (main process only).")]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Shortcut for --override overwrite=true: start again in an OUTPUT_DIR that holds a trained operator or "
        "an earlier run's checkpoints (without it, or --resume, such a folder is refused).",
    ),
]


@app.command()
def train(
    config: Config,
    override: Override = None,
    resume: Resume = None,
    output_dir: OutputDir = None,
    device: Device = None,
    dtype: Dtype = None,
    generator_device: GeneratorDevice = None,
    progress: Progress = True,
    overwrite: Overwrite = False,
) -> None:
    """Train an operator on cached embeddings. Every config key is listed, with its default, in configs/train/*.yaml.

    Checkpoints go to OUTPUT_DIR/checkpoints (every checkpoint.every steps, and on SIGTERM, which then exits with
    code 143); the trained operator (save_pretrained format, with a model card) to OUTPUT_DIR; TensorBoard logs to
    OUTPUT_DIR/logs.

    Several processes, GPUs or nodes: accelerate launch [--multi_gpu --num_processes N | --config_file
    FSDP_OR_DEEPSPEED.yaml] -m pops train CONFIG.yaml
    """
    # Slow imports here, not at the top: the config schema (and yaml) costs `pops --help` 40 ms.
    from pops.train.config import load_config

    overrides = list(override or [])
    if resume is not None:
        overrides.append(f"resume={resume}")
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    if overwrite:
        overrides.append("overwrite=true")
    run_or_fail(check_placement, device, dtype, generator_device)  # one line when CUDA is asked for and absent
    if device is not None:
        overrides.append(f"device={run_or_fail(training_device, device)}")
    if dtype is not None:
        overrides.append(f"mixed_precision={MIXED_PRECISION_OF[dtype_name(resolve_dtype(dtype))]}")
    if generator_device is not None:
        overrides.append(f"validation.generator_device={run_or_fail(training_device, generator_device)}")
    cfg = run_or_fail(load_config, config, overrides)
    run_or_fail(_train, cfg, progress)


# --dtype (pops.base.devices' names) -> the config's mixed_precision (accelerate's names).
MIXED_PRECISION_OF = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}


def training_device(name: str) -> str:
    """cpu or cuda from a --device name; a numbered GPU is refused: accelerate gives each process its own."""
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    import torch

    kind = torch.device(name).type
    if kind not in ("cpu", "cuda") or ":" in name:
        raise ValueError(
            f"train runs on cpu or cuda, got {name!r} (pick GPUs with `accelerate launch --gpu_ids` or "
            "CUDA_VISIBLE_DEVICES)"
        )
    return kind


def _train(cfg, progress: bool) -> None:
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.train.loop import TrainingInterrupted
    from pops.train.loop import train as run_training

    try:
        run_training(cfg, progress=progress and cfg.progress)
    except TrainingInterrupted as stop:
        typer.echo(str(stop), err=True)
        raise typer.Exit(SIGTERM_EXIT) from None
    typer.echo(f"trained {cfg.operator} operator saved to {cfg.output_dir}")
