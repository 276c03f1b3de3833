"""The background remover of `pops generate`: RMBG-1.4's network (an IS-Net) written in pops, its weights read as
plain tensors — no model code from the hub runs, anywhere in the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pops.generate.isnet import ISNet, load_isnet
from pops.generate.models import FOLDERS, GenerationModels, ModelSettings, load_models
from tests.helpers.segmenter import random_isnet, save_isnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PACKAGE = Path(__file__).resolve().parents[1] / "pops"


def noise(prompt: str, generator: torch.Generator, size=(48, 40)) -> Image.Image:
    """A scripted text-to-image model: random pixels drawn from the generator."""
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def reference_matte(net: ISNet, image: Image.Image, side: int) -> np.ndarray:
    """The model card's recipe, step by step: float pixels resized to side x side (bilinear), / 255 - 0.5, the
    first side output resized back (bilinear), min-max normalised."""
    x = torch.tensor(np.asarray(image.convert("RGB")), dtype=torch.float32).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(side, side), mode="bilinear") / 255.0 - 0.5
    with torch.no_grad():
        first = net(x)[0]
    out = F.interpolate(first, size=(image.height, image.width), mode="bilinear")[0, 0]
    return ((out - out.min()) / (out.max() - out.min())).numpy()


def test_no_model_code_from_the_hub_runs_anywhere_in_the_package():
    # Every file of the package (code, configs, word lists, docs), not the bytecode Python caches beside them.
    files = [p for p in sorted(PACKAGE.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "models.py" for p in files)
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in files if b"trust_remote_code" in p.read_bytes()]
    assert offenders == [], f"trust_remote_code under pops/: {offenders}"


def test_the_architecture_is_rmbg_14s():
    net = ISNet()  # RMBG-1.4's width: its model card gives 44.1 M parameters (model.safetensors: 176 MB of fp32)
    assert sum(p.numel() for p in net.parameters()) == 44_046_790
    names = net.state_dict()
    assert names["conv_in.weight"].shape == (64, 3, 3, 3) and names["side6.weight"].shape == (1, 512, 3, 3)
    assert names["stage5d.rebnconv3d.conv_s1.weight"].shape == (256, 512, 3, 3)
    assert net.stage5.rebnconv4.conv_s1.dilation == (8, 8) and net.stage1.rebnconv7.conv_s1.dilation == (2, 2)
    with torch.no_grad():
        sides = net.eval()(torch.zeros(1, 3, 64, 48))
    assert len(sides) == 6 and all(s.shape == (1, 1, 64, 48) for s in sides)
    assert all(((s > 0) & (s < 1)).all() for s in sides)


@pytest.mark.parametrize("weights", ["model.safetensors", "model.pth"])
def test_tiny_random_weights_run_through_the_generate_loaders(weights, tmp_path):
    net = random_isnet(unit=2, seed=3)
    save_isnet(net, tmp_path / FOLDERS["segmenter"] / weights)
    settings = ModelSettings(segmenter_size=64)
    models = load_models(["segmenter"], models_from=tmp_path, settings=settings, device="cpu")
    image = noise("", torch.Generator().manual_seed(0), size=(50, 37))
    matte = models.segmenter(image)
    assert matte.shape == (37, 50) and matte.dtype == np.float32
    assert matte.min() == 0.0 and matte.max() == 1.0
    np.testing.assert_allclose(matte, reference_matte(net, image, 64), atol=1e-5)
    # The same weights at another precision give (nearly) the same matte.
    bf16 = load_models(["segmenter"], models_from=tmp_path, settings=ModelSettings(segmenter_size=64, dtype="bf16"))
    assert np.abs(bf16.segmenter(image) - matte).mean() < 0.1


def test_a_recipe_mattes_its_pictures_with_the_loaded_segmenter(tmp_path):
    from pops.generate import generate
    from pops.generate.recipe import config_from_options
    from pops.generate.scene import Config
    from pops.generate.storage import iter_samples

    save_isnet(random_isnet(unit=1, seed=5), tmp_path / "models" / FOLDERS["segmenter"] / "model.safetensors")
    loaded = load_models(["segmenter"], models_from=tmp_path / "models", settings=ModelSettings(segmenter_size=32))
    models = GenerationModels(text_to_image=noise, segmenter=loaded.segmenter, inpainter=lambda image, *a: image)
    # Random weights matte most of a picture: let the scene recipe keep an object however large.
    config = config_from_options(Config, {"max_object_fraction": "1.0"})
    summary = generate("scene", tmp_path / "scene", num_samples=3, seed=1, models=models, config=config, progress=False)
    assert (summary.made, summary.failed) == (3, 0)
    for m in iter_samples(tmp_path / "scene"):
        mask = np.asarray(Image.open(Path(m["dir"]) / m["assets"]["mask"]))
        assert mask.shape == (40, 48) and mask.min() == 0 and mask.max() == 255  # the matte, min-max normalised


def _state(**changes):
    state = random_isnet(unit=1).state_dict()
    for key, value in changes.items():
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    "state, expect",
    [
        ({"weight": torch.zeros(3)}, "no conv_in.weight"),
        (_state(**{"side1.bias": None}), "1 missing (e.g. side1.bias)"),
        (_state(extra=torch.zeros(2)), "1 unexpected (e.g. extra)"),
        (_state(**{"side1.weight": torch.zeros(1, 5, 3, 3)}), "1 of another shape (e.g. side1.weight)"),
        (_state(**{"side1.bias": torch.tensor([float("nan")])}), "NaN or inf values (side1.bias)"),
    ],
)
def test_weights_that_are_not_rmbgs_are_refused_in_one_line(state, expect, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        load_isnet(path)
    assert expect in str(info.value) and str(path) in str(info.value)


def test_a_segmenter_folder_without_weights_or_with_pickled_objects_is_refused(tmp_path):
    folder = tmp_path / FOLDERS["segmenter"]
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no segmenter weights"):
        load_models(["segmenter"], models_from=tmp_path, device="cpu")
    import datetime

    torch.save({"conv_in.weight": datetime.date(2024, 1, 1)}, folder / "model.pth")  # unpickling would call code
    with pytest.raises(ValueError, match="objects other than tensors"):
        load_models(["segmenter"], models_from=tmp_path, device="cpu")
