"""`pops protocol paper-instruct --out DIR`: a paper's own evaluation as one command — today its Table 1, instruct
(pops.evaluation.protocol), on the real models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pops.base import checks
from pops.base.devices import check_placement
from pops.cli.app import app, checked, fail, run_or_fail
from pops.cli.options import Overwrite
from pops.cli.placement import Device, Dtype, GeneratorDevice

PROTOCOLS = ("paper-instruct",)

Name = Annotated[
    str,
    typer.Argument(
        help="Which protocol: paper-instruct (Table 1: pOps, InstructPix2Pix and SDXL + IP-Adapter at 0.5 / 0.1 on 52 "
        "objects x 65 adjectives x 3 seeds, scored by CLIP image, CLIP ViT-L/14 text and BLIP-2 caption similarity "
        "beside the paper's numbers; real models, a GPU).",
    ),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="The output folder: protocol.json, scores.jsonl, inputs/.")]
Seeds = Annotated[int, typer.Option(help="Seeds per (object, adjective).")]
Steps = Annotated[int | None, typer.Option(help="Denoising steps of every pipeline (default: each one's own).")]
Inputs = Annotated[Path | None, typer.Option("--inputs", help="a folder with one input picture per object.")]
GenerateInputs = Annotated[
    bool,
    typer.Option(
        "--generate-inputs",
        help="draw the input pictures with SDXL-Turbo ('A photo of a {object}'), kept in OUT/inputs/.",
    ),
]
Methods = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="only these methods (repeatable): pops, instructpix2pix, ip-adapter-0.5, ip-adapter-0.1 (default: all).",
    ),
]
Objects = Annotated[
    int | None, typer.Option(help="the first N objects (default: all 52, or every picture of --inputs).")
]
Adjectives = Annotated[int | None, typer.Option(help="the first M adjectives (default: all 65).")]
ObjectsFile = Annotated[
    Path | None, typer.Option("--objects-file", help="your object list, one a line (default: pops' 52).")
]
AdjectivesFile = Annotated[
    Path | None,
    typer.Option("--adjectives-file", help="your adjective list, one a line (default: pops' 65)."),
]
FirstSeed = Annotated[int, typer.Option("--first-seed", help="the seeds are FIRST, FIRST+1, … (--seeds of them).")]
ImageModel = Annotated[
    str,
    typer.Option("--image-model", help="the CLIP of image similarity: bigG (the operators' ViT-bigG/14) or L14."),
]
Model = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="ROLE=SOURCE, a hub id or local folder (repeatable); roles: base, checkpoint, decoder, "
        "clip_l14, blip2, sentence, instructpix2pix, sdxl, ip_adapter, sdxl_turbo.",
    ),
]
OperatorFolder = Annotated[
    Path | None,
    typer.Option("--operator-folder", help="an instruct operator folder to evaluate instead of the released one."),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE changes a setting (repeatable): decoder_steps, sdxl_size, instructpix2pix_prompt, "
        "… (docs/REAL_MODELS.md).",
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="edits per pipeline call.")]
SkipUnavailable = Annotated[
    bool,
    typer.Option(
        "--skip-unavailable",
        help="a baseline whose models cannot be had becomes a one-line note in the table, not an error.",
    ),
]
SaveImages = Annotated[bool, typer.Option("--save-images", help="keep every edit as OUT/images/<method>/….jpg.")]


@app.command(name="protocol")
def protocol(
    name: Name,
    out: Out,
    inputs: Inputs = None,
    generate_inputs: GenerateInputs = False,
    methods: Methods = None,
    objects: Objects = None,
    adjectives: Adjectives = None,
    seeds: Seeds = 3,
    first_seed: FirstSeed = 0,
    objects_file: ObjectsFile = None,
    adjectives_file: AdjectivesFile = None,
    image_model: ImageModel = "bigG",
    model: Model = None,
    operator_folder: OperatorFolder = None,
    steps: Steps = None,
    set_: Set = None,
    batch_size: BatchSize = 8,
    device: Device = None,
    dtype: Dtype = None,
    generator_device: GeneratorDevice = "cpu",
    skip_unavailable: SkipUnavailable = False,
    overwrite: Overwrite = False,
    save_images: SaveImages = False,
) -> None:
    """Run a paper's own evaluation on the real models and print its table beside the paper's numbers (written to
    OUT/protocol.json): `pops protocol paper-instruct --out DIR --generate-inputs` (docs/REAL_MODELS.md)."""
    if name not in PROTOCOLS:
        fail(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    checked(checks.count, seeds, "--seeds")
    run_or_fail(check_placement, device, dtype, generator_device)
    options = dict(
        methods=methods, models=model, settings=set_, operator=operator_folder, inputs=inputs, objects=objects,
        generate_inputs=generate_inputs, adjectives=adjectives, seeds=seeds, first_seed=first_seed, steps=steps,
        objects_file=objects_file, adjectives_file=adjectives_file, image_model=image_model, batch_size=batch_size,
        device=device, dtype=dtype, generator_device=generator_device, skip_unavailable=skip_unavailable,
        overwrite=overwrite, save_images=save_images,
    )  # fmt: skip
    typer.echo(run_or_fail(_run, out, options)["table"])


def _run(out: Path, options: dict) -> dict:
    # Heavy imports here, not at the top: `pops --help` loads no torch.
    from pops.evaluation.protocol import METHODS, parse_models, parse_settings, run_protocol

    options["models"], options["settings"] = (
        parse_models(options["models"] or []),
        parse_settings(options["settings"] or []),
    )
    options["methods"] = tuple(options["methods"] or METHODS)
    return run_protocol(out=out, **options)
