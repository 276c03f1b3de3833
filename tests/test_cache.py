"""The content-keyed embedding cache: encode once, verify shards, never use a corrupt one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from pops.embeddings.cache import EmbeddingCache, image_key
from tests.helpers.images import random_images


class CountingEncoder:
    """A cheap deterministic image encoder that records how many images it was asked to encode."""

    modality = "image"
    dim = 6
    encoder_id = "counting/mean-std-rgb"

    def __init__(self):
        self.calls = 0
        self.encoded = 0

    def encode(self, items, *, batch_size=32, progress=False):
        self.calls += 1
        self.encoded += len(items)
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in items])
        return torch.cat([x.mean(dim=(1, 2)), x.std(dim=(1, 2))], dim=1)


def shards(cache: EmbeddingCache):
    return sorted(cache.folder.glob("shard-*.safetensors"))


def test_image_key_is_content():
    a = random_images(1, size=16)[0]
    assert image_key(a) == image_key(a.copy())
    assert image_key(a) != image_key(a.convert("L")) != image_key(a.resize((8, 8)))
    flipped = np.asarray(a).copy()
    flipped[0, 0, 0] ^= 1  # one bit of one pixel
    assert image_key(a) != image_key(Image.fromarray(flipped))
    # Same pixel indices, different palette: different images.
    p1 = Image.new("P", (4, 4), 1)
    p2 = p1.copy()
    p1.putpalette([0, 0, 0, 255, 0, 0] * 128)
    p2.putpalette([0, 0, 0, 0, 0, 255] * 128)
    assert image_key(p1) != image_key(p2)
    with pytest.raises(ValueError):
        image_key("not an image")  # type: ignore[arg-type]


def test_second_run_encodes_nothing(tmp_path):
    imgs = random_images(10, size=16)
    enc = CountingEncoder()
    first = EmbeddingCache(tmp_path, enc, batch_size=4, shard_size=6)
    a = first.encode(imgs + imgs[:3], progress=False)  # duplicates inside one call are encoded once
    assert enc.encoded == 10 and first.stats.encoded == 10 and first.stats.hits == 0
    assert len(shards(first)) == 2  # 10 misses, at most 6 per shard
    assert torch.equal(a[:10], enc.encode(imgs)) and torch.equal(a[10:], a[:3])

    enc2 = CountingEncoder()
    second = EmbeddingCache(tmp_path, enc2)  # a new process: reads the shards
    b = second.encode(imgs[::-1], progress=False)
    assert enc2.encoded == 0 and second.stats.hits == 10 and second.stats.misses == 0
    assert torch.equal(b, a[:10].flip(0))
    assert len(second) == 10 and imgs[0] in second and random_images(1, seed=9, size=16)[0] not in second

    # New images only: one more shard, old ones untouched.
    c = second.encode(imgs[:2] + random_images(3, seed=1, size=16), progress=False)
    assert enc2.encoded == 3 and len(shards(second)) == 3 and c.shape == (5, 6)


def test_encoder_id_namespaces(tmp_path):
    imgs = random_images(3, size=16)
    EmbeddingCache(tmp_path, CountingEncoder()).encode(imgs, progress=False)
    other = CountingEncoder()
    EmbeddingCache(tmp_path, other, encoder_id="counting/other-preprocessing").encode(imgs, progress=False)
    assert other.encoded == 3  # another encoder id never sees these embeddings
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path, object(), encoder_id="")


@pytest.mark.parametrize("damage", ["payload", "header", "truncate"])
def test_corrupt_shard_is_detected_and_reencoded(tmp_path, caplog, damage):
    imgs = random_images(5, size=16)
    good = EmbeddingCache(tmp_path, CountingEncoder()).encode(imgs, progress=False)
    (shard,) = shards(EmbeddingCache(tmp_path, CountingEncoder()))
    data = bytearray(shard.read_bytes())
    if damage == "payload":
        data[-3] ^= 0xFF  # inside the last embedding
    elif damage == "header":
        data[20] ^= 0xFF  # inside the JSON header
    else:
        data = data[: len(data) // 2]
    shard.write_bytes(bytes(data))

    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc)
    with caplog.at_level(logging.WARNING, logger="pops.embeddings.cache"):
        again = cache.encode(imgs, progress=False)
    assert shard.name in caplog.text and "corrupt" in caplog.text
    assert enc.encoded == 5 and cache.stats.discarded_shards == 1
    assert torch.equal(again, good)  # the damaged values were never returned
    assert not shard.exists() and shard.with_name(shard.name + ".corrupt").exists()
    assert len(shards(cache)) == 1  # the re-encoded shard
    enc3 = CountingEncoder()
    EmbeddingCache(tmp_path, enc3).encode(imgs, progress=False)
    assert enc3.encoded == 0


def test_half_written_shard_is_never_loaded(tmp_path):
    imgs = random_images(4, size=16)
    cache = EmbeddingCache(tmp_path, CountingEncoder())
    cache.encode(imgs, progress=False)
    (shard,) = shards(cache)
    # What a crash mid-write leaves behind: a temp file, under a name the loader never reads.
    (cache.folder / ".tmp-crashed.part").write_bytes(shard.read_bytes()[:100])
    enc = CountingEncoder()
    assert torch.equal(EmbeddingCache(tmp_path, enc).encode(imgs, progress=False), cache.encode(imgs, progress=False))
    assert enc.encoded == 0


def test_unwritable_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    enc = CountingEncoder()
    cache = EmbeddingCache(blocker / "cache", enc)
    with pytest.raises(PermissionError, match="not writable"):
        cache.encode(random_images(2, size=16), progress=False)
    assert enc.encoded == 0  # it fails before doing any encoding work


def test_empty_and_real_encoder(tmp_path):
    from pops.encoders.efficientnet import EfficientNetEncoder

    enc = EfficientNetEncoder(64, bf16=False)
    cache = EmbeddingCache(tmp_path, enc)
    assert cache.encode([], progress=False).shape == (0, 1280)
    imgs = random_images(3, size=64)
    cached = cache.encode(imgs, progress=False)
    assert torch.equal(cached, enc.encode(imgs))
    assert torch.equal(EmbeddingCache(tmp_path, enc).encode(imgs, progress=False), cached)
