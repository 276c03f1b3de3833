"""`pops models import` / `pops models real`: released `learned_prior.pth` files on their Kandinsky base become
operator folders that sample exactly as the checkpoint loaded directly, and a complete real models folder whose
equations render with the Kandinsky renderer folder — on tiny random components of the real classes, offline."""

from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pops.operators.operator import Operator
from tests.helpers.cli import run_cli
from tests.helpers.images import random_images
from tests.helpers.models import write_union_test_data
from tests.helpers.priors import tiny_prior
from tests.helpers.real_stack import SIZE, released_state, write_hub

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return write_hub(tmp_path_factory.mktemp("hub"))


def sample(op, seed=3):
    g = torch.Generator().manual_seed(9)
    inputs = [torch.randn(2, 32, generator=g), torch.randn(2, 32, generator=g)]
    return op.sample(inputs, num_inference_steps=4, generator=torch.Generator().manual_seed(seed))


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_an_imported_operator_samples_exactly_as_the_checkpoint_loaded_directly(hub, tmp_path):
    base, pth = hub / "kandinsky-2-2-prior", hub / "operators" / "models" / "texturing" / "learned_prior.pth"
    result = run_cli("models", "import", pth, "--base", base, "-o", tmp_path / "texturing")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "texturing"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.safetensors", "pops_config.json"]

    imported = Operator.from_pretrained(folder)
    direct = Operator.from_pretrained(base, checkpoint=pth, kind="texturing")
    assert imported.spec.kind == "texturing"  # read from the path
    assert torch.equal(sample(imported), sample(direct))
    stats = imported.model.prior
    assert torch.equal(stats.clip_mean, tiny_prior(seed=0).clip_mean.detach())  # the base's statistics

    config = json.loads((folder / "pops_config.json").read_text())
    image = config["encoders"]["image"]
    assert image == {"type": "clip-image", "repo": str(base.resolve()), "resize": 512}  # the reference's 512² squash
    assert "text" not in config["encoders"]  # texturing takes no word (instruct's folder names the text encoder)
    source = config["source"]
    assert source["license"] == "mit" and source["base_license"] == "apache-2.0" and "2406.01300" in source["paper"]
    assert source["checkpoint"] == str(pth) and len(source["sha256"]) == 64 and source["weights_dtype"] == "fp32"
    card = (folder / "README.md").read_text()
    assert "license: mit" in card and "arXiv:2406.01300" in card and str(pth) in card
    # Pictures go in through the base repo's CLIP encoder, squashed to 512² first.
    picture = random_images(1, seed=2, size=(60, 140))[0]
    squashed = imported.image_encoder.encode([picture.resize((512, 512))])
    assert torch.equal(imported.image_encoder.encode([picture]), squashed)


def test_fp16_import_halves_the_weights_and_keeps_the_function(hub, tmp_path):
    base, pth = hub / "kandinsky-2-2-prior", hub / "operators" / "models" / "union" / "learned_prior.pth"
    assert run_cli("models", "import", pth, "--base", base, "-o", tmp_path / "fp32").exit_code == 0
    result = run_cli("models", "import", pth, "--base", base, "-o", tmp_path / "fp16", "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    weights = load_file(tmp_path / "fp16" / "model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float16}
    full_weights = load_file(tmp_path / "fp32" / "model.safetensors")
    nbytes = lambda state: sum(v.numel() * v.element_size() for v in state.values())
    assert nbytes(weights) * 2 == nbytes(full_weights)  # (the 4.1 GB of a real operator become 2.05 GB)
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < (
        tmp_path / "fp32" / "model.safetensors"
    ).stat().st_size
    half, full = Operator.from_pretrained(tmp_path / "fp16"), Operator.from_pretrained(tmp_path / "fp32")
    # The clip statistics are kept exact; the weights are rounded once.
    assert torch.equal(half.model.prior.clip_std, full.model.prior.clip_std)
    cosine = torch.nn.functional.cosine_similarity(sample(half), sample(full))
    assert (cosine > 0.999).all()
    assert json.loads((tmp_path / "fp16" / "pops_config.json").read_text())["source"]["weights_dtype"] == "fp16"


@pytest.mark.parametrize(
    "case, message",
    [
        ("other operator", "is the released 'union' operator, not 'texturing'"),
        ("other size", r"\(16, 48\) in the checkpoint, \(16, 32\) in the base"),
        ("other model", "checkpoint does not match the base prior: .* missing"),
        ("not a checkpoint", "not a plain state dict"),
    ],
)
def test_a_wrong_checkpoint_is_one_line_and_writes_nothing(hub, tmp_path, case, message):
    import re

    pth = hub / "operators" / "models" / "union" / "learned_prior.pth"
    if case == "other size":
        pth = tmp_path / "big.pth"
        torch.save(released_state(5, dim=48), pth)
    elif case == "other model":
        pth = tmp_path / "half.pth"
        torch.save({k: v for k, v in released_state(5).items() if "transformer_blocks.1" not in k}, pth)
    elif case == "not a checkpoint":
        pth = tmp_path / "list.pth"
        torch.save({"weights": [1, 2]}, pth)
    out = tmp_path / "out" / "texturing"
    result = run_cli("models", "import", pth, "--kind", "texturing", "--base", hub / "kandinsky-2-2-prior", "-o", out)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), result.output
    assert not out.exists() and (not out.parent.exists() or leftovers(out.parent) == [])


def test_an_existing_folder_and_the_offline_hub_are_refused_at_once(hub, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    pth = hub / "operators" / "models" / "union" / "learned_prior.pth"
    result = run_cli("models", "import", pth, "--base", hub / "kandinsky-2-2-prior", "-o", tmp_path / "taken")
    assert result.exit_code != 0 and "already exists" in result.output
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["x.txt"]

    start = time.monotonic()  # the defaults are hub ids; the tests run with HF_HUB_OFFLINE=1
    result = run_cli("models", "import", "texturing", "-o", tmp_path / "t")
    assert result.exit_code != 0 and "kandinsky-community/kandinsky-2-2-prior" in result.output
    assert len(result.output.strip().splitlines()) == 1 and time.monotonic() - start < 5
    result = run_cli("models", "real", tmp_path / "m")
    assert result.exit_code != 0 and "--local-dir" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists() and leftovers(tmp_path) == []


def test_a_real_models_folder_of_two_imported_operators_renders_an_equation(hub, tmp_path):
    models = tmp_path / "real"
    decoder = hub / "kandinsky-2-2-decoder"
    args = ["--base", hub / "kandinsky-2-2-prior", "--checkpoints", hub / "operators"]
    args += ["--operator", "texturing", "--operator", "union", "--dtype", "bf16"]
    args += ["--set", f"decoder={decoder}", "--set", "num_inference_steps=2", "--set", f"size={SIZE}"]
    result = run_cli("models", "real", models, *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (models / "operators").iterdir()) == ["texturing", "union"]
    renderer = json.loads((models / "renderers" / "kandinsky" / "renderer.json").read_text())
    assert renderer["type"] == "kandinsky" and renderer["decoder"] == str(decoder)
    assert renderer["prior"] == str((hub / "kandinsky-2-2-prior").resolve())  # the negative from the same encoder
    assert "operators/union" in (models / "README.md").read_text()

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, image in zip("abc", random_images(3, seed=5)):
        image.save(inputs / f"{name}.png")
    equation = f"union(texturing({inputs / 'a.png'}, {inputs / 'b.png'}), {inputs / 'c.png'})"
    out = tmp_path / "eq"
    result = run_cli("apply", equation, "--models", models, "--steps", 3, "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["renderer"] == "kandinsky" and set(record["operators"]) == {"texturing", "union"}
    assert Image.open(out / "output_0.png").size == (SIZE, SIZE) and (out / "steps").is_dir()
    assert len(list((out / "steps").glob("*.png"))) == 1  # the inner texturing step is rendered too


def test_pops_models_renderer_writes_a_checked_folder(tmp_path):
    result = run_cli("models", "renderer", tmp_path / "ip", "--type", "ipadapter", "--set", "base=my/sdxl-finetune")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "ip" / "renderer.json").read_text())
    assert saved["base"] == "my/sdxl-finetune" and saved["size"] == 1024 and saved["negative_prompt"] is None
    result = run_cli("models", "renderer", tmp_path / "bad", "--type", "ipadapter", "--set", "sizes=3")
    assert result.exit_code != 0 and "unknown key 'sizes'" in result.output and not (tmp_path / "bad").exists()


def test_pops_eval_scores_the_imported_operators_of_a_real_models_folder(hub, tmp_path):
    models = tmp_path / "real"
    args = ["--base", hub / "kandinsky-2-2-prior", "--checkpoints", hub / "operators", "--operator", "union"]
    assert run_cli("models", "real", models, *args).exit_code == 0
    write_union_test_data(tmp_path / "data")
    result = run_cli("eval", "--models", models, "--data", tmp_path / "data", "--seeds", 1, "--steps", 2)
    assert result.exit_code == 0, result.output
    assert "union" in result.output and "averaging" in result.output


# ----- one command from pictures to pictures -------------------------------------------------------------------------
def test_an_operator_name_and_pictures_become_an_equation():
    from pops.equation.cli import call_equation

    assert call_equation("texturing", ["object.jpg", "texture.jpg"]) == "texturing(object.jpg, texture.jpg)"
    assert call_equation("texture", ["my photos/a b.png", "-"]) == 'texture(@"my photos/a b.png", _)'
    assert call_equation("instruct", ["cat.png", "golden"]) == 'instruct(cat.png, "golden")'


def test_apply_an_operator_by_name_offline_is_one_line_naming_the_hub_id(tmp_path, monkeypatch):
    from pops.models.model_set import ModelSet, ReleasedModels

    monkeypatch.chdir(tmp_path)
    for name, image in zip("ab", random_images(2)):
        image.save(tmp_path / f"{name}.png")
    assert isinstance(ModelSet.coerce("pOpsPaper/operators"), ReleasedModels)
    for render, hub_id in (("kandinsky", "kandinsky-community/kandinsky-2-2-decoder"), ("none", "kandinsky-2-2-prior")):
        start = time.monotonic()
        result = run_cli("apply", "texturing", "a.png", "b.png", "--render", render, "-n", 4, "-o", tmp_path / "out")
        assert result.exit_code != 0 and hub_id in result.output and "--local-dir" in result.output
        assert len(result.output.strip().splitlines()) == 1 and time.monotonic() - start < 5
        assert not (tmp_path / "out").exists()


def test_apply_an_operator_by_name_on_a_models_folder_writes_pictures_and_a_record_that_replays(hub, tmp_path):
    models = tmp_path / "real"
    decoder = hub / "kandinsky-2-2-decoder"
    args = ["--base", hub / "kandinsky-2-2-prior", "--checkpoints", hub / "operators", "--operator", "texturing"]
    args += ["--set", f"decoder={decoder}", "--set", "num_inference_steps=2", "--set", f"size={SIZE}"]
    assert run_cli("models", "real", models, *args).exit_code == 0
    for name, image in zip("ab", random_images(2, seed=8)):
        image.save(tmp_path / f"{name}.jpg")
    out = tmp_path / "out"
    obj, texture = tmp_path / "a.jpg", tmp_path / "b.jpg"
    result = run_cli(
        "apply", "texturing", obj, texture, "--models", models, "--render", "kandinsky", "-n", 2, "-o", out
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["equation"] == f"texturing({obj}, {texture})" and record["renderer"] == "kandinsky"
    assert record["outputs"]["images"] == ["output_0.png", "output_1.png"]
    from pops.embeddings.io import load_embeddings

    assert load_embeddings(out / "output.safetensors")[0].shape == (2, 32)
    again = run_cli("apply", "--replay", out / "record.json", "-o", tmp_path / "again")
    assert again.exit_code == 0, again.output
    for name in ("output.safetensors", "output_0.png", "output_1.png"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    result = run_cli("apply", "texturing", obj, "--models", models, "-o", tmp_path / "short")  # one input missing
    assert result.exit_code != 0 and "texturing takes 2 inputs, got 1" in result.output


def test_released_models_from_local_copies_run_an_equation_and_record_where_they_came_from(hub, tmp_path):
    from pops.equation.runner import EquationRunner
    from pops.models.model_set import ReleasedModels

    models = ReleasedModels(str(hub / "operators"), base=str(hub / "kandinsky-2-2-prior"))
    assert models.available() == ["texturing", "union", "scene", "instruct"]
    assert models.renderer_name() == "kandinsky" and "decoder" not in models.renderer_names()
    for name, image in zip("ab", random_images(2, seed=3)):
        image.save(tmp_path / f"{name}.png")
    runner = EquationRunner(models)
    result = runner.run(f"texture({tmp_path / 'a.png'}, {tmp_path / 'b.png'})", num_inference_steps=3)
    assert result.output.shape == (1, 32)
    assert result.record["models"] == str(hub / "operators")
    assert result.record["operators"]["texturing"].endswith("models/texturing/learned_prior.pth")
    direct = Operator.from_pretrained(hub / "kandinsky-2-2-prior", checkpoint=models.where("texturing"))
    assert torch.equal(
        models.operator("texturing").model.state_dict()["prior.proj_in.weight"],
        direct.model.state_dict()["prior.proj_in.weight"],
    )
    with pytest.raises(FileNotFoundError, match="released no 'composition'"):
        models.operator("composition")
    with pytest.raises(FileNotFoundError, match="no 'decoder' renderer"):
        models.renderer("decoder")
