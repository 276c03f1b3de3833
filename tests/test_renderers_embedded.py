"""The embedded world's renderers: nearest-neighbour retrieval and the small trained decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pops.renderers import RENDERER_TYPES, Renderer, load_renderer, renderer_type
from pops.renderers.decoder import (
    DecoderConfig,
    DecoderRenderer,
    decoder_fidelity,
    encoder_embeds,
    train_decoder,
)
from pops.renderers.retrieval import RetrievalRenderer

COLOURS = [(220, 30, 30), (30, 60, 220), (30, 170, 60), (235, 210, 30)]


def shape_image(i: int, size: int = 32) -> Image.Image:
    """Image i: one of 4 colours x 2 shapes (disc / square), drawn on white."""
    img = Image.new("RGB", (size, size), "white")
    colour, box = COLOURS[i % 4], [size * 0.2, size * 0.2, size * 0.8, size * 0.8]
    (ImageDraw.Draw(img).ellipse if (i // 4) % 2 == 0 else ImageDraw.Draw(img).rectangle)(box, fill=colour)
    return img


def fake_embeds(imgs: list[Image.Image], dim: int = 24) -> torch.Tensor:
    """A fixed random projection of 4x4 thumbnails: embeddings that determine their images."""
    x = torch.stack([torch.from_numpy(np.asarray(im.resize((4, 4), Image.BOX), dtype=np.float32) / 255) for im in imgs])
    proj = torch.randn(x[0].numel(), dim, generator=torch.Generator().manual_seed(0))
    return x.flatten(1) @ proj


class ThumbnailEncoder:
    """Encodes pictures the way `fake_embeds` does (for the fidelity measure)."""

    modality, dim = "image", 24

    def encode(self, items, *, batch_size=32, progress=False):
        return fake_embeds(list(items), self.dim)


def test_retrieval_returns_the_gallery_image():
    imgs = [shape_image(i) for i in range(8)]
    embeds = fake_embeds(imgs)
    r = RetrievalRenderer(embeds, imgs)
    assert isinstance(r, Renderer)
    assert torch.equal(r.gallery, embeds)  # kept raw
    out = r.render(embeds[[5, 0, 7]])
    assert [np.array_equal(np.asarray(o), np.asarray(imgs[i])) for o, i in zip(out, [5, 0, 7])] == [True] * 3
    idx, scores = r.nearest(embeds * 3.0, k=3)  # cosine: the scale of an embedding does not matter
    assert idx.shape == scores.shape == (8, 3)
    assert torch.equal(idx[:, 0], torch.arange(8)) and torch.allclose(scores[:, 0], torch.ones(8), atol=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    idx1, _ = r.nearest(embeds[2], k=1)  # a single (D,) embedding
    assert idx1.tolist() == [[2]]


def test_retrieval_bad_input():
    imgs = [shape_image(i) for i in range(3)]
    with pytest.raises(ValueError):
        RetrievalRenderer(fake_embeds(imgs), imgs[:2])
    r = RetrievalRenderer(fake_embeds(imgs), imgs)
    with pytest.raises(ValueError):
        r.nearest(torch.zeros(2, 5))
    with pytest.raises(ValueError):
        r.nearest(torch.zeros(2, 24), k=4)


@pytest.fixture(scope="module")
def trained():
    imgs = [shape_image(i) for i in range(8)]
    embeds = fake_embeds(imgs)
    config = DecoderConfig(embed_dim=24, image_size=16, base_channels=8, max_channels=32)
    # A toy model gains nothing from threads, and on a busy machine their synchronisation costs seconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        renderer = train_decoder(embeds, imgs, steps=150, batch_size=8, lr=1e-2, config=config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return imgs, embeds, renderer


def test_decoder_trains_and_reduces_its_loss(trained):
    imgs, embeds, renderer = trained
    assert isinstance(renderer, Renderer) and len(renderer.losses) == 150
    assert np.mean(renderer.losses[-10:]) < 0.5 * np.mean(renderer.losses[:5])
    out = renderer.render(embeds)
    assert len(out) == 8 and out[0].size == (16, 16) and out[0].mode == "RGB"
    # It draws the right colour in the middle of each picture.
    centre = np.stack([np.asarray(o, dtype=np.float32)[6:10, 6:10].mean((0, 1)) for o in out])
    truth = np.array([COLOURS[i % 4] for i in range(8)], dtype=np.float32)
    assert np.abs(centre - truth).mean() < 40


def test_decoder_fidelity_beats_chance(trained):
    imgs, embeds, renderer = trained
    fid = decoder_fidelity(renderer, ThumbnailEncoder(), embeds)
    assert fid["chance_top1"] == pytest.approx(1 / 8)
    assert fid["top1"] >= 0.75 and fid["top5"] == 1.0
    assert fid["cos_to_source"] > fid["cos_to_others"]


def test_decoder_save_load_round_trip(trained, tmp_path):
    _, embeds, renderer = trained
    renderer.save_pretrained(tmp_path / "dec")
    loaded = DecoderRenderer.from_pretrained(tmp_path / "dec")
    assert loaded.config == renderer.config
    assert torch.equal(loaded.decode(embeds), renderer.decode(embeds))
    big = DecoderRenderer.from_pretrained(tmp_path / "dec", output_size=48).render(embeds[:2])
    assert [p.size for p in big] == [(48, 48)] * 2
    assert not list((tmp_path / "dec").glob("*.part"))  # no temp files left behind
    assert json.loads((tmp_path / "dec" / "renderer.json").read_text())["type"] == "decoder"  # self-describing folder
    with pytest.raises(FileNotFoundError):
        DecoderRenderer.from_pretrained(tmp_path / "nothing-here")
    weights = tmp_path / "dec" / "decoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot load"):
        DecoderRenderer.from_pretrained(tmp_path / "dec")


def test_saved_renderers_load_by_the_type_their_folder_names(trained, tmp_path):
    imgs, embeds, decoder = trained
    retrieval = RetrievalRenderer(embeds, imgs)
    retrieval.save_pretrained(tmp_path / "ret")
    decoder.save_pretrained(tmp_path / "dec")
    assert renderer_type(tmp_path / "ret") == "retrieval" and renderer_type(tmp_path / "dec") == "decoder"
    assert set(RENDERER_TYPES) >= {"retrieval", "decoder"}
    loaded = load_renderer(tmp_path / "ret")
    assert isinstance(loaded, RetrievalRenderer) and torch.equal(loaded.gallery, retrieval.gallery)
    assert [im.tobytes() for im in loaded.render(embeds)] == [im.tobytes() for im in retrieval.render(embeds)]
    assert torch.equal(load_renderer(tmp_path / "dec").decode(embeds), decoder.decode(embeds))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "renderer.json").write_text(json.dumps({"type": "no-such-renderer"}))
    with pytest.raises(ValueError, match="no saved renderer"):
        load_renderer(tmp_path / "other")
    config = json.loads((tmp_path / "dec" / "renderer.json").read_text())
    (tmp_path / "dec" / "renderer.json").write_text(json.dumps({**config, "image_sise": 32}))
    with pytest.raises(ValueError, match="image_sise"):  # a typo in the config is refused, not ignored
        load_renderer(tmp_path / "dec")


def test_decoder_bad_input():
    imgs = [shape_image(i) for i in range(4)]
    with pytest.raises(ValueError):
        train_decoder(fake_embeds(imgs)[:3], imgs, steps=1)
    with pytest.raises(ValueError):
        train_decoder(fake_embeds(imgs), imgs, steps=1, embedding_weight=-1.0)
    for bad in (dict(image_size=48), dict(image_size=8), dict(image_size=16, stem_size=1)):
        with pytest.raises(ValueError, match="image_size|stem_size"):
            DecoderConfig(**bad).channels()
    assert DecoderConfig(image_size=64, base_channels=16, max_channels=256).channels() == [128, 64, 32, 16]
    assert DecoderConfig(image_size=64, stem_size=4, base_channels=16, max_channels=256).channels() == [
        256,
        128,
        64,
        32,
        16,
    ]


def test_decoder_of_another_weights_format_is_refused(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, renderer = trained
    renderer.save_pretrained(tmp_path / "dec")
    weights = tmp_path / "dec" / "decoder.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pops-decoder/1"})  # an older pops
    with pytest.raises(ValueError, match="pops-decoder/1"):
        load_renderer(tmp_path / "dec")


def textured_image(i: int, size: int = 32) -> Image.Image:
    """Image i of 8: a disc or a square, filled with stripes of one of 4 colour pairs (texture, not flat colour)."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    colour, other = COLOURS[i % 4], COLOURS[(i + 1) % 4]
    box = [size * 0.15, size * 0.15, size * 0.85, size * 0.85]
    (draw.ellipse if (i // 4) % 2 == 0 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(img).copy()
    inside = (pixels != 255).any(-1) & (np.arange(size)[None, :] // 2 % 2 == 0)
    pixels[inside] = other
    return Image.fromarray(pixels)


def test_the_embedding_loss_sees_the_pictures_as_the_fidelity_measure_does(one_torch_thread):
    """The real encoder (EfficientNet-Lite0 at 32 px): `encoder_embeds` on decoder pixels is what the encoder makes of
    the rendered pictures, and a decoder trained with that loss re-encodes to its sources far above an untrained
    one and chance."""
    from pops.encoders.efficientnet import EfficientNetEncoder

    encoder = EfficientNetEncoder(32, bf16=False)
    imgs = [textured_image(i) for i in range(8)]
    embeds = encoder.encode(imgs)
    config = DecoderConfig(image_size=16, base_channels=16, max_channels=32)
    # fp32: bf16 autocast rounds differently on each CPU (measured: 5 of 8 right at 40 steps on one, 6 on another)
    common = dict(steps=60, batch_size=8, lr=1e-2, config=config, progress=False, bf16=False)
    trained = train_decoder(embeds, imgs, encoder=encoder, embedding_batch=8, **common)
    untrained = train_decoder(embeds, imgs, encoder=encoder, **{**common, "steps": 1})
    pixels = trained.decode(embeds)
    through_loss = encoder_embeds(encoder, pixels)
    through_pictures = encoder.encode(trained.render(embeds))
    assert torch.nn.functional.cosine_similarity(through_loss, through_pictures).min() > 0.98
    good, bad = decoder_fidelity(trained, encoder, embeds), decoder_fidelity(untrained, encoder, embeds)
    assert good["top1"] >= 0.5 and good["top1"] > bad["top1"]  # chance: 1 in 8
    assert good["cos_to_source"] > bad["cos_to_source"] + 0.1
    with pytest.raises(ValueError, match="1280-d"):
        train_decoder(embeds[:, :24], imgs, encoder=encoder, steps=1, config=DecoderConfig(embed_dim=24))
