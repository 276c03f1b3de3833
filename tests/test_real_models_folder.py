"""The real stack in a models folder: renderer folders of type kandinsky / ipadapter / ipadapter-depth (a small
renderer.json naming hub ids or local folders), loaded by `load_renderer` and used by equations, `pops apply
--models` and the UI's backend — on tiny random components of the real classes saved here, nothing downloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.cli import run_cli
from tests.helpers.images import assert_close_images, pixels, random_images
from tests.helpers.priors import tiny_prior
from tests.helpers.real_stack import (
    SIZE,
    tiny_controlnet,
    tiny_depth_estimator,
    tiny_ip_adapter_state_dict,
    tiny_kandinsky_decoder,
    tiny_sdxl,
    tiny_vision,
)
from tests.helpers.tokenizers import write_tokenizer_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----- tiny real parts saved in the hub layouts ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Local folders in the layouts of the hub repos: a Kandinsky prior repo (image encoder + processor), a
    Kandinsky decoder pipeline, an SDXL pipeline, IP-Adapter weights, a depth ControlNet and a DPT estimator."""
    from diffusers import KandinskyV22Pipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    root = tmp_path_factory.mktemp("parts")
    model, processor = tiny_vision()
    model.save_pretrained(root / "prior" / "image_encoder")
    processor.save_pretrained(root / "prior" / "image_processor")
    KandinskyV22Pipeline(**tiny_kandinsky_decoder()).save_pretrained(root / "kandinsky-decoder")

    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer_files(root / "tokenizer"))
    sdxl = tiny_sdxl(tokenizer)
    StableDiffusionXLPipeline(**sdxl).save_pretrained(root / "sdxl")
    (root / "ipa" / "sdxl_models").mkdir(parents=True)
    torch.save(tiny_ip_adapter_state_dict(sdxl["unet"]), root / "ipa" / "sdxl_models" / "ip-adapter_sdxl.bin")
    tiny_controlnet(sdxl["unet"]).save_pretrained(root / "controlnet")
    dpt, dpt_processor = tiny_depth_estimator()
    dpt.save_pretrained(root / "dpt")
    dpt_processor.save_pretrained(root / "dpt")
    return root


def quiet(renderer):
    renderer.pipe.set_progress_bar_config(disable=True)
    return renderer


FAST = dict(num_inference_steps=2, size=SIZE)


def kandinsky_folder(folder, parts, **settings):
    from pops.renderers.settings import write_renderer_folder

    # Absolute here; relative sources are read relative to the renderer folder (tested below).
    values = dict(decoder=str(parts / "kandinsky-decoder"), prior=str(parts / "prior"), **FAST)
    write_renderer_folder(folder, "kandinsky", **{**values, **settings})
    return folder


def write_texturing_models(root, parts, kinds=("texturing",)):
    """Tiny operators in bigG's place: the local prior repo's CLIP image encoder (squash to 512, as released)."""
    from pops.operators.operator import Operator

    for i, kind in enumerate(kinds):
        encoders = {"image": {"type": "clip-image", "repo": str(parts / "prior"), "resize": 512}}
        Operator.from_prior(tiny_prior(seed=i), kind, encoder_configs=encoders).save_pretrained(
            root / "operators" / kind
        )
    inputs = root.parent / "inputs"
    inputs.mkdir(exist_ok=True)
    for i, image in enumerate(random_images(3, seed=11)):
        image.save(inputs / f"{'abc'[i]}.png")
    return inputs


# ----- renderer folders --------------------------------------------------------------------------------------------
def test_a_kandinsky_folder_loads_by_its_type_and_renders_as_the_pipeline(parts, tmp_path):
    from pops.encoders.clip import CLIPImageEncoder
    from pops.renderers import load_renderer, renderer_type
    from pops.renderers.kandinsky import KandinskyRenderer
    from pops.renderers.pipelines import seeded_generators

    folder = kandinsky_folder(tmp_path / "renderer", parts, guidance_scale=3.0)
    saved = json.loads((folder / "renderer.json").read_text())
    assert saved["type"] == "kandinsky" and saved["size"] == SIZE and saved["guidance_scale"] == 3.0
    assert saved["dtype"] is None and saved["cpu_offload"] is False  # every setting is written, visible
    assert renderer_type(folder) == "kandinsky"

    renderer = quiet(load_renderer(folder))
    assert isinstance(renderer, KandinskyRenderer)
    assert (renderer.num_inference_steps, renderer.guidance_scale, renderer.size) == (2, 3.0, SIZE)
    encoder = CLIPImageEncoder.from_pretrained(str(parts / "prior"))
    torch.testing.assert_close(renderer.negative_embedding, encoder.zero_image_embedding())

    direct = quiet(
        KandinskyRenderer.from_pretrained(
            str(parts / "kandinsky-decoder"), prior=str(parts / "prior"), guidance_scale=3.0, **FAST
        )
    )
    embeds = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    images = renderer.render(embeds, generator=seeded_generators(0, 2))
    assert (pixels(images) == pixels(direct.render(embeds, generator=seeded_generators(0, 2)))).all()


def test_relative_sources_are_read_beside_the_renderer_folder(parts, tmp_path):
    import shutil

    from pops.renderers import load_renderer
    from pops.renderers.settings import read_renderer_folder, write_renderer_folder

    folder = tmp_path / "models" / "renderers" / "kandinsky"
    shutil.copytree(parts / "kandinsky-decoder", folder / "kandinsky-decoder")
    shutil.copytree(parts / "prior", tmp_path / "models" / "prior")
    write_renderer_folder(folder, "kandinsky", decoder="kandinsky-decoder", prior="../../prior", **FAST)
    settings = read_renderer_folder(folder, "kandinsky")
    assert settings.decoder == str(folder / "kandinsky-decoder")
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "models", moved)  # a folder with its own copies can move
    assert load_renderer(moved / "renderers" / "kandinsky").size == SIZE
    # A hub id stays a hub id (nothing of that name beside the folder).
    assert read_renderer_folder(moved / "renderers" / "kandinsky", "kandinsky").prior.endswith("prior")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sizes": 512}, "unknown key 'sizes'; known keys here: num_inference_steps"),
        ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer in"),
        ({"guidance_scale": "strong"}, "guidance_scale"),
    ],
)
def test_a_bad_renderer_json_is_one_line_naming_the_key(parts, tmp_path, settings, message):
    from pops.renderers import load_renderer
    from pops.renderers.settings import write_renderer_folder

    folder = kandinsky_folder(tmp_path / "r", parts)
    with pytest.raises(ValueError, match=message):
        write_renderer_folder(tmp_path / "w", "kandinsky", **settings)  # refused when written …
    assert not (tmp_path / "w").exists()
    config = json.loads((folder / "renderer.json").read_text())
    (folder / "renderer.json").write_text(json.dumps({**config, **settings}))
    with pytest.raises(ValueError) as info:  # … and when read back, before any model loads
        load_renderer(folder)
    assert message.split(";")[0] in str(info.value) and "\n" not in str(info.value)
    assert "renderer.json" in str(info.value)


def test_an_offline_hub_id_in_a_renderer_folder_fails_in_one_line(tmp_path, monkeypatch):
    import time

    from pops.renderers import load_renderer
    from pops.renderers.settings import write_renderer_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_renderer_folder(tmp_path / "k", "kandinsky")  # the reference's hub ids
    start = time.monotonic()
    with pytest.raises(ValueError, match="kandinsky-community/kandinsky-2-2-decoder.*--local-dir"):
        load_renderer(tmp_path / "k")
    assert time.monotonic() - start < 2.0


def test_ipadapter_folders_load_any_local_sdxl_and_the_depth_one_takes_input_a(parts, tmp_path):
    from pops.renderers import load_renderer
    from pops.renderers.ipadapter import IPAdapterRenderer
    from pops.renderers.ipadapter_depth import IPAdapterDepthRenderer
    from pops.renderers.pipelines import seeded_generators
    from pops.renderers.settings import write_renderer_folder

    sdxl = dict(base=str(parts / "sdxl"), ip_adapter=str(parts / "ipa"), **FAST)
    write_renderer_folder(tmp_path / "ip", "ipadapter", prompt="a photo", **sdxl)
    ip = quiet(load_renderer(tmp_path / "ip"))
    assert type(ip) is IPAdapterRenderer and ip.prompt == "a photo" and ip.guidance_scale == 5.0
    embeds = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    assert [im.size for im in ip.render(embeds, generator=seeded_generators(0, 2))] == [(SIZE, SIZE)] * 2

    write_renderer_folder(
        tmp_path / "depth",
        "ipadapter-depth",
        controlnet=str(parts / "controlnet"),
        depth_estimator=str(parts / "dpt"),
        vae=None,  # the SDXL folder's own VAE
        controlnet_conditioning_scale=0.7,
        **sdxl,
    )
    depth = quiet(load_renderer(tmp_path / "depth"))
    assert isinstance(depth, IPAdapterDepthRenderer) and depth.takes_structure
    assert depth.controlnet_conditioning_scale == 0.7 and depth.negative_prompt == ""
    a, b = random_images(2, seed=4)
    one = depth.render(embeds[:1], generator=seeded_generators(0, 1), structure=a)
    other = depth.render(embeds[:1], generator=seeded_generators(0, 1), structure=b)
    assert np.abs(pixels(one) - pixels(other)).max() > 2


# ----- models folders: equations, pops apply --models, the UI --------------------------------------------------------
def test_an_equation_renders_with_the_kandinsky_folder_of_its_models_folder(parts, tmp_path):
    from pops.models.model_set import ModelSet
    from pops.renderers.kandinsky import KandinskyRenderer

    models = tmp_path / "models"
    inputs = write_texturing_models(models, parts)
    kandinsky_folder(models / "renderers" / "kandinsky", parts)
    assert ModelSet(models).renderer_names() == ["kandinsky"] and ModelSet(models).renderer_name() == "kandinsky"

    out = tmp_path / "out"
    equation = f"texturing({inputs / 'a.png'}, {inputs / 'b.png'})"
    result = run_cli("apply", equation, "--models", models, "--steps", 3, "-n", 2, "-o", out)  # --render auto
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["renderer"] == "kandinsky" and record["outputs"]["images"] == ["output_0.png", "output_1.png"]
    pictures = [Image.open(out / name).convert("RGB") for name in record["outputs"]["images"]]
    assert all(p.size == (SIZE, SIZE) for p in pictures)

    # The pictures are the Kandinsky pipeline's rendering of the equation's output embeddings.
    from pops.embeddings.io import load_embeddings

    output, _ = load_embeddings(out / "output.safetensors")
    renderer = quiet(
        KandinskyRenderer.from_pretrained(str(parts / "kandinsky-decoder"), prior=str(parts / "prior"), **FAST)
    )
    assert_close_images(pictures, renderer.render(output, generator=torch.Generator().manual_seed(0)))

    again = run_cli("apply", "--replay", out / "record.json", "-o", tmp_path / "replayed")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "replayed" / "output_1.png").read_bytes() == (out / "output_1.png").read_bytes()


def test_the_depth_renderer_in_an_equation_gets_input_a_and_refuses_a_step_without_a_picture(parts, tmp_path):
    from pops.embeddings.io import save_embeddings
    from pops.renderers.settings import write_renderer_folder

    models = tmp_path / "models"
    inputs = write_texturing_models(models, parts)
    write_renderer_folder(
        models / "renderers" / "ipadapter-depth",
        "ipadapter-depth",
        base=str(parts / "sdxl"),
        ip_adapter=str(parts / "ipa"),
        controlnet=str(parts / "controlnet"),
        depth_estimator=str(parts / "dpt"),
        vae=None,
        **FAST,
    )
    a, b = inputs / "a.png", inputs / "b.png"
    result = run_cli(
        "apply", f"texturing({a}, {b})", "--models", models, "--render", "ipadapter-depth", "-o", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o" / "output_0.png").size == (SIZE, SIZE)

    save_embeddings(tmp_path / "e.safetensors", torch.randn(1, 32))
    result = run_cli(
        "apply",
        f"texturing({tmp_path / 'e.safetensors'}, {b})",
        "--models",
        models,
        "--render",
        "ipadapter-depth",
        "-o",
        tmp_path / "no",
    )
    assert result.exit_code != 0 and "input A, which must be a picture" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "no" / "record.json").exists()


def test_the_ui_backend_runs_on_a_real_models_folder(parts, tmp_path):
    import shutil

    from pops.ui.backend import Backend, Settings

    models = tmp_path / "models"
    inputs = write_texturing_models(models, parts)
    kandinsky_folder(models / "renderers" / "kandinsky", parts)
    backend = Backend([models], tmp_path / "served")
    assert "**Renderers:** kandinsky" in backend.describe(str(models))
    run = backend.new_run_dir("t")
    (run / "inputs").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        shutil.copy(inputs / name, run / "inputs" / name)
    out = backend.apply("texturing(a.png, b.png)", run / "inputs", run, Settings(str(models), steps=3))
    assert out.ok, out.status
    assert out.record["renderer"] == "kandinsky" and Image.open(out.result_images[0][0]).size == (SIZE, SIZE)
