"""Content-keyed embedding cache: every image is encoded once, then read back as an embedding in every later run.

Layout: `root/<encoder namespace>/shard-<unique>.safetensors`. The namespace folder is derived from the encoder id
(model + preprocessing + resolution + precision), so embeddings of different encoders never mix. A shard holds
two tensors, `keys` (N, 32) uint8 (sha256 digests of the images' pixels, mode and size) and `embeddings`
(N, dim) float32, and metadata: the encoder id, the dim and a sha256 checksum of both tensors' bytes.

Safety: shards are written to a hidden temp file in the same folder and `os.replace`d into place, so a crash never
leaves a half-written shard under a name that is loaded. A shard that fails to parse, belongs to another encoder
or whose checksum does not match is logged (a warning naming the file), renamed to `*.corrupt` and ignored: its
images count as misses and are encoded again. Nothing unverified is ever returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load, save
from tqdm.auto import tqdm

from pops.base.files import atomic_write_bytes, check_writable, tensor_digest

logger = logging.getLogger(__name__)

FORMAT = "pops-embedding-cache/1"
SHARD_GLOB = "shard-*.safetensors"


# image_key and namespace_dir hash with hashlib directly (not pops.base.files.digest, which hashes JSON): they name what
# existing caches hold, so their bytes must never change.
def image_key(img: Image.Image) -> str:
    """sha256 hex digest of an image's content: mode, size, raw pixels (and the palette of a "P" image)."""
    if not isinstance(img, Image.Image):
        raise ValueError(f"expected a PIL image, got {type(img).__name__}")
    h = hashlib.sha256(f"{img.mode}:{img.width}x{img.height}:".encode())
    if img.mode == "P" and img.getpalette() is not None:
        h.update(bytes(img.getpalette()))
    h.update(img.tobytes())
    return h.hexdigest()


def namespace_dir(encoder_id: str) -> str:
    """A folder name for an encoder id: readable slug + short hash (ids differing only in punctuation stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", encoder_id).strip("-.")[:80] or "encoder"
    return f"{slug}-{hashlib.sha256(encoder_id.encode()).hexdigest()[:10]}"


@dataclass
class CacheStats:
    """Counts over this cache object's lifetime: inputs found, inputs not found, images run through the encoder."""

    hits: int = 0
    misses: int = 0
    encoded: int = 0
    discarded_shards: int = 0


class EmbeddingCache:
    """Looks images up by content; encodes only the ones never seen before and stores them as a new shard.

    `encoder` implements the `Encoder` protocol (modality "image"). `encoder_id` names the encoder and its
    preprocessing; it defaults to `encoder.encoder_id`. `batch_size` is the encoder's batch; `shard_size` bounds a
    shard, so a long encoding run is saved as it goes.
    """

    def __init__(
        self,
        root: str | Path,
        encoder: Any,
        encoder_id: str | None = None,
        *,
        batch_size: int = 64,
        shard_size: int = 2048,
    ):
        encoder_id = encoder_id if encoder_id is not None else getattr(encoder, "encoder_id", None)
        if not encoder_id:
            raise ValueError("EmbeddingCache needs an encoder_id (model + preprocessing) to namespace its shards")
        if batch_size < 1 or shard_size < 1:
            raise ValueError("batch_size and shard_size must be positive")
        self.root = Path(root)
        self.encoder = encoder
        self.encoder_id = encoder_id
        self.dim = int(encoder.dim)
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.folder = self.root / namespace_dir(encoder_id)
        self.stats = CacheStats()
        self._index: dict[bytes, torch.Tensor] | None = None  # digest -> (dim,) embedding; loaded on first use

    # ---- reading -------------------------------------------------------------------------------------------
    def _read_shard(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, embeddings) of a verified shard; ValueError says what is wrong with it."""
        data = path.read_bytes()  # one read: the checksum is verified on exactly the bytes that are used
        try:
            tensors = load(data)
            # The safetensors header: u64 little-endian length, then JSON whose "__metadata__" holds our strings.
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"unreadable safetensors ({type(exc).__name__}: {exc})") from None
        keys, embeds = tensors.get("keys"), tensors.get("embeddings")
        if meta.get("format") != FORMAT or keys is None or embeds is None:
            raise ValueError("not an embedding-cache shard")
        if meta.get("encoder_id") != self.encoder_id:
            raise ValueError(f"written by encoder {meta.get('encoder_id')!r}, expected {self.encoder_id!r}")
        if embeds.ndim != 2 or embeds.shape[1] != self.dim or keys.shape != (embeds.shape[0], 32):
            raise ValueError(f"unexpected shapes keys {tuple(keys.shape)}, embeddings {tuple(embeds.shape)}")
        if meta.get("sha256") != tensor_digest([keys, embeds]):
            raise ValueError("checksum mismatch")
        return keys, embeds

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("embedding cache: discarding corrupt shard %s (%s); its images will be re-encoded", path, reason)
        self.stats.discarded_shards += 1
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:  # read-only cache: it stays on disk but is never used
            pass

    def _load_index(self) -> dict[bytes, torch.Tensor]:
        if self._index is None:
            self._index = {}
            for path in sorted(self.folder.glob(SHARD_GLOB)) if self.folder.is_dir() else []:
                try:
                    keys, embeds = self._read_shard(path)
                except (ValueError, OSError) as exc:
                    self._discard(path, str(exc))
                    continue
                for key, row in zip(keys.numpy(), embeds):
                    self._index.setdefault(key.tobytes(), row)
        return self._index

    def __len__(self) -> int:
        return len(self._load_index())

    def __contains__(self, img: Image.Image) -> bool:
        return bytes.fromhex(image_key(img)) in self._load_index()

    # ---- writing -------------------------------------------------------------------------------------------
    def _write_shard(self, digests: list[bytes], embeds: torch.Tensor) -> Path:
        keys = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).reshape(len(digests), 32)
        embeds = embeds.detach().to(torch.float32).contiguous()
        digest = tensor_digest([keys, embeds])
        meta = {"format": FORMAT, "encoder_id": self.encoder_id, "dim": str(self.dim), "sha256": digest}
        data = save({"keys": keys, "embeddings": embeds}, metadata=meta)
        return atomic_write_bytes(self.folder / f"shard-{uuid.uuid4().hex}.safetensors", data)

    # ---- the one call most code needs ----------------------------------------------------------------------
    def encode(self, images: Sequence[Image.Image], progress: bool = True) -> torch.Tensor:
        """(N, dim) float32 embeddings of `images`, in order; only images not in the cache go through the encoder."""
        index = self._load_index()
        digests = [bytes.fromhex(image_key(img)) for img in images]
        todo: dict[bytes, Image.Image] = {}
        for digest, img in zip(digests, images):
            if digest in index:
                self.stats.hits += 1
            else:
                self.stats.misses += 1
                todo.setdefault(digest, img)
        if todo:
            check_writable(self.folder, "embedding cache folder")  # fail before any encoding work
            pending = list(todo.items())
            bar = tqdm(total=len(pending), desc="encoding images (cache misses)", unit="img", disable=not progress)
            for s in range(0, len(pending), self.shard_size):
                chunk = pending[s : s + self.shard_size]
                rows = []
                for b in range(0, len(chunk), self.batch_size):
                    batch = [img for _, img in chunk[b : b + self.batch_size]]
                    rows.append(self.encoder.encode(batch, batch_size=self.batch_size, progress=False).float())
                    bar.update(len(batch))
                embeds = torch.cat(rows)
                if embeds.shape != (len(chunk), self.dim):
                    raise ValueError(f"encoder returned {tuple(embeds.shape)}, expected {(len(chunk), self.dim)}")
                self._write_shard([d for d, _ in chunk], embeds)
                index.update(zip((d for d, _ in chunk), embeds))
                self.stats.encoded += len(chunk)
            bar.close()
        if not digests:
            return torch.empty(0, self.dim)
        return torch.stack([index[d] for d in digests])
