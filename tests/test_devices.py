"""--device, --dtype and --generator-device: named once (pops.base.devices), checked before anything loads — CUDA asked
for on this CPU-only machine is one line and a non-zero exit in every command — and honoured where models run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.cli import run_cli
from tests.helpers.models import write_union_test_data
from tests.helpers.processes import REPO, pops_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NO_CUDA = not torch.cuda.is_available()


def test_names_resolve_and_bad_names_are_one_line():
    from pops.base.devices import check_placement, dtype_name, make_generator, resolve_device, resolve_dtype

    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    assert dtype_name(torch.bfloat16) == "bf16" and resolve_device("cpu") == torch.device("cpu")
    # The same seed gives the same CPU noise, on any machine.
    assert torch.equal(torch.randn(4, generator=make_generator(3)), torch.randn(4, generator=make_generator(3)))
    for call, message in [
        (lambda: resolve_dtype("fp8"), "unknown dtype 'fp8'; use fp16, bf16 or fp32"),
        (lambda: resolve_device("gpu"), "unknown device 'gpu'; use cpu, cuda or cuda:N"),
        (lambda: check_placement("cpu", "half-ish"), "unknown dtype"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.skipif(not NO_CUDA, reason="this checks the message of a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_by_the_helper():
    from pops.base.devices import check_placement, make_generator, resolve_device

    for call in (lambda: resolve_device("cuda"), lambda: make_generator(0, "cuda"), lambda: check_placement("cuda:1")):
        with pytest.raises(ValueError, match="has no CUDA GPU; use --device cpu"):
            call()


def test_noise_on_a_gpu_needs_the_operators_on_a_gpu(monkeypatch):
    from pops.base.devices import check_placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine; nothing is placed here
    with pytest.raises(ValueError, match=r"--generator-device cuda draws the noise on the GPU: run there too"):
        check_placement("cpu", None, "cuda")
    check_placement("cuda", "bf16", "cuda")


@pytest.mark.skipif(not NO_CUDA, reason="this checks the message of a machine without CUDA")
@pytest.mark.parametrize(
    "command",
    [
        ["apply", "texturing", "a.png", "b.png"],
        ["apply", "a.safetensors", "b.safetensors", "-m", "op"],
        ["apply", "--replay", "record.json"],
        ["serve", "--models", "m"],
        ["eval", "--models", "."],
        ["render", "e.safetensors", "--out", "o"],
        ["train", "config.yaml"],
    ],
)
@pytest.mark.parametrize("option", [["--device", "cuda"], ["--generator-device", "cuda"]])
def test_every_command_refuses_cuda_in_one_line_before_loading_anything(command, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*command, *option)
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        "error: device 'cuda' was asked for but this machine has no CUDA GPU; use --device cpu"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_dtype_and_device_reach_the_operators_of_an_equation(tiny_operator, tmp_path):
    from pops.embeddings.io import load_embeddings, save_embeddings

    tiny_operator("union").save_pretrained(tmp_path / "models" / "operators" / "union")
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        save_embeddings(tmp_path / f"{name}.safetensors", torch.randn(1, 32, generator=g))
    equation = f"union({tmp_path / 'a.safetensors'}, {tmp_path / 'b.safetensors'})"
    outs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        args = ["--models", tmp_path / "models", "--steps", 4, "--device", "cpu", "--dtype", dtype, "-o", out]
        result = run_cli("apply", equation, *args)
        assert result.exit_code == 0, result.output
        outs[dtype] = load_embeddings(out / "output.safetensors")[0]
        assert json.loads((out / "record.json").read_text())["generator_device"] == "cpu"
    assert not torch.equal(outs["fp32"], outs["bf16"])  # the bf16 prior did run …
    assert torch.nn.functional.cosine_similarity(outs["fp32"], outs["bf16"]).min() > 0.95  # … the same function

    from pops.models.model_set import ModelSet

    models = ModelSet(tmp_path / "models", device="cpu", dtype="bf16")
    assert models.operator("union").model.prior.dtype is torch.bfloat16


def test_single_operator_apply_and_eval_take_device_and_dtype(tiny_operator, tmp_path):
    from pops.embeddings.io import load_embeddings, save_embeddings

    folder = tiny_operator("texturing").save_pretrained(tmp_path / "op")
    g = torch.Generator().manual_seed(1)
    for name in ("a", "b"):
        save_embeddings(tmp_path / f"{name}.safetensors", torch.randn(1, 32, generator=g))
    base = ["apply", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "-m", folder, "--steps", 3]
    assert run_cli(*base, "-o", tmp_path / "fp32.safetensors", "--device", "cpu").exit_code == 0
    result = run_cli(*base, "-o", tmp_path / "bf16.safetensors", "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    full, half = (load_embeddings(tmp_path / f"{d}.safetensors")[0] for d in ("fp32", "bf16"))
    assert half.dtype is torch.float32 and not torch.equal(full, half)
    assert torch.nn.functional.cosine_similarity(full, half).min() > 0.95
    result = run_cli("eval", "--models", tmp_path, "--dtype", "fp8")
    assert result.exit_code != 0 and "unknown dtype 'fp8'" in result.output


# ----- --generator-device reaches every generator that draws noise ------------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch):
    """As on a GPU machine, for the plumbing only: "cuda" resolves to the CPU (so the noise is still drawn here) and
    every time it is asked for is recorded — by check_placement and by every make_generator."""
    import pops.base.devices

    real, asked = pops.base.devices.resolve_device, []

    def resolve(device=None):
        if device is not None and torch.device(device).type == "cuda":
            asked.append(str(device))
            return torch.device("cpu")
        return real(device)

    monkeypatch.setattr(pops.base.devices, "resolve_device", resolve)
    return asked


def embeddings_models(tiny_operator, root, with_renderer=True):
    """A models folder with a tiny union operator (and a retrieval renderer), and two embedding inputs."""
    from pops.embeddings.io import save_embeddings
    from pops.renderers.retrieval import RetrievalRenderer

    tiny_operator("union").save_pretrained(root / "models" / "operators" / "union")
    g = torch.Generator().manual_seed(0)
    if with_renderer:
        from PIL import Image

        pictures = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(4)]
        renderer = RetrievalRenderer(torch.randn(4, 32, generator=g), pictures)
        renderer.save_pretrained(root / "models" / "renderers" / "retrieval")
    for name in ("a", "b"):
        save_embeddings(root / f"{name}.safetensors", torch.randn(1, 32, generator=g))
    return root / "models"


def test_equations_draw_the_operators_and_the_renderers_noise_on_the_generator_device(
    fake_cuda, tiny_operator, tmp_path
):
    models = embeddings_models(tiny_operator, tmp_path)
    equation = f"union({tmp_path / 'a.safetensors'}, {tmp_path / 'b.safetensors'})"
    base = ["apply", equation, "--models", models, "--steps", 3, "--device", "cuda", "--generator-device", "cuda"]
    counts = {}
    for render in ("none", "retrieval"):
        before = len(fake_cuda)
        result = run_cli(*base, "--render", render, "-o", tmp_path / render)
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / render / "record.json").read_text())["generator_device"] == "cuda"
        counts[render] = len(fake_cuda) - before
    assert counts["retrieval"] == counts["none"] + 1  # the one step's picture is drawn with that generator too


def test_serve_and_its_backend_draw_every_runs_noise_on_the_generator_device(
    fake_cuda, tiny_operator, tmp_path, monkeypatch
):
    import pops.ui
    from pops.ui.backend import Backend, Settings

    models = embeddings_models(tiny_operator, tmp_path)
    started = {}
    monkeypatch.setattr(pops.ui, "serve", lambda *args, **kwargs: started.update(kwargs))
    result = run_cli(
        "serve", "--models", models, "-o", tmp_path / "ui", "--generator-device", "cuda", "--device", "cuda"
    )
    assert result.exit_code == 0, result.output
    assert started["generator_device"] == "cuda" and started["placement"]["device"] == "cuda"

    for device in ("cpu", "cuda"):
        backend = Backend([models], tmp_path / f"ui-{device}", generator_device=device)
        files = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
        before = len(fake_cuda)
        answer = backend.run_equation(
            "union(a.safetensors, b.safetensors)", files, Settings(str(models), "retrieval", steps=3)
        )
        assert answer.ok, answer.status
        # The operator's noise and the picture's: on the GPU when asked, never otherwise.
        assert len(fake_cuda) - before == (2 if device == "cuda" else 0)


def test_eval_draws_its_noise_on_the_generator_device(fake_cuda, tiny_operator, tmp_path):
    models = embeddings_models(tiny_operator, tmp_path, with_renderer=False)
    write_union_test_data(tmp_path / "data")
    args = ["eval", "--models", models, "--data", tmp_path / "data", "--seeds", 2, "--steps", 2]
    tables = {}
    for device in ("cpu", "cuda"):
        before = len(fake_cuda)
        result = run_cli(*args, "--generator-device", device, "-o", tmp_path / f"{device}.json")
        assert result.exit_code == 0, result.output
        tables[device] = json.loads((tmp_path / f"{device}.json").read_text())
        # One generator per seed (the check of the option itself asks once more).
        assert len(fake_cuda) - before == (3 if device == "cuda" else 0)
    assert tables["cpu"] == tables["cuda"]  # drawn on this CPU either way here: the same numbers


def test_train_takes_device_dtype_and_the_validation_generator_device(fake_cuda, tmp_path, monkeypatch):
    import pops.cli.train
    import pops.train.monitor
    from pops.core.prior import PopsPrior
    from pops.train import train
    from tests.helpers.pairs import make_pairs
    from tests.helpers.priors import tiny_prior
    from tests.helpers.training import DIM, tiny_config

    seen = {}
    monkeypatch.setattr(pops.cli.train, "_train", lambda cfg, progress: seen.update(cfg=cfg))
    config = tmp_path / "config.yaml"
    config.write_text("operator: union\n")
    result = run_cli("train", config, "--device", "cpu", "--dtype", "bf16", "--generator-device", "cpu")
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.device, cfg.mixed_precision, cfg.validation.generator_device) == ("cpu", "bf16", "cpu")
    assert run_cli("train", config, "--dtype", "fp32").exit_code == 0 and seen["cfg"].mixed_precision == "no"
    for option, message in [
        (["--device", "cuda:1"], "train runs on cpu or cuda, got 'cuda:1'"),
        (["--device", "cpu", "--generator-device", "cuda"], "generator_device cuda draws the noise on the GPU"),
    ]:
        result = run_cli("train", config, *option)
        assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1 and message in result.output

    # The validation samples ask for a generator on the device the run trains on.
    devices = []

    def recording(seed, device="cpu"):
        devices.append(device)
        return torch.Generator().manual_seed(int(seed))

    monkeypatch.setattr(pops.train.monitor, "make_generator", recording)
    for generator_device in ("cpu", "cuda"):
        cfg = tiny_config(
            tmp_path / generator_device,
            max_steps=2,
            validation={"every": 2, "num_samples": 2, "num_inference_steps": 2, "generator_device": generator_device},
        )
        train(cfg, pairs=make_pairs(), model=PopsPrior(tiny_prior(dim=DIM)))
    assert devices == ["cpu", torch.device("cpu")]  # the string, then the accelerator's device (this CPU here)


def test_gpu_check_says_there_is_no_gpu_and_its_code_path_runs_at_toy_size(tmp_path):
    """benchmarks/gpu_check.py refuses to measure without CUDA (status 2, one line); `--smoke` runs every section on
    the CPU at toy sizes so the script a GPU session runs is known to work."""
    import subprocess
    import sys

    env = pops_env(OMP_NUM_THREADS="1")
    script = REPO / "benchmarks" / "gpu_check.py"
    if NO_CUDA:
        done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and "no CUDA GPU on this machine" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, script, "--smoke", "--out", out], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["smoke"] is True and results["device"] == "cpu (smoke)"
    assert results["operator_call_seconds"]["generator: same seed same samples"] is True
    assert set(results["training"]) >= {"compact batch 64", "padded batch 128"}
    assert results["memory"]["render: seconds per step (4 pictures)"] > 0
