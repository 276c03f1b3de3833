"""The real stack (CLIP ViT-bigG encoders, Kandinsky 2.2 and SDXL + IP-Adapter renderers, the hub helper, `pops
render`) proven end to end on tiny random models of the same classes, built here — nothing is downloaded."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.cli import run_cli
from tests.helpers.images import assert_close_images, pixels, random_images
from tests.helpers.real_stack import (
    SIZE,
    D,
    text_config,
    tiny_controlnet,
    tiny_depth_estimator,
    tiny_ip_adapter_state_dict,
    tiny_kandinsky_decoder,
    tiny_sdxl,
    tiny_vision,
)
from tests.helpers.tokenizers import write_tokenizer_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----- tiny components (built by tests/helpers/real_stack.py) ---------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_tokenizer_files(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="module")
def image_encoder():
    from pops.encoders.clip import CLIPImageEncoder

    return CLIPImageEncoder(*tiny_vision())


@pytest.fixture(scope="module")
def text_encoder(tokenizer):
    from transformers import CLIPTextModelWithProjection

    from pops.encoders.clip import CLIPTextEncoder

    torch.manual_seed(6)
    return CLIPTextEncoder(CLIPTextModelWithProjection(text_config(tokenizer)), tokenizer)


@pytest.fixture(scope="module")
def embeds():
    return torch.randn(3, D, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def kandinsky(image_encoder):
    from pops.renderers.kandinsky import KandinskyRenderer

    r = KandinskyRenderer.from_components(
        **tiny_kandinsky_decoder(), image_encoder=image_encoder, num_inference_steps=2, size=SIZE
    )
    r.pipe.set_progress_bar_config(disable=True)
    return r


@pytest.fixture(scope="module")
def ipadapter(tokenizer):
    from pops.renderers.ipadapter import IPAdapterRenderer

    parts = tiny_sdxl(tokenizer)
    r = IPAdapterRenderer.from_components(
        ip_adapter=tiny_ip_adapter_state_dict(parts["unet"]), **parts, num_inference_steps=2, size=SIZE
    )
    r.pipe.set_progress_bar_config(disable=True)
    return r


@pytest.fixture(scope="module")
def depth_renderer(tokenizer):
    from pops.renderers.ipadapter_depth import DepthEstimator, IPAdapterDepthRenderer

    parts = tiny_sdxl(tokenizer)
    r = IPAdapterDepthRenderer.from_components(
        ip_adapter=tiny_ip_adapter_state_dict(parts["unet"]),
        controlnet=tiny_controlnet(parts["unet"]),
        depth_estimator=DepthEstimator(*tiny_depth_estimator()),
        **parts,
        num_inference_steps=2,
        size=SIZE,
    )
    r.pipe.set_progress_bar_config(disable=True)
    return r


# ----- encoders ------------------------------------------------------------------------------------------------------
def test_image_encoder_embeds_and_zero_image_negative(image_encoder, tmp_path):
    from pops.encoders import Encoder

    assert isinstance(image_encoder, Encoder) and image_encoder.dim == D
    images = random_images(3)
    images[2].save(tmp_path / "c.png")
    out = image_encoder.encode([images[0], images[1], tmp_path / "c.png"], batch_size=2)
    assert out.shape == (3, D) and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, image_encoder.encode(images), atol=1e-5, rtol=1e-5)  # batching changes nothing
    assert not torch.allclose(out[0], out[1])

    zero = image_encoder.zero_image_embedding()
    assert zero.shape == (1, D)
    with torch.no_grad():  # the reference: zero *pixel values* at the crop size, straight through the model
        expected = image_encoder.model(pixel_values=torch.zeros(1, 3, 32, 32)).image_embeds
    torch.testing.assert_close(zero, expected)
    black = image_encoder.encode([Image.new("RGB", (32, 32))])  # a black picture is normalised first: not the same
    assert not torch.allclose(zero, black, atol=1e-4)

    with pytest.raises(FileNotFoundError):
        image_encoder.encode([tmp_path / "missing.png"])
    with pytest.raises(ValueError):
        image_encoder.encode([42])


def test_text_encoder_text_embeds_and_token_rows(text_encoder, tokenizer):
    from pops.encoders import TextEncoder

    assert isinstance(text_encoder, TextEncoder) and text_encoder.width == 32 and text_encoder.dim == D
    texts = ["red", "a red cat"]
    embeds = text_encoder.encode(texts)
    rows = text_encoder.token_rows(texts)
    # BOS + word tokens + EOS: "red" is one merged token, "a red cat" three.
    assert embeds.shape == (2, D) and [r.shape for r in rows] == [(3, 32), (5, 32)]
    for text, row, emb in zip(texts, rows, embeds):
        ids = torch.tensor([tokenizer(text).input_ids])
        with torch.no_grad():
            out = text_encoder.model(input_ids=ids)  # unpadded: padding must not leak into the rows
        torch.testing.assert_close(row, out.last_hidden_state[0], atol=1e-5, rtol=1e-5)  # not normalised/projected
        torch.testing.assert_close(emb, out.text_embeds[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        text_encoder.token_rows("red")


def test_encoders_load_from_a_local_folder(image_encoder, text_encoder, tmp_path):
    from pops.encoders import load_encoder
    from pops.encoders.clip import CLIPImageEncoder, CLIPTextEncoder

    image_encoder.model.save_pretrained(tmp_path / "image_encoder")
    image_encoder.processor.save_pretrained(tmp_path / "image_processor")
    text_encoder.model.save_pretrained(tmp_path / "text_encoder")
    text_encoder.tokenizer.save_pretrained(tmp_path / "tokenizer")
    images, texts = random_images(2, seed=1), ["a cat", "red"]

    loaded = CLIPImageEncoder.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded.encode(images), image_encoder.encode(images))
    torch.testing.assert_close(loaded.zero_image_embedding(), image_encoder.zero_image_embedding())
    again = load_encoder(loaded.to_config())  # operator folders record the encoder by its config
    assert isinstance(again, CLIPImageEncoder) and again.encoder_id == loaded.encoder_id

    # The reference's inference resize (a squash to 512² before the processor) is an option that travels in the
    # config: it changes the embedding of a non-square picture, and equals resizing by hand.
    squashed = CLIPImageEncoder.from_pretrained(str(tmp_path), resize=512)
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 140, 3), dtype=np.uint8))
    assert not torch.allclose(squashed.encode([wide]), loaded.encode([wide]))
    torch.testing.assert_close(squashed.encode([wide]), loaded.encode([wide.resize((512, 512))]))
    rebuilt = load_encoder(squashed.to_config())
    assert rebuilt.resize == 512 and rebuilt.encoder_id == squashed.encoder_id != loaded.encoder_id

    loaded_text = CLIPTextEncoder.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded_text.encode(texts), text_encoder.encode(texts))
    assert isinstance(load_encoder(loaded_text.to_config()), CLIPTextEncoder)


# ----- renderers -----------------------------------------------------------------------------------------------------
def test_kandinsky_renders_a_batch_with_the_zero_image_negative(kandinsky, image_encoder, embeds, monkeypatch):
    from pops.renderers import Renderer
    from pops.renderers.pipelines import seeded_generators

    assert isinstance(kandinsky, Renderer)
    calls = []
    original = type(kandinsky.pipe).__call__

    def spy(pipe, **kwargs):
        calls.append(kwargs)
        return original(pipe, **kwargs)

    monkeypatch.setattr(type(kandinsky.pipe), "__call__", spy)
    images = kandinsky.render(embeds, generator=seeded_generators(0, 3))
    assert len(calls) == 1  # B embeddings, one pipeline call
    negative = calls[0]["negative_image_embeds"]
    torch.testing.assert_close(negative, image_encoder.zero_image_embedding().expand(3, -1))
    assert calls[0]["guidance_scale"] == 4.0 and calls[0]["num_inference_steps"] == 2
    assert [im.size for im in images] == [(SIZE, SIZE)] * 3 and all(im.mode == "RGB" for im in images)
    assert all(pixels([im]).std() > 0 for im in images)  # NaNs would decode to a flat image

    again = kandinsky.render(embeds, generator=seeded_generators(0, 3))
    assert (pixels(images) == pixels(again)).all()  # same seeds, same pictures
    assert_close_images(images[1:2], kandinsky.render(embeds[1:2], generator=seeded_generators(1, 1)))
    assert not (pixels(images) == pixels(kandinsky.render(embeds, generator=seeded_generators(5, 3)))).all()
    with pytest.raises(ValueError, match="expects 32-d"):
        kandinsky.render(torch.zeros(2, 16))


def test_ipadapter_gives_every_prompt_its_own_embedding(ipadapter, embeds, monkeypatch):
    from pops.renderers import Renderer
    from pops.renderers.ipadapter import NEGATIVE_PROMPT, ip_adapter_image_embeds
    from pops.renderers.pipelines import seeded_generators

    assert isinstance(ipadapter, Renderer) and ipadapter.dim == D
    e = embeds[:1]  # for one embedding, the layout is the reference's stack([zeros, e])
    torch.testing.assert_close(ip_adapter_image_embeds(e)[0], torch.stack([torch.zeros_like(e), e]))

    seen, prompts = [], []
    unet_forward = ipadapter.pipe.unet.forward
    encode_prompt = ipadapter.pipe.encode_prompt

    def spy_unet(*args, added_cond_kwargs=None, **kwargs):
        seen.append(added_cond_kwargs["image_embeds"][0].clone())
        return unet_forward(*args, added_cond_kwargs=added_cond_kwargs, **kwargs)

    def spy_prompt(*args, **kwargs):
        prompts.append(kwargs)
        return encode_prompt(*args, **kwargs)

    monkeypatch.setattr(ipadapter.pipe.unet, "forward", spy_unet)
    monkeypatch.setattr(ipadapter.pipe, "encode_prompt", spy_prompt)
    images = ipadapter.render(embeds, generator=seeded_generators(0, 3))
    assert [im.size for im in images] == [(SIZE, SIZE)] * 3 and all(pixels([im]).std() > 0 for im in images)
    assert prompts[0]["prompt"] == [""] * 3 and prompts[0]["negative_prompt"] == [NEGATIVE_PROMPT] * 3
    # Guidance batch: the zeros (uncond) for all three prompts, then each prompt's own embedding — not repeated.
    assert len(seen) == 2  # two steps, each with the full guidance batch
    torch.testing.assert_close(seen[0], torch.cat([torch.zeros_like(embeds), embeds])[:, None])
    monkeypatch.undo()

    assert "prepare_ip_adapter_image_embeds" not in vars(ipadapter.pipe)  # the per-prompt hook is removed again
    again = ipadapter.render(embeds, generator=seeded_generators(0, 3))
    assert (pixels(images) == pixels(again)).all()
    assert_close_images(images[2:3], ipadapter.render(embeds[2:3], generator=seeded_generators(2, 1)))


def test_ipadapter_embeddings_steer_the_picture(ipadapter, embeds):
    from pops.renderers.pipelines import seeded_generators

    same_noise = seeded_generators(0, 1) + seeded_generators(0, 1)
    a, b = ipadapter.render(torch.stack([embeds[0], 5 * embeds[1]]), generator=same_noise)
    assert np.abs(pixels([a]) - pixels([b])).max() > 2


def test_renderers_without_guidance(kandinsky, ipadapter, embeds):
    from pops.renderers.ipadapter import IPAdapterRenderer
    from pops.renderers.kandinsky import KandinskyRenderer
    from pops.renderers.pipelines import seeded_generators

    # guidance 1 = no unconditional half: the IP-Adapter embeddings go in as (B, 1, D), the negative is unused.
    plain = IPAdapterRenderer(ipadapter.pipe, guidance_scale=1.0, num_inference_steps=2, size=SIZE)
    assert len(plain.render(embeds[:2], generator=seeded_generators(0, 2))) == 2
    plain = KandinskyRenderer(
        kandinsky.pipe, kandinsky.negative_embedding, guidance_scale=1.0, num_inference_steps=2, size=SIZE
    )
    guided = kandinsky.render(embeds[:2], generator=seeded_generators(0, 2))
    assert np.abs(pixels(plain.render(embeds[:2], generator=seeded_generators(0, 2))) - pixels(guided)).max() > 0
    with pytest.raises(ValueError, match="multiple of"):
        KandinskyRenderer(kandinsky.pipe, kandinsky.negative_embedding, size=30)


def test_depth_renderer_follows_the_structure_image(depth_renderer, embeds, monkeypatch):
    from pops.renderers.pipelines import seeded_generators

    estimator = depth_renderer.depth_estimator
    structures = random_images(2, seed=3, size=(48, 40))
    maps = estimator(structures, size=(24, 24))
    for m in maps:
        arr = np.asarray(m)
        assert m.size == (24, 24) and m.mode == "RGB"
        assert arr.min() == 0 and arr.max() == 255  # min-max normalised per image
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()

    scales = []
    controlnet_forward = depth_renderer.pipe.controlnet.forward

    def spy(*args, **kwargs):
        scales.append(kwargs.get("conditioning_scale"))
        return controlnet_forward(*args, **kwargs)

    monkeypatch.setattr(depth_renderer.pipe.controlnet, "forward", spy)
    images = depth_renderer.render(embeds[:2], generator=seeded_generators(0, 2), structure=structures[0])
    assert [im.size for im in images] == [(SIZE, SIZE)] * 2 and scales and set(scales) == {0.5}
    other = depth_renderer.render(embeds[:2], generator=seeded_generators(0, 2), structure=structures[1])
    assert np.abs(pixels(images) - pixels(other)).max() > 2  # the depth map changes the picture
    per_image = depth_renderer.render(
        embeds[:2], generator=seeded_generators(0, 2), structure=[structures[0], structures[1]]
    )
    assert_close_images(per_image[:1], images[:1])
    with pytest.raises(ValueError, match="structure image"):
        depth_renderer.render(embeds[:1])


# ----- the hub helper ------------------------------------------------------------------------------------------------
def test_hub_fails_fast_and_clearly_offline(monkeypatch, tmp_path):
    from pops.base import hub, reference

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for ref in ("nobody-here/no-such-model-xyz", reference.KANDINSKY_DECODER):
        start = time.monotonic()
        with pytest.raises(ValueError) as info:
            hub.resolve_model(ref)
        assert time.monotonic() - start < 2.0
        message = str(info.value)
        assert ref in message and "--local-dir" in message and "\n" not in message
    with pytest.raises(ValueError, match="ip-adapter_sdxl.bin"):
        hub.resolve_file(reference.IP_ADAPTER_REPO, reference.IP_ADAPTER_WEIGHT)
    with pytest.raises(FileNotFoundError):
        hub.resolve_model(str(tmp_path / "not" / "here"))
    assert hub.resolve_model(str(tmp_path)) == str(tmp_path)
    (tmp_path / "w.bin").write_bytes(b"x")
    assert hub.resolve_file(str(tmp_path), "w.bin") == str(tmp_path / "w.bin")
    assert hub.split_file_ref("pOpsPaper/operators:models/texturing/learned_prior.pth") == (
        "pOpsPaper/operators",
        "models/texturing/learned_prior.pth",
    )


def test_hub_fails_fast_when_unreachable(monkeypatch):
    from huggingface_hub import constants

    from pops.base import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(ValueError, match="cannot be reached"):
        hub.resolve_model("nobody-here/no-such-model-xyz")
    assert time.monotonic() - start < 2.0 + hub.PROBE_TIMEOUT_S


def test_from_pretrained_offline_names_the_model(monkeypatch):
    from pops.encoders.clip import CLIPImageEncoder
    from pops.renderers.ipadapter_depth import IPAdapterDepthRenderer
    from pops.renderers.kandinsky import KandinskyRenderer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load, model_id in [
        (CLIPImageEncoder.from_pretrained, "kandinsky-community/kandinsky-2-2-prior"),
        (KandinskyRenderer.from_pretrained, "kandinsky-community/kandinsky-2-2-decoder"),
        (IPAdapterDepthRenderer.from_pretrained, "stabilityai/stable-diffusion-xl-base-1.0"),
    ]:
        start = time.monotonic()
        with pytest.raises(ValueError, match=model_id):
            load()
        assert time.monotonic() - start < 2.0


# ----- pops render on saved tiny pipelines ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embeddings_file(tmp_path_factory, embeds):
    from pops.embeddings.io import save_embeddings

    return save_embeddings(tmp_path_factory.mktemp("emb") / "outs.safetensors", embeds, {"operator": "texturing"})


def test_cli_renders_with_kandinsky_from_saved_folders(kandinsky, image_encoder, embeddings_file, embeds, tmp_path):
    from pops.renderers.kandinsky import KandinskyRenderer
    from pops.renderers.pipelines import seeded_generators

    kandinsky.pipe.save_pretrained(tmp_path / "decoder")
    image_encoder.model.save_pretrained(tmp_path / "prior" / "image_encoder")
    image_encoder.processor.save_pretrained(tmp_path / "prior" / "image_processor")
    out = tmp_path / "pngs"
    result = run_cli(
        "render",
        embeddings_file,
        "--render",
        "kandinsky",
        "--out",
        out,
        "--decoder",
        tmp_path / "decoder",
        "--prior",
        tmp_path / "prior",
        "--steps",
        2,
        "--size",
        SIZE,
        "--batch-size",
        2,
        "--seed",
        3,
    )
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["outs_0000.png", "outs_0001.png", "outs_0002.png"]
    assert all(Image.open(f).size == (SIZE, SIZE) for f in files)
    # The loaded pipeline is the saved one: the CLI's third image equals the in-memory renderer's with seed 3 + 2.
    assert_close_images(
        [Image.open(files[2]).convert("RGB")], kandinsky.render(embeds[2:], generator=seeded_generators(5, 1))
    )
    loaded = KandinskyRenderer.from_pretrained(str(tmp_path / "decoder"), prior=str(tmp_path / "prior"))
    torch.testing.assert_close(loaded.negative_embedding, image_encoder.zero_image_embedding())


def test_cli_renders_with_ipadapter_and_depth_from_saved_folders(depth_renderer, tokenizer, embeddings_file, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    pipe = depth_renderer.pipe
    # Plain SDXL folder (the IP-Adapter comes from its own file, as on the hub).
    sdxl = StableDiffusionXLPipeline(
        **{
            k: getattr(pipe, k)
            for k in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
        }
    )
    sdxl.unet = tiny_sdxl(tokenizer)["unet"]  # a fresh UNet: save_pretrained of one with IP-Adapter layers differs
    sdxl.save_pretrained(tmp_path / "sdxl")
    (tmp_path / "ipa" / "sdxl_models").mkdir(parents=True)
    torch.save(tiny_ip_adapter_state_dict(sdxl.unet), tmp_path / "ipa" / "sdxl_models" / "ip-adapter_sdxl.bin")
    pipe.controlnet.save_pretrained(tmp_path / "controlnet")
    pipe.vae.save_pretrained(tmp_path / "vae")
    depth_renderer.depth_estimator.model.save_pretrained(tmp_path / "dpt")
    depth_renderer.depth_estimator.processor.save_pretrained(tmp_path / "dpt")
    random_images(1, seed=9)[0].save(tmp_path / "a.png")
    common = ["--sdxl", tmp_path / "sdxl", "--ip-adapter", tmp_path / "ipa", "--steps", 2, "--size", SIZE]

    result = run_cli("render", embeddings_file, "--render", "ipadapter", "--out", tmp_path / "ip", *common)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ip").glob("outs_*.png"))) == 3

    depth = ["--render", "ipadapter-depth", "--controlnet", tmp_path / "controlnet", "--depth-model", tmp_path / "dpt"]
    result = run_cli(
        "render",
        embeddings_file,
        *depth,
        "--out",
        tmp_path / "d",
        *common,
        "--vae",
        tmp_path / "vae",
        "--structure",
        tmp_path / "a.png",
    )
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "d").glob("outs_*.png"))
    assert len(files) == 3 and all(Image.open(f).size == (SIZE, SIZE) for f in files)

    result = run_cli("render", embeddings_file, *depth, "--out", tmp_path / "d2", *common)
    assert result.exit_code != 0 and "--structure" in result.output


def test_cli_rejects_bad_input_in_one_line(embeddings_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    result = run_cli("render", embeddings_file, "--out", tmp_path / "o")  # default hub ids, offline
    assert result.exit_code != 0 and "kandinsky-community/kandinsky-2-2-decoder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and time.monotonic() - start < 5
    for args, expected in [
        (["--render", "dalle"], "--render must be one of"),
        (["--batch-size", 0], "--batch-size"),
    ]:
        result = run_cli("render", embeddings_file, "--out", tmp_path / "o", *args)
        assert result.exit_code != 0 and expected in result.output
    result = run_cli("render", tmp_path / "missing.safetensors", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "no such embedding file" in result.output
    assert not (tmp_path / "o").exists()  # nothing written on failure
