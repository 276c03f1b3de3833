"""Encode every image of a generated dataset into the embedding cache (`pops embed`), sharded over processes."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from pops.base.readers import read_image
from pops.generate.sharding import current_shard, gather
from pops.generate.storage import image_paths, iter_samples


@dataclass
class EmbedSummary:
    images: int = 0  # images this run looked at
    encoded: int = 0  # of which went through the encoder (the rest were in the cache already)
    undecodable: int = 0  # skipped: the file could not be decoded
    bad_files: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.images} images: {self.encoded} encoded, {self.images - self.encoded - self.undecodable} "
            f"already cached, {self.undecodable} undecodable (skipped)"
        )


def dataset_images(dataset_dir: str | Path) -> list[tuple[int, str, Path]]:
    """(sample index, role, path) of every RGB image of every made sample, in index order."""
    return [(m["index"], role, path) for m in iter_samples(dataset_dir) for role, path in image_paths(m).items()]


def open_rgb(path: Path) -> Image.Image:
    """The image as RGB: the pixels the cache is keyed on (open the file the same way to look it up later); a
    damaged file, or a decompression bomb, is a ValueError (pops.base.readers.read_image)."""
    return read_image(path)


def embed_dataset(dataset_dir: str | Path, cache, *, chunk_size: int = 256, progress: bool = True) -> EmbedSummary:
    """Put the embedding of every image of `dataset_dir` into `cache` (a pops.embeddings.cache.EmbeddingCache).

    Each rank encodes its slice of the image list; the cache writes uniquely named shards, so ranks never clash.
    A file that cannot be decoded is skipped and reported. Returns the totals over all ranks.
    """
    entries = dataset_images(dataset_dir)
    if not entries:
        raise ValueError(f"{dataset_dir} holds no samples yet; run `pops generate` first")
    shard = current_shard(range(len(entries)))
    mine = EmbedSummary()
    bar = tqdm(
        total=len(shard.indices),
        desc=f"embedding [rank {shard.rank}/{shard.world_size}]",
        unit="img",
        position=shard.rank,
        disable=not progress,
        dynamic_ncols=True,
    )
    for start in range(0, len(shard.indices), chunk_size):
        images = []
        for i in shard.indices[start : start + chunk_size]:
            path = entries[i][2]
            try:
                images.append(open_rgb(path))
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError ... for damaged files
                mine.undecodable += 1
                mine.bad_files.append(str(path))
                tqdm.write(
                    f"[rank {shard.rank}] skipping undecodable image {path}: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
        before = cache.stats.encoded
        if images:
            cache.encode(images, progress=False)
        mine.encoded += cache.stats.encoded - before
        mine.images += len(shard.indices[start : start + chunk_size])
        bar.update(len(shard.indices[start : start + chunk_size]))
    bar.close()
    total = EmbedSummary()
    for r in gather(asdict(mine)):
        total.images += r["images"]
        total.encoded += r["encoded"]
        total.undecodable += r["undecodable"]
        total.bad_files += r["bad_files"]
    return total
