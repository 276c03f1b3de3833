"""What a run of an equation writes and reads back: the output folder, step file names, per-step seeds, pictures of
every step and record.json. `pops apply` and the browser UI write the same files, so either one's record replays
with `pops apply --replay RECORD`:

    OUT/output.safetensors        the result, (num_samples, D), the record in its metadata
    OUT/output_<i>.png            the rendered samples (when a renderer is available)
    OUT/steps/<label>.safetensors every intermediate step (and steps/<label>_<i>.png)
    OUT/record.json               equation, seeds, settings, models and input digests
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from PIL import Image

from pops.base.devices import make_generator
from pops.base.files import atomic_write, atomic_write_text, file_digest
from pops.base.readers import read_json
from pops.embeddings.io import save_embeddings
from pops.equation.runner import RECORD_FORMAT
from pops.renderers import RENDERER_TYPES, renderer_class


def output_folder(out_dir: str | Path) -> Path:
    """`--out x.safetensors` (the single-operator default) names the folder `x/` for an equation."""
    out = Path(out_dir).expanduser()
    return out.with_suffix("") if out.suffix == ".safetensors" else out


def step_filename(label: str) -> str:
    """A file-safe name for a step label ("step 2" -> "step_2")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "step"


def step_picture(label: str, index: int = 0) -> str:
    """Where picture `index` of a step lies in a run folder (relative)."""
    return f"output_{index}.png" if label == "output" else f"steps/{step_filename(label)}_{index}.png"


def parse_step_seeds(items: list[str] | dict | None) -> dict[str, int]:
    """`["t=3", "output=7"]` (the CLI's --step-seed values) -> {"t": 3, "output": 7}."""
    if not items:
        return {}
    if isinstance(items, dict):
        return {str(k): int(v) for k, v in items.items()}
    seeds = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--step-seed expects LABEL=SEED (e.g. output=7), got {item!r}")
        seeds[label.strip()] = int(value)
    return seeds


def read_record(path: str | Path) -> dict:
    path = Path(path).expanduser()
    record = read_json(path, "record")
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or "equation" not in record:
        raise ValueError(f"{path}: not an equation record written by `pops apply` (format {RECORD_FORMAT})")
    return record


def check_inputs_unchanged(record: dict) -> None:
    """A replay must read the very files the record was made from."""
    files = record.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError("cannot replay: the record's 'files' is not a mapping of paths to digests")
    for name, digest in files.items():
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"cannot replay: input {name} no longer exists")
        if file_digest(path) != digest:
            raise ValueError(f"cannot replay: input {name} changed since the record was written")


def structure_pictures(plan) -> dict[str, Path | None]:
    """label -> the picture that is input A of each computed step (followed down first slots and first terms), or
    None: where a renderer that takes its structure from input A (the depth renderer) finds it, as the reference
    gives the depth ControlNet the object picture."""
    found = {}
    for step in plan.steps:
        if step.op in ("call", "sum") or step.index == plan.output:
            node = step
            while node.op in ("call", "sum") and node.inputs and node.inputs[0] is not None:
                node = plan.steps[node.inputs[0]]
            found[step.label] = node.path if node.op == "image" else None
    return found


def takes_structure(renderer) -> bool:
    """Whether a renderer (an object, or a type name of pops.renderers.RENDERER_TYPES) takes input A's picture."""
    if isinstance(renderer, str):
        return renderer in RENDERER_TYPES and getattr(renderer_class(renderer), "takes_structure", False)
    return getattr(renderer, "takes_structure", False)


def check_renderable(renderer, plan) -> None:
    """Before a run (and before the renderer loads, given its type name): a renderer that takes its structure from
    input A needs a picture there for every step."""
    if renderer is None or not takes_structure(renderer):
        return
    for label, path in structure_pictures(plan).items():
        if path is None:
            raise ValueError(
                f"the depth renderer takes the structure from input A, which must be a picture; step {label!r} has "
                "none (choose another renderer)"
            )


def render_steps(renderer, result, seed: int, generator_device: str = "cpu") -> dict[str, list]:
    """label -> PIL images of every computed step (each step rendered alone, so pictures do not depend on batching);
    the renderer's noise is drawn on `generator_device`, as the operators' (pops.base.devices.make_generator)."""
    structures = structure_pictures(result.plan) if takes_structure(renderer) else {}
    if structures:
        check_renderable(renderer, result.plan)
    pictures = {}
    for step in result.computed:
        generator = make_generator(seed, generator_device)
        embeds = result.output if step.label == "output" else step.embeds
        extra = {}
        if structures:
            with Image.open(structures[step.label]) as im:
                extra["structure"] = im.convert("RGB")
        pictures[step.label] = renderer.render(embeds, generator=generator, **extra)
    return pictures


def clear_result(out: Path) -> None:
    """Remove what `write_result` wrote into `out` (record.json first: a folder without one holds no result)."""
    (out / "record.json").unlink(missing_ok=True)
    (out / "output.safetensors").unlink(missing_ok=True)
    for picture in out.glob("output_*.png"):
        picture.unlink()
    shutil.rmtree(out / "steps", ignore_errors=True)


def write_result(result, out: Path, pictures: dict[str, list] | None, renderer_name: str | None) -> dict:
    """Write embeddings, pictures and record.json (last, so a folder with a record is complete)."""
    record = dict(result.record, renderer=renderer_name)
    files = {"output": "output.safetensors", "images": [], "steps": {}}
    save_embeddings(out / "output.safetensors", result.output, record)
    for step in result.computed:
        name = step_filename(step.label)
        if step.label != "output":
            save_embeddings(
                out / "steps" / f"{name}.safetensors", step.embeds, {"step": step.text, "label": step.label}
            )
            files["steps"][step.label] = f"steps/{name}.safetensors"
        for i, image in enumerate((pictures or {}).get(step.label, [])):
            rel = step_picture(step.label, i)
            atomic_write(out / rel, lambda tmp, image=image: image.save(tmp, format="PNG"))
            if step.label == "output":
                files["images"].append(rel)
    record["outputs"] = files
    atomic_write_text(out / "record.json", json.dumps(record, indent=2))
    return record
