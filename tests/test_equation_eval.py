"""Evaluating equations on real tiny operators: results equal hand-chained sampling, batching changes nothing,
every step is cached, errors come before any sampling, and `pops apply` writes a record that replays exactly."""

from __future__ import annotations

import json

import pytest
import torch

import pops
from pops.embeddings.io import load_embeddings, save_embeddings
from pops.equation import EquationError, EquationRunner, ModelSet
from pops.equation.cli import run_equation_cli
from tests.helpers.cli import run_cli

DIM = 32
STEPS = 4  # sampling steps: enough to exercise the loop, cheap on a CPU


def gen(seed):
    return torch.Generator().manual_seed(seed)


class SampleSpy:
    """Counts Operator.sample calls and the rows they sample."""

    def __init__(self, op):
        self.calls, self.rows, self._sample = 0, [], op.sample
        op.sample = self

    def __call__(self, inputs, **kwargs):
        self.calls += 1
        self.rows.append(len(kwargs["generator"]))
        return self._sample(inputs, **kwargs)


@pytest.fixture
def ops(tiny_operator):
    return {kind: tiny_operator(kind, dim=DIM, seed=i) for i, kind in enumerate(["texturing", "union", "scene"])}


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    embeds = {name: torch.randn(1, DIM) * 2 for name in "abc"}
    for name, e in embeds.items():
        save_embeddings(tmp_path / f"{name}.safetensors", e)
    return tmp_path, embeds


def test_chain_equals_hand_chained_sampling(ops, files):
    folder, e = files
    result = pops.apply(
        "let t = texture(a.safetensors, b.safetensors)\nscene(t, c.safetensors)",
        models=ops,
        seed=3,
        num_inference_steps=STEPS,
        base_dir=folder,
    )
    t = ops["texturing"].sample([e["a"], e["b"]], guidance_scale=8.0, num_inference_steps=STEPS, generator=gen(3))
    out = ops["scene"].sample([t, e["c"]], guidance_scale=1.0, num_inference_steps=STEPS, generator=gen(3))
    assert torch.allclose(result.intermediates["t"], t, atol=1e-5)
    assert torch.allclose(result.output, out, atol=1e-5)
    assert result.output.shape == (1, DIM)
    assert [s.label for s in result.computed] == ["t", "output"]
    assert result.record["seeds"] == {"t": 3, "output": 3}
    assert result.record["guidance"] == {"t": 8.0, "output": 1.0}  # registry defaults


def test_weighted_sums_and_mean_are_exact(ops, files):
    folder, e = files
    r = pops.apply("0.3*a.safetensors + 0.7*b.safetensors - c.safetensors", models=ops, base_dir=folder)
    assert torch.allclose(r.output, 0.3 * e["a"] + 0.7 * e["b"] - e["c"])
    r = pops.apply("mean(a.safetensors, b.safetensors, c.safetensors)", models=ops, base_dir=folder)
    assert torch.allclose(r.output, (e["a"] + e["b"] + e["c"]) / 3, atol=1e-6)
    r = pops.apply("a.safetensors", models=ops, base_dir=folder, num_samples=2)  # a bare input is the output
    assert torch.equal(r.output, e["a"].expand(2, -1)) and list(r.intermediates) == ["output"]


def test_batching_is_invisible_and_samples_reproduce_alone(ops, files):
    folder, _ = files
    spy = SampleSpy(ops["texturing"])
    both = EquationRunner(ops).run(
        "union(texture(a.safetensors, b.safetensors), texture(b.safetensors, c.safetensors))",
        num_inference_steps=STEPS,
        num_samples=3,
        seed=5,
        base_dir=folder,
    )
    assert spy.calls == 1 and spy.rows == [6]  # the two texturing steps ran as one batch of 2 x 3 samples
    alone = EquationRunner(ops).run(
        "texture(b.safetensors, c.safetensors)", num_inference_steps=STEPS, num_samples=3, seed=5, base_dir=folder
    )
    assert torch.allclose(both.intermediates["step 2"], alone.output, atol=1e-5)
    # Sample i of a step is seeded seed + i: sample 2 is the first sample of seed 7.
    single = EquationRunner(ops).run(
        "texture(b.safetensors, c.safetensors)", num_inference_steps=STEPS, num_samples=1, seed=7, base_dir=folder
    )
    assert torch.allclose(alone.output[2], single.output[0], atol=1e-5)
    assert both.output.shape == (3, DIM) and not torch.allclose(both.output[0], both.output[1])


def test_new_seed_for_the_last_step_reuses_every_other_step(ops, files):
    folder, _ = files
    spies = {k: SampleSpy(op) for k, op in ops.items()}
    ev = EquationRunner(ops)
    eq = "let t = texture(a.safetensors, b.safetensors)\nlet u = union(t, c.safetensors)\nscene(u, a.safetensors)"
    first = ev.run(eq, num_inference_steps=STEPS, base_dir=folder)
    assert [s.calls for s in spies.values()] == [1, 1, 1] and first.num_cached == 0
    again = ev.run(eq, num_inference_steps=STEPS, base_dir=folder, seeds={"output": 9})
    assert [s.calls for s in spies.values()] == [1, 1, 2]  # only scene ran again
    assert [s.cached for s in again.computed] == [True, True, False]
    assert torch.equal(again.intermediates["u"], first.intermediates["u"])
    assert not torch.allclose(again.output, first.output)
    # A different setting of an early step invalidates that step and everything downstream.
    ev.run(eq, num_inference_steps=STEPS, base_dir=folder, seeds={"t": 1})
    assert [s.calls for s in spies.values()] == [2, 2, 3]


def test_errors_are_reported_before_anything_samples(ops, files):
    folder, _ = files
    spy = SampleSpy(ops["texturing"])
    bad = {
        "let t = texture(a.safetensors, b.safetensors)\nscene(t, missing.safetensors)": (2, 10, "file not found"),
        'let t = texture(a.safetensors, b.safetensors)\ninstruct(t, "red")': (2, 1, "no 'instruct' operator"),
        "let t = texture(a.safetensors, b.safetensors)\nscene(t)": (2, 1, "scene takes 2 inputs, got 1"),
        "let t = texture(a.safetensors, b.safetensors)\nscene(t, sky)": (2, 10, "unknown name 'sky'"),
    }
    for source, (line, column, message) in bad.items():
        with pytest.raises(EquationError) as info:
            pops.apply(source, models=ops, num_inference_steps=STEPS, base_dir=folder)
        assert (info.value.line, info.value.column) == (line, column) and message in str(info.value)
    assert spy.calls == 0


def test_bad_embedding_files_and_settings(ops, files):
    folder, _ = files
    save_embeddings(folder / "wide.safetensors", torch.randn(1, DIM + 1))
    save_embeddings(folder / "rows.safetensors", torch.randn(3, DIM))
    with pytest.raises(EquationError, match="33-d but the operators work in 32-d"):
        pops.apply("texture(a.safetensors, wide.safetensors)", models=ops, base_dir=folder)
    with pytest.raises(EquationError, match="has 3 rows; expected 1 or num_samples"):
        pops.apply("texture(a.safetensors, rows.safetensors)", models=ops, base_dir=folder, num_samples=2)
    r = pops.apply(
        "texture(a.safetensors, rows.safetensors)",
        models=ops,
        base_dir=folder,
        num_samples=3,
        num_inference_steps=STEPS,
    )
    assert r.output.shape == (3, DIM)
    with pytest.raises(ValueError, match="no operator step named 'nope'"):
        pops.apply("texture(a.safetensors, b.safetensors)", models=ops, base_dir=folder, seeds={"nope": 1})
    with pytest.raises(ValueError, match="num_samples"):
        pops.apply("texture(a.safetensors, b.safetensors)", models=ops, base_dir=folder, num_samples=0)


@pytest.mark.slow
def test_images_are_encoded_once_in_one_batch_and_words_fill_text_slots(make_tiny_prior, tmp_path):
    from PIL import Image

    from pops.encoders.efficientnet import EfficientNetEncoder
    from pops.encoders.minilm import MiniLMEncoder
    from pops.operators.operator import Operator

    encoder = EfficientNetEncoder(64)
    calls = []
    encode = encoder.encode
    encoder.encode = lambda items, **kw: calls.append(len(items)) or encode(items, **kw)
    texturing = Operator.from_prior(make_tiny_prior(dim=1280), "texturing", image_encoder=encoder)
    instruct = Operator.from_prior(
        make_tiny_prior(dim=1280, seed=1),
        "instruct",
        text_width=384,
        image_encoder=encoder,
        text_encoder=MiniLMEncoder(),
    )
    for name, colour in (("cat", "red"), ("wood", "brown")):
        Image.new("RGB", (48, 48), colour).save(tmp_path / f"{name}.png")
    ev = EquationRunner([texturing, instruct])
    red = ev.run('instruct(texture(cat.png, wood.png), "red")', num_inference_steps=STEPS, base_dir=tmp_path)
    assert calls == [2]  # both images, one encoder call
    t = texturing.sample(
        [encoder.encode([Image.open(tmp_path / "cat.png")]), encoder.encode([Image.open(tmp_path / "wood.png")])],
        guidance_scale=8.0,
        num_inference_steps=STEPS,
        generator=gen(0),
    )
    expected = instruct.sample([t, "red"], guidance_scale=1.0, num_inference_steps=STEPS, generator=gen(0))
    assert torch.allclose(red.output, expected, atol=1e-4)
    blue = ev.run('instruct(texture(cat.png, wood.png), "blue")', num_inference_steps=STEPS, base_dir=tmp_path)
    assert calls == [2, 1, 1]  # the two spy calls above; the equation's images came from the cache
    assert blue.num_cached == 1 and not torch.allclose(blue.output, red.output)


# ----- a models folder, the disk cache and the CLI ------------------------------------------------------------------
@pytest.fixture
def models_dir(ops, tmp_path):
    from PIL import Image

    from pops.renderers.retrieval import RetrievalRenderer

    root = tmp_path / "models"
    for kind, op in ops.items():
        op.save_pretrained(root / "operators" / kind)
    torch.manual_seed(1)
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    gallery = [Image.new("RGB", (16, 16), c) for c in colours]
    RetrievalRenderer(torch.randn(len(colours), DIM), gallery).save_pretrained(root / "renderers" / "retrieval")
    return root


def test_models_folder_loads_operators_and_the_disk_cache_survives_processes(models_dir, files, tmp_path):
    folder, _ = files
    models = ModelSet(models_dir)
    assert models.available() == ["texturing", "union", "scene"]
    assert models.renderer_names() == ["retrieval"]
    assert models.fingerprint("texturing") == ModelSet(models_dir).fingerprint("texturing")
    eq = "scene(texture(a.safetensors, b.safetensors), c.safetensors)"
    first = EquationRunner(models, cache_dir=tmp_path / "cache").run(eq, num_inference_steps=STEPS, base_dir=folder)
    fresh = ModelSet(models_dir)
    spy = SampleSpy(fresh.operator("texturing"))
    second = EquationRunner(fresh, cache_dir=tmp_path / "cache").run(eq, num_inference_steps=STEPS, base_dir=folder)
    assert spy.calls == 0 and second.num_cached == 2
    assert torch.equal(first.output, second.output)
    with pytest.raises(EquationError, match="no trained 'instruct' operator"):
        EquationRunner(fresh).validate('instruct(a.safetensors, "red")', base_dir=folder)


def test_cli_writes_pictures_embeddings_and_a_record_that_replays(models_dir, files, tmp_path):
    folder, _ = files
    out = tmp_path / "out"
    messages = []
    eq = "let t = texture(a.safetensors, b.safetensors); scene(t, c.safetensors)"
    result = run_equation_cli(
        eq,
        models_dir,
        out,
        seed=4,
        num_inference_steps=STEPS,
        num_samples=2,
        base_dir=folder,
        step_seeds=["output=11"],
        echo=messages.append,
    )
    record = json.loads((out / "record.json").read_text())
    assert record["seeds"] == {"t": 4, "output": 11} and record["renderer"] == "retrieval"
    assert record["outputs"]["images"] == ["output_0.png", "output_1.png"]
    saved, meta = load_embeddings(out / "output.safetensors")
    assert torch.equal(saved, result.output) and meta["equation"] == eq
    assert torch.equal(load_embeddings(out / "steps" / "t.safetensors")[0], result.intermediates["t"])
    from PIL import Image

    for rel in ("output_0.png", "output_1.png", "steps/t_0.png", "steps/t_1.png"):
        assert Image.open(out / rel).size == (16, 16)
    assert "replay" in messages[0]

    replayed = run_equation_cli(None, None, tmp_path / "again", replay=out / "record.json", echo=messages.append)
    assert torch.equal(replayed.output, result.output)
    assert replayed.num_cached == 0  # a new folder: recomputed from scratch, and identical
    save_embeddings(folder / "c.safetensors", torch.randn(1, DIM))
    with pytest.raises(ValueError, match="changed since the record was written"):
        run_equation_cli(None, None, tmp_path / "third", replay=out / "record.json", echo=messages.append)


def test_pops_apply_routes_equations(models_dir, files, tmp_path, monkeypatch):
    folder, _ = files
    monkeypatch.chdir(folder)
    out = tmp_path / "cli_out"
    ok = run_cli(
        "apply", "texture(a.safetensors, b.safetensors)", "--models", models_dir, "--out", out, "--steps", STEPS
    )
    assert ok.exit_code == 0, ok.output
    assert (out / "record.json").is_file() and (out / "output_0.png").is_file()
    bad = run_cli("apply", "texture(a.safetensors, b.safetensors", "--models", models_dir, "--out", out)
    assert bad.exit_code != 0
    assert "error: line 1, column" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_samplers_by_name_in_equations_and_their_replay(models_dir, files, tmp_path):
    """`sampler=` reaches every operator step, enters the step cache key and the record, and a replay uses it."""
    folder, _ = files
    eq = "scene(texture(a.safetensors, b.safetensors), c.safetensors)"
    runner = EquationRunner(models_dir)
    reference = runner.run(eq, num_inference_steps=STEPS, base_dir=folder)
    fast = runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="ddim")
    assert fast.num_cached == 0 and not torch.allclose(fast.output, reference.output)
    assert fast.record["sampler"] == "ddim" and reference.record["sampler"] is None
    again = runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="ddim")
    assert again.num_cached == 2 and torch.equal(again.output, fast.output)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="euler")
    out = tmp_path / "run"
    first = run_equation_cli(
        eq, models_dir, out, num_inference_steps=2, base_dir=folder, render="none", sampler="dpmpp"
    )
    replayed = run_equation_cli(None, None, tmp_path / "replay", replay=out / "record.json", render="none")
    assert json.loads((out / "record.json").read_text())["sampler"] == "dpmpp"
    assert torch.equal(first.output, replayed.output)


def test_draws_in_equations_enter_the_cache_key_and_the_record(models_dir, files, tmp_path):
    """`draws=` (samples averaged per output) reaches every operator step, changes its cache key (so does an
    operator's own draws changed in memory) and the record, and a replay uses it."""
    folder, _ = files
    eq = "scene(texture(a.safetensors, b.safetensors), c.safetensors)"
    runner = EquationRunner(models_dir)
    one = runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="ddim")
    three = runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="ddim", draws=3)
    assert three.num_cached == 0 and not torch.allclose(three.output, one.output)
    assert three.record["draws"] == 3 and one.record["draws"] is None
    runner.models.operator("texturing").draws = 3  # the operator's own draws: a new key for its step
    own = runner.run(eq, num_inference_steps=2, base_dir=folder, sampler="ddim")
    # texturing's step now has the key of the draws=3 run (same draws, same samples); scene's (1 draw) is new
    assert own.num_cached == 1 and not torch.allclose(own.output, three.output)
    assert not torch.allclose(own.output, one.output)
    runner.models.operator("texturing").draws = 1
    with pytest.raises(ValueError, match="draws"):
        runner.run(eq, num_inference_steps=2, base_dir=folder, draws=0)
    out = tmp_path / "run"
    first = run_equation_cli(
        eq, models_dir, out, num_inference_steps=2, base_dir=folder, render="none", sampler="ddim", draws=2
    )
    replayed = run_equation_cli(None, None, tmp_path / "replay", replay=out / "record.json", render="none")
    assert json.loads((out / "record.json").read_text())["draws"] == 2
    assert torch.equal(first.output, replayed.output)
