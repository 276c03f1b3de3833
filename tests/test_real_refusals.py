"""The issue's bad input walked through the real-stack commands end to end: a hub id unreachable offline, a checkpoint
for another operator or size, a renderer.json with unknown keys, CUDA asked for on this CPU machine, a photo that is
no picture. Each is ONE `error:` line (nothing else printed: no model was loading), a non-zero exit, and nothing
written — on a real models folder of tiny random components built here (`pops models real` on the hub layouts)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers.cli import run_cli
from tests.helpers.images import random_images
from tests.helpers.real_stack import SIZE, released_state, write_hub

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The hub layouts, a real models folder (texturing + union, a local kandinsky renderer), two pictures, a file
    named like a picture that is none, an embeddings file and checkpoints of the wrong size and kind."""
    root = tmp_path_factory.mktemp("refusals")
    hub = write_hub(root / "hub")
    args = ["--base", hub / "kandinsky-2-2-prior", "--checkpoints", hub / "operators"]
    args += ["--operator", "texturing", "--operator", "union", "--set", f"decoder={hub / 'kandinsky-2-2-decoder'}"]
    result = run_cli("models", "real", root / "real", *args, "--set", "num_inference_steps=2", "--set", f"size={SIZE}")
    assert result.exit_code == 0, result.output
    for name, image in zip("ab", random_images(2, seed=4)):
        image.save(root / f"{name}.png")
    (root / "junk.png").write_text("these bytes are no picture\n")
    torch.save(released_state(5, dim=48), root / "big.pth")
    from pops.embeddings.io import save_embeddings

    save_embeddings(root / "e.safetensors", torch.randn(2, 32, generator=torch.Generator().manual_seed(0)))
    return root


def models_with_renderer(world, tmp_path, **changes):
    """A copy of the real models folder whose renderer.json has `changes` (a hand-edited file)."""
    models = tmp_path / "edited"
    shutil.copytree(world / "real", models)
    path = models / "renderers" / "kandinsky" / "renderer.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return models


def refused(args, out, expect: str) -> None:
    """`pops ARGS` exits non-zero with exactly one line, an error containing `expect`, and writes nothing at OUT."""
    result = run_cli(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.output
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]  # no half-written temporary either


def equation(world) -> str:
    return f"texturing({world / 'a.png'}, {world / 'b.png'})"


def test_a_hub_id_unreachable_offline(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    models = models_with_renderer(world, tmp_path, decoder="kandinsky-community/kandinsky-2-2-decoder")
    refused(
        ["apply", equation(world), "--models", models, "-o", out], out, "'kandinsky-community/kandinsky-2-2-decoder'"
    )
    pictures = [world / "a.png", world / "b.png"]
    base = world / "hub" / "kandinsky-2-2-prior"
    hub_checkpoint = "pOpsPaper/operators:models/texturing/learned_prior.pth"
    single = tmp_path / "one.safetensors"
    refused(["apply", *pictures, "--base", base, "--checkpoint", hub_checkpoint, "-o", single], single, "pOpsPaper")
    local_checkpoint = world / "hub" / "operators" / "models" / "texturing" / "learned_prior.pth"
    refused(["apply", *pictures, "--checkpoint", local_checkpoint, "-o", single], single, "kandinsky-2-2-prior")
    refused(["models", "real", out], out, "--local-dir")


def test_a_checkpoint_for_another_operator_or_size(world, tmp_path):
    pictures = [world / "a.png", world / "b.png"]
    base = ["--base", world / "hub" / "kandinsky-2-2-prior"]
    union = world / "hub" / "operators" / "models" / "union" / "learned_prior.pth"
    out = tmp_path / "one.safetensors"
    # The four released operators share one architecture: the path says which one a file is, and must agree.
    refused(
        ["apply", *pictures, *base, "--checkpoint", union, "--kind", "texturing", "-o", out],
        out,
        "is the released 'union' operator, not 'texturing'",
    )
    refused(
        ["apply", *pictures, *base, "--checkpoint", world / "big.pth", "--kind", "texturing", "-o", out],
        out,
        "(16, 48) in the checkpoint, (16, 32) in the base",
    )
    refused(
        ["apply", *pictures, *base, "--checkpoint", world / "big.pth", "-o", out], out, "cannot tell which operator"
    )
    folder = tmp_path / "imported"
    refused(["models", "import", union, *base, "--kind", "scene", "-o", folder], folder, "not 'scene'")


def test_a_renderer_json_with_unknown_keys(world, tmp_path):
    out = tmp_path / "out"
    models = models_with_renderer(world, tmp_path, sizes=3)
    refused(["apply", equation(world), "--models", models, "-o", out], out, "renderer.json: unknown key 'sizes'")
    by_name = ["apply", "texturing", world / "a.png", world / "b.png", "--models", models, "-o", out]
    refused(by_name, out, "unknown key 'sizes'")
    refused(["models", "renderer", out, "--type", "kandinsky", "--set", "sizes=3"], out, "unknown key 'sizes'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the message of a machine without CUDA")
def test_cuda_asked_for_on_a_cpu_machine(world, tmp_path):
    out = tmp_path / "out"
    no_cuda = "device 'cuda' was asked for but this machine has no CUDA GPU"
    models = models_with_renderer(world, tmp_path, device="cuda")  # a folder written for a GPU machine
    refused(["apply", equation(world), "--models", models, "-o", out], out, no_cuda)
    refused(["apply", equation(world), "--models", world / "real", "--device", "cuda", "-o", out], out, no_cuda)
    refused(["render", world / "e.safetensors", "-o", out, "--generator-device", "cuda"], out, no_cuda)


def test_a_photo_that_is_no_picture_is_refused_before_any_model_loads(world, tmp_path, monkeypatch):
    import pops.models.model_set
    import pops.operators.operator

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were read")

    # Loading the real stack takes minutes: a bad picture must be found first.
    monkeypatch.setattr(pops.models.model_set, "load_renderer", no_loading)
    monkeypatch.setattr(pops.operators.operator.checkpoint, "load_kandinsky_prior", no_loading)
    monkeypatch.setattr(pops.operators.operator, "load_operator_folder", no_loading)
    junk, out = world / "junk.png", tmp_path / "out"
    not_a_picture = "junk.png: not a readable image"
    models = ["--models", world / "real", "-o", out]
    refused(["apply", f"union({world / 'a.png'}, {junk})", *models], out, not_a_picture)
    refused(["apply", "texturing", world / "a.png", junk, *models], out, not_a_picture)
    checkpoint = world / "hub" / "operators" / "models" / "texturing" / "learned_prior.pth"
    single = tmp_path / "one.safetensors"
    base = ["--base", world / "hub" / "kandinsky-2-2-prior", "--checkpoint", checkpoint]
    refused(["apply", world / "a.png", junk, *base, "-o", single], single, not_a_picture)
    depth = ["--render", "ipadapter-depth", "--structure", junk]  # its models are hub ids, unreachable here
    refused(["render", world / "e.safetensors", "-o", out, *depth], out, "junk.png: not a readable structure image")


def test_the_page_refuses_a_photo_that_is_no_picture_and_keeps_no_run(world, tmp_path, monkeypatch):
    import pops.models.model_set
    from pops.ui.backend import Backend, Settings

    monkeypatch.setattr(pops.models.model_set, "load_renderer", lambda *a, **k: pytest.fail("the renderer loaded"))
    backend = Backend([world / "real"], tmp_path / "ui")
    answer = backend.run_equation(
        "texturing(a.png, junk.png)", [str(world / "a.png"), str(world / "junk.png")], Settings(str(world / "real"))
    )
    # The page shows the error with a caret under the file's name.
    assert not answer.ok and answer.status.startswith("**Error") and "junk.png: not a readable image" in answer.status
    assert list((tmp_path / "ui" / "runs").iterdir()) == []
