"""The input pictures: one per object, from a folder (`--inputs DIR`) or drawn by SDXL-Turbo ("A photo of a {object}",
as the paper's are; `--generate-inputs`). Drawn pictures are kept in OUT/inputs/, so a resumed run reuses them.

A folder's picture for an object is found by name: `teddy_bear.png`, `teddy bear.jpg` and `Teddy-Bear.webp` are all
"teddy bear". Every picture is squashed to `size` x `size` (512, SDXL-Turbo's size) when it is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from pops.base.readers import read_image
from pops.evaluation.protocol.lists import slug

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _key(name: str) -> str:
    return slug(name).replace("-", "_")


def folder_pictures(folder: str | Path, objects: Sequence[str] | None = None) -> dict[str, Path]:
    """{object: picture path}: the pictures of `objects` in `folder` (each must be there), or, with `objects` None,
    every picture in it (its name, underscores read as spaces, is the object)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--inputs: no such folder {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in PICTURE_SUFFIXES and path.is_file():
            key = _key(path.stem)
            if key in found:
                raise ValueError(f"--inputs: {found[key].name} and {path.name} are both pictures of {path.stem!r}")
            found[key] = path
    if not found:
        raise FileNotFoundError(f"--inputs: no pictures ({', '.join(PICTURE_SUFFIXES)}) in {folder}")
    if objects is None:
        return {path.stem.replace("_", " "): path for path in found.values()}
    missing = [o for o in objects if _key(o) not in found]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"--inputs: {folder} has no picture of {len(missing)} object(s): {shown} (name them e.g. "
            f"{slug(missing[0])}.png)"
        )
    return {o: found[_key(o)] for o in objects}


def read_picture(path: str | Path, size: int) -> Image.Image:
    """A picture as RGB, squashed to `size` x `size` (one line for one that cannot be read)."""
    image = read_image(path, "input picture")
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


def picture_digest(image: Image.Image) -> str:
    """A short fingerprint of a picture's pixels: a score is reused on resume only for the same input picture."""
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def generated_path(folder: Path, obj: str) -> Path:
    return folder / f"{slug(obj)}.png"


def load_text_to_image(source: str, *, device, dtype, steps: int, size: int):
    """SDXL-Turbo (a hub id or a local folder, already resolved) as `(prompt, generator) -> picture`."""
    from diffusers import AutoPipelineForText2Image

    from pops.base.hub import looks_like_hub_id
    from pops.generate.models import TextToImage
    from pops.renderers.ipadapter import sdxl_load_kwargs

    load = sdxl_load_kwargs(dtype=dtype, from_hub=looks_like_hub_id(source))  # the hub's fp16 copy in fp16
    pipe = AutoPipelineForText2Image.from_pretrained(source, **load).to(device)
    return TextToImage(pipe, steps=steps, guidance_scale=0.0, size=size)
