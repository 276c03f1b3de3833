"""The operator core: layouts, sampler, objective, registry rules."""

from __future__ import annotations

import pytest
import torch
from diffusers import UnCLIPScheduler
from diffusers.utils.torch_utils import randn_tensor

from pops.base.registry import REGISTRY, get_spec
from pops.core.objective import make_training_scheduler, training_loss
from pops.core.prior import Condition, PopsPrior
from pops.embeddings.pairs import Batch
from tests.helpers.pairs import make_pairs
from tests.helpers.priors import tiny_prior


# ----- sampling: the reference loop in both layouts, batches, seeds, text rows ----------------------------------------
def reference_sample(prior, cond_rows, guidance_scale, steps, seed):
    """The reference procedure written out step by step, on diffusers' own (padded) forward: (B=1) only."""
    scheduler = UnCLIPScheduler(
        clip_sample=True, clip_sample_range=10.0, prediction_type="sample", variance_type="fixed_small_log"
    )
    generator = torch.Generator().manual_seed(seed)
    dim = prior.config.embedding_dim
    k = cond_rows.shape[0]
    hidden = torch.zeros(1, 77, dim)
    hidden[0, :k] = cond_rows
    mask = torch.zeros(1, 77)
    mask[0, :k] = 1
    if guidance_scale > 1:
        hidden = torch.cat([torch.zeros_like(hidden), hidden])
        mask = torch.cat([mask, mask])
    scheduler.set_timesteps(steps)
    latents = randn_tensor((1, dim), generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if guidance_scale > 1 else latents
            pred = prior(
                x,
                timestep=t,
                proj_embedding=torch.zeros(x.shape[0], dim),
                encoder_hidden_states=hidden,
                attention_mask=mask,
            ).predicted_image_embedding
            if guidance_scale > 1:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            prev = None if i + 1 == len(timesteps) else timesteps[i + 1]
            latents = scheduler.step(
                pred, timestep=t, sample=latents, generator=generator, prev_timestep=prev
            ).prev_sample
        return prior.post_process_latents(latents)


@pytest.mark.parametrize("kind", ["texturing", "scene", "composition"])
@pytest.mark.parametrize("guidance", [1.0, 8.0])
def test_sampler_matches_reference_loop_in_both_layouts(tiny_operator, kind, guidance):
    op = tiny_operator(kind)
    inputs = [torch.randn(1, 32) for _ in op.spec.slots]
    inputs[-1] = None if kind == "composition" else inputs[-1]  # a dropped slot is a zero row, mask 1
    rows = op.model.condition(op.spec, inputs).rows[0]
    expected = reference_sample(op.model.prior, rows, guidance, steps=10, seed=3)
    for layout in ("padded", "compact"):
        got = op.sample(
            inputs,
            guidance_scale=guidance,
            num_inference_steps=10,
            generator=torch.Generator().manual_seed(3),
            layout=layout,
        )
        assert (got - expected).abs().max() <= 1e-4, layout


@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_padded_equals_compact_forward(k):
    model = PopsPrior(tiny_prior(dim=48, layers=3, heads=3, head_dim=16, seed=k))
    batch = 4
    rows = torch.randn(batch, k, 48)
    mask = torch.ones(batch, k, dtype=torch.bool)
    mask[1, -1] = False  # a padded text row inside the condition
    x_t = torch.randn(batch, 48)
    t = torch.tensor([0, 10, 500, 999])
    cond = Condition(rows, mask)
    with torch.no_grad():
        padded = model(x_t, t, cond, layout="padded")
        compact = model(x_t, t, cond, layout="compact")
    assert (padded - compact).abs().max() <= 1e-5
    # and the layouts really differ in what they compute on: changing a masked row changes nothing
    rows2 = rows.clone()
    rows2[1, -1] += 100.0
    with torch.no_grad():
        again = model(x_t, t, Condition(rows2, mask), layout="compact")
    assert (again - compact).abs().max() <= 1e-5


def test_batched_sampling_matches_one_by_one_inputs(tiny_operator):
    op = tiny_operator("union")
    a, b = torch.randn(3, 32), torch.randn(3, 32)
    out = op.sample([a, b], guidance_scale=8.0, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    # each row is conditioned on its own inputs: with the same noise, different inputs give different outputs
    same = op.sample(
        [a[:1].expand(3, -1), b[:1].expand(3, -1)],
        guidance_scale=8.0,
        num_inference_steps=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert (out[0] - same[0]).abs().max() < 1e-5
    assert (out[1] - same[1]).abs().max() > 1e-3


def test_same_seed_same_output_and_default_guidance(tiny_operator):
    op = tiny_operator("texturing")
    x = [torch.randn(2, 32), torch.randn(2, 32)]
    one = op.sample(x, num_inference_steps=4, generator=torch.Generator().manual_seed(7))
    two = op.sample(x, guidance_scale=8.0, num_inference_steps=4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(one, two)  # texturing's registry default is 8
    three = op.sample(x, guidance_scale=1.0, num_inference_steps=4, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(one, three)


def test_instruct_text_rows_with_projection(tiny_operator):
    op = tiny_operator("instruct", text_width=12)
    image = torch.randn(2, 32)
    words = [torch.randn(3, 12), torch.randn(5, 12)]  # different token counts: padded with a mask
    cond = op.condition([image, words])
    assert cond.rows.shape == (2, 6, 32) and cond.mask.tolist()[0] == [True] * 4 + [False] * 2
    out = {
        layout: op.sample(
            [image, words], num_inference_steps=3, generator=torch.Generator().manual_seed(0), layout=layout
        )
        for layout in ("padded", "compact")
    }
    assert (out["padded"] - out["compact"]).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="width"):
        op.sample([image, torch.randn(3, 32)], num_inference_steps=3)


# ----- registry rules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_condition_dropout_frequencies_match_registry(kind):
    spec = get_spec(kind)
    n = 40000
    drop = spec.dropout.sample(n, spec.num_slots, torch.Generator().manual_seed(0))
    rate = drop.float().mean(0)
    expected = spec.dropout.expected_rate(spec.num_slots)
    assert torch.allclose(rate, torch.full_like(rate, expected), atol=0.01)
    if spec.dropout.joint and not spec.dropout.independent:
        assert (drop.all(1) == drop.any(1)).all()  # joint rule: all slots or none
    if spec.dropout.independent and not spec.dropout.joint:
        both = drop.all(1).float().mean().item()
        assert abs(both - expected**spec.num_slots) < 0.01  # independent rule


def test_registry_defaults():
    assert {k: REGISTRY[k].guidance_scale for k in ("texturing", "union", "scene", "instruct")} == {
        "texturing": 8.0,
        "union": 8.0,
        "scene": 1.0,
        "instruct": 1.0,
    }
    assert get_spec("composition").num_slots == 12
    assert [s.kind for s in get_spec("instruct").slots] == ["image", "text"]
    with pytest.raises(ValueError, match="unknown operator"):
        get_spec("paint")


# ----- the training objective -----------------------------------------------------------------------------------------
def test_training_loss_backward_and_frozen_stats(tiny_operator):
    op = tiny_operator("union")
    model = op.model
    before = model.prior.clip_mean.clone()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    batch = Batch(slots=[torch.randn(8, 32), torch.randn(8, 32)], target=torch.randn(8, 32))
    loss, details = training_loss(
        model, op.spec, batch, make_training_scheduler(), generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and details["t"].shape == (8,)
    assert torch.equal(model.prior.clip_mean, before)
    assert all(p is not model.prior.clip_mean and p is not model.prior.clip_std for p in model.trainable_parameters())


def test_training_loss_is_the_same_in_both_layouts(tiny_operator):
    op = tiny_operator("texturing")
    batch = Batch(slots=[torch.randn(6, 32), torch.randn(6, 32)], target=torch.randn(6, 32))
    losses = [
        training_loss(
            op.model,
            op.spec,
            batch,
            make_training_scheduler(),
            generator=torch.Generator().manual_seed(1),
            layout=layout,
        )[0]
        for layout in ("padded", "compact")
    ]
    assert abs(losses[0].item() - losses[1].item()) < 1e-5


def test_instruct_alignment_term_and_absent_slots(tiny_operator):
    op = tiny_operator("instruct", text_width=12)
    rows = torch.randn(4, 3, 12)
    batch = Batch(
        slots=[torch.randn(4, 32), (rows, torch.ones(4, 3, dtype=torch.bool))],
        target=torch.randn(4, 32),
        align_text=torch.randn(4, 32),
    )
    loss, details = training_loss(
        op.model, op.spec, batch, make_training_scheduler(), generator=torch.Generator().manual_seed(0)
    )
    assert "align" in details and (details["align"] >= 0).all() and (details["align"] <= 20).all()
    assert loss.item() == pytest.approx(details["mse"].mean().item() + details["align"].mean().item(), rel=1e-5)


def test_union_swaps_inputs_at_random():
    from pops.core.objective import _random_swap

    a, b = torch.zeros(1000, 4), torch.ones(1000, 4)
    (x, y, *_), _ = _random_swap([a, b], None, torch.Generator().manual_seed(0))
    swapped = x[:, 0].mean().item()
    assert 0.45 < swapped < 0.55 and torch.equal(x + y, torch.ones(1000, 4))


# ----- the operator: its stats, sample_batch, draws, the memory check -------------------------------------------------
def test_fresh_prior_without_stats_is_refused(make_tiny_prior):
    from pops.core.prior import make_prior
    from pops.operators.operator import Operator

    with pytest.raises(ValueError, match="clip_std"):
        Operator.from_prior(
            make_prior(embedding_dim=16, num_layers=1, num_attention_heads=1, attention_head_dim=8), "scene"
        )


@pytest.mark.parametrize("kind", ["texturing", "instruct", "composition"])
def test_sample_batch_is_the_chunked_path_with_one_generator(tiny_operator, kind):
    """sample_batch on Pairs = the path the demo's evaluation took: per chunk, condition with absent slots dropped,
    then the sampler, drawing from ONE generator across the chunks."""
    from pops.core.sampler import make_sampling_scheduler, sample_unclip

    op = tiny_operator(kind, text_width=12 if kind == "instruct" else None)
    pairs = make_pairs(kind, 7, learnable=False, keep=0.7, text_width=12)  # slots absent now and then
    got = op.sample_batch(
        pairs, guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator().manual_seed(5), chunk_size=3
    )
    generator, expected = torch.Generator().manual_seed(5), []
    for start in range(0, 7, 3):
        batch = pairs.batch(torch.arange(start, min(start + 3, 7)))
        cond = op.model.condition(op.spec, batch.slots, drop=~batch.present)
        expected.append(
            sample_unclip(
                op.model,
                cond,
                guidance_scale=3.0,
                num_inference_steps=4,
                generator=generator,
                scheduler=make_sampling_scheduler(op.config.sampling_scheduler),
            )
        )
    assert torch.equal(got, torch.cat(expected))
    again = op.sample_batch(
        pairs, guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator().manual_seed(5), chunk_size=3
    )
    assert torch.equal(got, again)  # the same seed, the same samples
    other = op.sample_batch(
        pairs, guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator().manual_seed(6), chunk_size=3
    )
    assert not torch.equal(got, other)


def test_sample_batch_equals_operator_sample_per_chunk(tiny_operator):
    """Every sample present: sample_batch = one Operator.sample call per chunk, in order, on one generator; and a
    Batch in one chunk = one Operator.sample call on all of it."""
    op = tiny_operator("instruct", text_width=12)
    pairs = make_pairs("instruct", 5, learnable=False, keep=0.7, text_width=12)
    pairs.present[:] = True
    got = op.sample_batch(pairs, num_inference_steps=3, generator=torch.Generator().manual_seed(1), chunk_size=2)
    generator = torch.Generator().manual_seed(1)
    image, (rows, mask) = pairs.slots
    chunks = [
        op.sample([image[i : i + 2], (rows[i : i + 2], mask[i : i + 2])], num_inference_steps=3, generator=generator)
        for i in range(0, 5, 2)
    ]
    assert torch.equal(got, torch.cat(chunks))
    whole = op.sample_batch(
        pairs.batch(torch.arange(5)), num_inference_steps=3, generator=torch.Generator().manual_seed(1), chunk_size=None
    )
    one = op.sample([image, (rows, mask)], num_inference_steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(whole, one)
    # a Batch in chunks takes the same rows as Pairs in chunks
    chunked = op.sample_batch(
        pairs.batch(torch.arange(5)), num_inference_steps=3, generator=torch.Generator().manual_seed(1), chunk_size=2
    )
    assert torch.equal(chunked, got)
    with pytest.raises(ValueError, match="chunk_size"):
        op.sample_batch(pairs, chunk_size=0)


def test_draws_average_each_rows_own_samples_and_are_saved(tiny_operator, tmp_path):
    """draws=k: each output is the mean of k samples of its own row (in a row, from the one generator, or each from
    its row's generator in a list); the operator's own draws are saved with it and used by default."""
    from pops.operators.operator import Operator

    op = tiny_operator("texturing")
    x = [torch.randn(2, 32, generator=torch.Generator().manual_seed(1)), torch.randn(2, 32)]
    settings = dict(guidance_scale=3.0, num_inference_steps=3, sampler="ddim")
    got = op.sample(x, generator=torch.Generator().manual_seed(4), draws=3, **settings)
    each = op.sample(
        [t.repeat_interleave(3, 0) for t in x], generator=torch.Generator().manual_seed(4), draws=1, **settings
    )
    assert torch.allclose(got, each.view(2, 3, -1).mean(1), atol=1e-6)
    assert not torch.allclose(got, each.view(2, 3, -1)[:, 0], atol=1e-4)  # a mean, not one draw
    generators = [torch.Generator().manual_seed(s) for s in (7, 8)]
    listed = op.sample(x, generator=generators, draws=2, **settings)
    first = op.sample([t[:1] for t in x], generator=torch.Generator().manual_seed(7), draws=2, **settings)
    assert torch.allclose(listed[:1], first, atol=1e-6)  # row 0's two samples both come from its own generator
    with pytest.raises(ValueError, match="draws"):
        op.sample(x, draws=0)
    op.draws = 3
    assert torch.equal(op.sample(x, generator=torch.Generator().manual_seed(4), **settings), got)
    op.save_pretrained(tmp_path / "op")
    assert Operator.from_pretrained(tmp_path / "op").draws == 3


def test_the_memory_check_counts_each_rows_draws(tiny_operator, monkeypatch):
    """check_memory(batch) counts batch x draws rows (the operator's own draws unless named), as sampling does."""
    from pops.base import checks

    op = tiny_operator("texturing")
    op.draws = 4
    # Room for 10 rows sampled once, not for 10 rows sampled 4 times.
    room = (op.sampling_bytes(10) + op.sampling_bytes(40)) / 2 / checks.MEMORY_SHARE
    monkeypatch.setattr(checks, "available_memory", lambda: room)
    op.check_memory(10, draws=1)
    with pytest.raises(ValueError, match="sampling 40 row"):
        op.check_memory(10)
    with pytest.raises(ValueError, match="sampling 40 row"):
        op.sample([torch.randn(10, 32), torch.randn(10, 32)], num_inference_steps=2)
