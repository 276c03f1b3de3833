"""Adding an operator is adding one registry entry: a sixth operator (two image slots, on the world's union recipe
with its own random streams) goes through the world, training, sampling, equations and the quick demo without a
line of code elsewhere."""

from __future__ import annotations

import pytest
import torch

from pops.base.registry import REGISTRY, DropoutRule, OperatorSpec, Slot

PAIR = OperatorSpec(
    kind="pair",
    description="two objects side by side (a test-only entry)",
    slots=(Slot("left", help="one object"), Slot("right", help="another object")),
    dropout=DropoutRule(joint=0.2),
    guidance_scale=2.0,
    recipe="union",
    stream_id=99,
    aliases=("duo",),
)


@pytest.fixture
def pair_operator(monkeypatch):
    monkeypatch.setitem(REGISTRY, PAIR.kind, PAIR)
    return PAIR


def test_a_sixth_entry_draws_its_own_world_samples(pair_operator):
    from pops.world import World, WorldConfig

    world = World(WorldConfig(shapes=("circle", "square", "triangle", "star", "heart", "moon")))
    samples = world.samples("pair", "train", 4, seed=0)
    assert len(samples) == 4 and all(len(s.inputs) == 2 and s.operator == "pair" for s in samples)
    assert set(world.classes("pair", "all")) == set(world.classes("union", "all"))  # the same recipe ...
    assert world.samples("pair", "train", 4, seed=0)[0].recipe != world.samples("union", "train", 4, seed=0)[0].recipe
    inputs, target = world.render(samples[0].recipe)  # ... its own streams, and re-rendered exactly
    assert target.tobytes() == samples[0].target.tobytes()


def test_a_sixth_entry_is_callable_in_equations_by_its_alias(pair_operator):
    from pops.equation.validate import operator_names

    assert operator_names()["duo"] == "pair"


@pytest.mark.slow
def test_a_sixth_entry_trains_samples_and_runs_in_the_quick_demo(pair_operator, tmp_path):
    from pops.demo import quick_config, run_demo
    from pops.operators.operator import Operator

    # One worker: spawned worker processes would import the registry afresh, without the test's entry.
    config = quick_config(out=tmp_path / "demo", operators=("pair",), workers=1, steps=60, progress=False)
    result = run_demo(config)
    pops, input_a = result.table.get("pair", "pops"), result.table.get("pair", "input_a")
    assert pops.n > 0 and pops.top1 > input_a.top1  # it learned to hold both objects, on held-out pairs
    assert result.trained == ["pair"] and result.guidance["pair"] in (*config.guidance_candidates, PAIR.guidance_scale)
    op = Operator.from_pretrained(config.out / "operators" / "pair")
    assert op.spec.kind == "pair" and op.guidance_scale == result.guidance["pair"]
    left, right = torch.randn(3, op.embedding_dim), torch.randn(3, op.embedding_dim)
    out = op.sample([left, right], num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, op.embedding_dim) and torch.isfinite(out).all()
