"""The on-disk format of a generated dataset (see docs/DATA_FORMAT.md), atomic writes and resumption.

    OUT/dataset.json                          what was generated (operator, seed, recipe settings); checked on resume
    OUT/samples/00000/00000042/               one folder per sample index (buckets of 1000)
        target.jpg, object_a.jpg, ...         RGB images (the ones `pops embed` encodes)
        mask.png, object_a_cutout.png, ...    assets: masks and cut-outs (not encoded)
        sample.json                           the manifest, written last: a sample exists iff its manifest does
        rejected.json                         instead of sample.json when the recipe rejected this index
    OUT/logs/rank-0.jsonl                     one line per rejected / failed sample, with the reason

Every file is written with `pops.base.files.atomic_write` (a hidden temporary in the same folder, moved into place), so
a killed run leaves either a complete file or a temporary one, which readers ignore and the next run removes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from pops.base.errors import reason
from pops.base.files import atomic_write_bytes, atomic_write_json, is_temporary
from pops.base.readers import read_json
from pops.base.registry import get_spec

FORMAT = "pops-generate/1"
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "sample.json"
REJECTED_FILE = "rejected.json"
BUCKET = 1000
# The temporaries of earlier versions (".NAME.tmp-PID-HEX"), still removed on resume.
LEGACY_TEMP_MARK = ".tmp-"
IMAGE_FORMATS = {"jpg": ("JPEG", {"quality": 95}), "png": ("PNG", {})}
# Fields of dataset.json that must match when a run resumes into an existing folder.
IDENTITY_FIELDS = ("format", "operator", "seed", "recipe")


def sample_dir(root: str | Path, index: int) -> Path:
    return Path(root) / "samples" / f"{index // BUCKET:05d}" / f"{index:08d}"


def atomic_save_image(image: Image.Image, path: str | Path, image_format: str | None = None) -> None:
    """Save as JPEG (RGB, quality 95) or PNG (any mode), chosen by `image_format` or the file suffix."""
    path = Path(path)
    key = image_format or path.suffix.lstrip(".").lower()
    fmt, options = IMAGE_FORMATS["jpg" if key == "jpeg" else key]
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    atomic_write_bytes(path, buffer.getvalue())


def _is_temporary(path: Path) -> bool:
    """A temporary of `pops.base.files.atomic_write`, or one an earlier version left behind."""
    return is_temporary(path) or (path.name.startswith(".") and LEGACY_TEMP_MARK in path.name)


def remove_temp_files(folder: Path) -> int:
    """Delete temporaries a killed run left in `folder`; returns how many."""
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if _is_temporary(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def sample_status(root: str | Path, index: int) -> str | None:
    """ "made", "rejected", or None when the sample still has to be made."""
    folder = sample_dir(root, index)
    if (folder / MANIFEST_FILE).is_file():
        return "made"
    if (folder / REJECTED_FILE).is_file():
        return "rejected"
    return None


def init_dataset(root: str | Path, info: dict) -> dict:
    """Create OUT/dataset.json, or check that an existing one describes the same generation (ValueError if not)."""
    root = Path(root)
    info = {"format": FORMAT, **info}
    path = root / DATASET_FILE
    if path.is_file():
        existing = read_dataset_info(root)
        for key in IDENTITY_FIELDS:
            if existing.get(key) != json.loads(json.dumps(info.get(key))):
                raise ValueError(
                    f"{root} holds a dataset generated with a different {key} "
                    f"({existing.get(key)!r} vs {info.get(key)!r}); use another --out folder"
                )
        return existing
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder")
    atomic_write_json(path, info, sort_keys=True)
    return info


def read_dataset_info(root: str | Path) -> dict:
    path = Path(root) / DATASET_FILE
    if not path.exists():
        raise FileNotFoundError(f"{root} is not a generated dataset (no {DATASET_FILE})")
    info = read_json(path, "dataset description")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dataset description written by `pops generate` (format {FORMAT})")
    if "operator" in info:
        try:
            get_spec(info["operator"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {reason(exc)}") from None
    return info


def write_sample(
    root: str | Path,
    index: int,
    *,
    images: dict[str, Image.Image],
    assets: dict[str, Image.Image],
    record: dict,
    image_format: str = "jpg",
) -> dict:
    """Write one sample: its images (`image_format`), its assets (PNG, lossless masks), then its manifest."""
    folder = sample_dir(root, index)
    remove_temp_files(folder)
    files_images, files_assets = {}, {}
    for role, image in images.items():
        name = f"{role}.{image_format}"
        atomic_save_image(image, folder / name, image_format)
        files_images[role] = name
    for role, image in assets.items():
        name = f"{role}.png"
        atomic_save_image(image, folder / name, "png")
        files_assets[role] = name
    manifest = {"format": FORMAT, "index": index, **record, "images": files_images, "assets": files_assets}
    atomic_write_json(folder / MANIFEST_FILE, manifest, sort_keys=True)
    return manifest


def write_rejection(root: str | Path, index: int, *, reason: str, record: dict) -> dict:
    """Mark `index` as rejected by its recipe (so a rerun does not redo it) and keep the reason."""
    folder = sample_dir(root, index)
    remove_temp_files(folder)
    entry = {"format": FORMAT, "index": index, "reason": reason, **record}
    atomic_write_json(folder / REJECTED_FILE, entry, sort_keys=True)
    return entry


def append_log(root: str | Path, rank: int, entry: dict) -> None:
    """One JSON line per event in OUT/logs/rank-R.jsonl (each rank appends to its own file)."""
    path = Path(root) / "logs" / f"rank-{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def iter_samples(root: str | Path) -> Iterator[dict]:
    """Manifests of every made sample, by index; each gets `dir` (its folder). Temporaries are never read."""
    root = Path(root)
    read_dataset_info(root)
    for path in sorted((root / "samples").glob(f"*/*/{MANIFEST_FILE}")):
        manifest = read_json(path, "sample manifest")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), dict):
            raise ValueError(f"{path}: not a sample manifest (no 'images' mapping)")
        manifest["dir"] = str(path.parent)
        yield manifest


def iter_rejections(root: str | Path) -> Iterator[dict]:
    for path in sorted((Path(root) / "samples").glob(f"*/*/{REJECTED_FILE}")):
        yield json.loads(path.read_text(encoding="utf-8"))


def image_paths(manifest: dict) -> dict[str, Path]:
    """Role -> path of every RGB image of one sample (the files an embedding cache holds). A manifest names files
    of its own folder only: a name with a folder in it (`../../secret.png`) is refused, never followed."""
    return {role: sample_file(manifest["dir"], role, name) for role, name in manifest["images"].items()}


def sample_file(folder: str | Path, role: str, name) -> Path:
    """The file `name` of a sample folder; a name with a folder in it (`../../secret.png`) is refused, never read."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        where = Path(folder) / MANIFEST_FILE
        raise ValueError(f"{where}: {role!r} is {name!r}, a file outside its sample folder; refused")
    return Path(folder) / name
