"""The trainer (pops.train): config, data stream, options (LoRA, EMA, N blocks, accumulation, checkpointing)
in-process."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from pops.base.registry import get_spec
from pops.core.prior import PopsPrior
from tests.helpers.pairs import make_pairs
from tests.helpers.priors import tiny_prior
from tests.helpers.processes import REPO
from tests.helpers.training import DIM, max_diff, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----- config ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["texturing", "union", "scene", "instruct", "composition"])
def test_shipped_configs_load_with_reference_defaults(kind):
    from pops.train.config import load_config

    cfg = load_config(REPO / "configs" / "train" / f"{kind}.yaml")
    assert cfg.operator == kind and cfg.init == "kandinsky" and cfg.layout == "compact"
    o = cfg.optim
    assert (o.lr, tuple(o.betas), o.weight_decay, o.max_grad_norm, o.schedule) == (
        1e-5,
        (0.9, 0.999),
        0.0,
        1.0,
        "constant",
    )


def test_config_errors_and_overrides(tmp_path):
    from pops.train.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("operator: union\ndata: x.safetensors\noptim:\n  lr: 1e-4\n")
    cfg = load_config(path, ["optim.lr=3e-4", "lora.enabled=true", "optim.betas=[0.8, 0.99]"])
    assert cfg.optim.lr == 3e-4 and cfg.lora.enabled and cfg.optim.betas == (0.8, 0.99)
    assert load_config(path).optim.lr == 1e-4  # the YAML 1.1 '1e-4' string reads as a float
    for text, overrides, message in [
        ("operator: union\ndata: x\noptim:\n  lrr: 1\n", [], "unknown key 'optim.lrr'"),
        ("operator: union\ndata: x\n", ["optim.nope=1"], "unknown key 'optim.nope'"),
        ("operator: union\ndata: x\nmax_steps: many\n", [], "max_steps"),
        ("operator: unionize\ndata: x\n", [], "unknown 'unionize'"),
        ("operator: union\ndata: x\ninit: imagenet\n", [], "init"),
        ("operator: union\ndata: x\n", ["max_steps"], "key=value"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
            load_config(path, overrides)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_cli_bad_config_is_one_line_error(tmp_path):
    import importlib

    from typer.testing import CliRunner

    from pops.cli import COMMANDS
    from pops.cli.app import app

    for name in COMMANDS:  # as `pops` does: every sub-command registered, so `train` is addressed by name
        importlib.import_module(f"pops.cli.{name}")

    path = tmp_path / "c.yaml"
    path.write_text("operator: texturing\ndata: x\nbatch_sise: 3\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown key 'batch_sise'" in lines[0]
    result = CliRunner().invoke(app, ["train", str(path), "--override", "batch_sise=4"])
    assert result.exit_code != 0
    help_text = CliRunner().invoke(app, ["train", "--help"]).output
    assert "--override" in help_text and "accelerate launch" in help_text


# ----- data stream ----------------------------------------------------------------------------------------------
def test_stream_is_deterministic_resumable_and_shards_partition_the_global_batch():
    from pops.train.stream import PairStream, shard_generator

    pairs = make_pairs(n=10)
    a, b = PairStream(pairs, seed=3), PairStream(pairs, seed=3)
    assert sorted(a.epoch_order(0).tolist()) == list(range(10))
    assert not torch.equal(a.epoch_order(0), a.epoch_order(1))  # reshuffled each epoch
    assert not torch.equal(a.epoch_order(0), PairStream(pairs, seed=4).epoch_order(0))
    whole = a.indices(0, 37)  # crosses three epoch boundaries
    assert torch.equal(whole, torch.cat([b.indices(0, 15), b.indices(15, 22)]))  # resuming mid-stream
    assert torch.equal(whole[:10].sort().values, torch.arange(10))
    # Four shards of 3 samples are the 12 samples of the global batch at position 6, in order.
    shards = [a.shard(6, 3, s).target for s in range(4)]
    assert torch.equal(torch.cat(shards), pairs.target[a.indices(6, 12)])
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(shard_generator(0, 5, 1)), draw(shard_generator(0, 5, 1)))
    assert not torch.equal(draw(shard_generator(0, 5, 1)), draw(shard_generator(0, 5, 2)))
    assert not torch.equal(draw(shard_generator(0, 5, 1)), draw(shard_generator(0, 6, 1)))


# ----- training ---------------------------------------------------------------------------------------------------
def test_scratch_training_learns_and_saves_an_operator(tmp_path):
    from pops.operators.operator import Operator
    from pops.train import train
    from pops.train.model import embedding_stats

    pairs = make_pairs(n=64)
    cfg = tiny_config(tmp_path, max_steps=60, batch_size=16, logging={"every": 20})
    model = train(cfg, pairs=pairs)
    mean, std = embedding_stats(pairs)
    assert torch.allclose(model.prior.clip_mean[0], mean) and torch.allclose(
        model.prior.clip_std[0], std
    )  # never trained
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 60 and summary["samples_seen"] == 60 * 16 and summary["num_processes"] == 1
    event_files = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert event_files, "no TensorBoard log"
    loaded = Operator.from_pretrained(tmp_path / "run")
    card = (tmp_path / "run" / "README.md").read_text()
    assert loaded.spec.kind == "texturing" and "pOps operator: texturing" in card
    assert "## Training" in card and "| steps / samples seen | 60 / 960 |" in card
    assert max_diff(weights(loaded.model), weights(model)) == 0
    # It learned: the training loss fell from its first logged value (logged per timestep bucket too).
    scalars = _tensorboard_scalars(event_files)
    assert scalars["train/loss"][-1] < 0.8 * scalars["train/loss"][0]
    assert any(k.startswith("loss_by_timestep/") for k in scalars) and "train/grad_norm" in scalars
    assert "train/samples_per_second" in scalars and scalars["train/lr"][-1] == pytest.approx(1e-3)


def _tensorboard_scalars(files) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for f in files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    """Two micro-batches of 4 accumulated make exactly the update of their 8 samples in one batch (same draws)."""
    from pops.core.objective import make_training_scheduler, training_loss
    from pops.train import train
    from pops.train.stream import PairStream, shard_generator

    pairs = make_pairs()
    start = PopsPrior(tiny_prior(dim=DIM))
    cfg = tiny_config(
        tmp_path, max_steps=1, batch_size=4, gradient_accumulation_steps=2, optim={"lr": 1e-2, "max_grad_norm": 0.05}
    )
    trained = weights(train(cfg, pairs=pairs, model=copy.deepcopy(start)))

    # The same step by hand: mean of the two shard losses over the 8 samples, one backward, clip, AdamW.
    model = copy.deepcopy(start)
    stream, spec, sched = PairStream(pairs, seed=cfg.seed), get_spec("texturing"), make_training_scheduler()
    losses = [
        training_loss(model, spec, stream.shard(0, 4, s), sched, generator=shard_generator(cfg.seed, 0, s))[0]
        for s in range(2)
    ]
    torch.stack(losses).mean().backward()
    params = model.trainable_parameters()
    norm = torch.nn.utils.clip_grad_norm_(params, 0.05)
    assert norm > 0.05  # clipping is active, so the test also checks it acts on the accumulated gradient
    torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0, fused=True).step()  # as the trainer
    assert max_diff(trained, weights(model)) < 1e-6
    assert max_diff(trained, weights(start)) > 1e-3  # and the step did something


def test_lora_trains_adapters_only_and_merges_on_save(tmp_path):
    from pops.operators.operator import Operator
    from pops.train import train

    start = PopsPrior(tiny_prior(dim=DIM))
    before = weights(start)
    cfg = tiny_config(tmp_path, max_steps=8, lora={"enabled": True, "rank": 4, "alpha": 4.0}, optim={"lr": 1e-2})
    model = train(cfg, pairs=make_pairs(), model=start)
    after = weights(model)
    assert after.keys() == before.keys()  # merged: a plain prior again, no lora_A/lora_B keys
    attention = [k for k in before if ".attn1.to_" in k and k.endswith("weight")]
    frozen = [k for k in before if k not in attention]
    assert attention and max_diff(before, after, frozen) == 0  # base weights untouched
    assert all((before[k] - after[k]).abs().max() > 1e-5 for k in attention)  # the merged low-rank update
    for k in attention:  # and that update has the adapter's rank
        assert torch.linalg.matrix_rank(after[k] - before[k], atol=1e-6) <= 4
    assert max_diff(weights(Operator.from_pretrained(tmp_path / "run").model), after) == 0


def test_training_only_the_first_blocks_leaves_the_rest_frozen(tmp_path):
    from pops.train import train

    start = PopsPrior(tiny_prior(dim=DIM))
    before = weights(start)
    after = weights(train(tiny_config(tmp_path, train_blocks=1), pairs=make_pairs(), model=start))
    first = [k for k in before if k.startswith("prior.transformer_blocks.0.")]
    rest = [k for k in before if k not in first]
    assert max_diff(before, after, rest) == 0
    assert all((before[k] - after[k]).abs().max() > 0 for k in first)


def test_ema_lags_behind_the_raw_weights(tmp_path):
    from pops.train import train

    start = PopsPrior(tiny_prior(dim=DIM))
    before = weights(start)
    cfg = tiny_config(
        tmp_path, max_steps=30, ema={"enabled": True, "decay": 0.9}, checkpoint={"every": 0, "at_end": True}
    )
    ema = weights(train(cfg, pairs=make_pairs(), model=start))
    raw = load_file(tmp_path / "run" / "checkpoints" / "checkpoint_30" / "model.safetensors")  # the raw weights
    keys = [k for k in before if "clip_" not in k]
    dist = lambda a, b: sum(((a[k] - b[k]) ** 2).sum() for k in keys).sqrt().item()  # noqa: E731
    assert dist(ema, raw) > 1e-3  # the saved operator holds the average, not the last weights
    assert dist(ema, before) < dist(raw, before)  # ... which trails them on the way from the start


def test_dropout_trains_in_the_blocks_and_never_samples(tmp_path):
    """model.dropout reaches the PriorTransformer's blocks (two training forwards differ) and is off in sampling, even
    for a prior loaded in train mode, whose mode is restored after the call; the saved operator keeps it."""
    from pops.core.prior import Condition
    from pops.operators.operator import Operator
    from pops.train import train

    cfg = tiny_config(tmp_path, max_steps=4, model={**tiny_config(tmp_path).model.__dict__, "dropout": 0.5})
    model = train(cfg, pairs=make_pairs())
    assert model.prior.config.dropout == 0.5
    loaded = Operator.from_pretrained(tmp_path / "run")
    assert loaded.model.prior.config.dropout == 0.5
    loaded.model.train()
    x, t = torch.randn(3, DIM), torch.full((3,), 500)
    cond = Condition(torch.randn(3, 2, DIM), torch.ones(3, 2, dtype=torch.bool))
    assert not torch.equal(loaded.model(x, t, cond), loaded.model(x, t, cond))  # dropout in training
    inputs = [torch.randn(3, DIM), torch.randn(3, DIM)]
    draw = lambda: loaded.sample(inputs, num_inference_steps=3, generator=torch.Generator().manual_seed(1))  # noqa: E731
    first = draw()
    assert torch.equal(first, draw()) and loaded.model.training  # no dropout when sampling; train mode restored
    loaded.model.eval()
    assert torch.equal(first, draw()) and not loaded.model.training
    with pytest.raises(ValueError, match="model.dropout"):
        tiny_config(tmp_path, model={**tiny_config(tmp_path).model.__dict__, "dropout": 1.0})


def test_ema_update_rule():
    from pops.train.ema import copy_ema_to, ema_model

    net = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = ema_model(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(4.0)
    ema.update_parameters(net)  # first update copies
    assert torch.equal(ema.module.weight, torch.full((1, 3), 4.0))
    with torch.no_grad():
        net.weight.fill_(10.0)
    ema.update_parameters(net)  # decay min(0.5, 2/11) = 2/11
    expected = torch.full((1, 3), 4.0 * 2 / 11 + 10.0 * 9 / 11)
    assert torch.allclose(ema.module.weight, expected)
    restored = ema_model(net, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert int(restored.n_averaged) == 2 and torch.equal(restored.module.weight, ema.module.weight)
    late = ema_model(net, decay=0.5, update_after_step=1)
    for value in (4.0, 10.0):  # the first two updates copy
        with torch.no_grad():
            net.weight.fill_(value)
        late.update_parameters(net)
    assert torch.equal(late.module.weight, torch.full((1, 3), 10.0))
    copy_ema_to(ema, net)
    assert torch.allclose(net.weight, expected)


def test_gradient_checkpointing_and_padded_layout_give_the_same_training(tmp_path):
    from pops.train import train

    pairs, start = make_pairs(), PopsPrior(tiny_prior(dim=DIM))
    runs = {}
    for name, opts in {
        "plain": {},
        "checkpointed": {"gradient_checkpointing": True},
        "padded": {"layout": "padded"},
    }.items():
        cfg = tiny_config(tmp_path / name, logging={"every": 1}, **opts)
        model = train(cfg, pairs=pairs, model=copy.deepcopy(start))
        runs[name] = (
            weights(model),
            _tensorboard_scalars((tmp_path / name / "run" / "logs").rglob("events.out.tfevents.*"))["train/loss"],
        )
    assert max_diff(runs["plain"][0], runs["checkpointed"][0]) < 1e-6  # recomputation changes no number
    # The padded layout is the same function on 81 tokens: the same losses step by step (Adam turns float-rounding
    # differences of near-zero gradients into lr-sized ones, so weights are compared only loosely).
    assert runs["plain"][1] == pytest.approx(runs["padded"][1], rel=1e-4)
    assert max_diff(runs["plain"][0], runs["padded"][0]) < 1e-2


@pytest.mark.parametrize("kind", ["instruct", "composition", "union"])
def test_every_operator_kind_trains(tmp_path, kind):
    from pops.train import train

    pairs = make_pairs(kind)
    cfg = tiny_config(tmp_path, operator=kind, max_steps=4, mixed_precision="bf16")
    model = train(cfg, pairs=pairs)
    if kind == "instruct":
        assert model.text_proj is not None and model.text_proj.in_features == 16  # a projection for 16-wide text rows
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["mixed_precision"] == "bf16"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    # The returned model is the plain module: no mixed-precision autocast left on forward, fp32 weights.
    assert not hasattr(model.forward, "__wrapped__")
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_init_from_an_operator_folder_and_a_local_kandinsky_folder(tmp_path):
    from pops.operators.operator import Operator
    from pops.train.model import build_model

    pairs = make_pairs("instruct")
    source = Operator(PopsPrior(tiny_prior(dim=DIM, seed=5)), "texturing")
    source.save_pretrained(tmp_path / "op")
    cfg = tiny_config(tmp_path, operator="instruct", init=f"operator:{tmp_path / 'op'}")
    model = build_model(cfg, pairs)
    assert max_diff(weights(model.prior), weights(source.model.prior)) == 0
    assert model.text_proj.in_features == 16  # a fresh projection: texturing has no text slot

    kandinsky = tiny_prior(dim=DIM, seed=7)
    kandinsky.save_pretrained(tmp_path / "k2" / "prior")  # the hub layout: <repo>/prior/config.json
    cfg = tiny_config(tmp_path, init="kandinsky", kandinsky_prior=str(tmp_path / "k2"))
    model = build_model(cfg, make_pairs())
    assert max_diff(weights(model.prior), weights(kandinsky)) == 0
    with pytest.raises(ValueError, match="64-d"):
        build_model(cfg, make_pairs(dim=64))


# ----- checkpoints and resume -------------------------------------------------------------------------------------
def test_resume_in_process_is_exact_with_every_state(tmp_path):
    """Warm-up + linear decay, EMA and accumulation: everything a checkpoint must carry to resume exactly."""
    from pops.train import train

    pairs, start = make_pairs(), PopsPrior(tiny_prior(dim=DIM))
    opts = dict(
        max_steps=8,
        gradient_accumulation_steps=2,
        ema={"enabled": True, "decay": 0.8},
        optim={"lr": 1e-2, "schedule": "linear", "warmup_steps": 3},
        checkpoint={"every": 5, "at_end": False},
    )
    whole = weights(train(tiny_config(tmp_path / "a", **opts), pairs=pairs, model=copy.deepcopy(start)))
    rest = tiny_config(tmp_path / "b", **opts, resume=str(tmp_path / "a" / "run" / "checkpoints" / "checkpoint_5"))
    other_start = PopsPrior(tiny_prior(dim=DIM, seed=9))  # overwritten by the checkpoint
    resumed = weights(train(rest, pairs=pairs, model=other_start))
    assert max_diff(whole, resumed) == 0
    assert json.loads((tmp_path / "b" / "run" / "train_summary.json").read_text())["steps_this_run"] == 3


def test_half_written_checkpoints_are_never_resumed_from(tmp_path):
    from pops.train import train
    from pops.train.checkpointing import complete_checkpoints, resolve_resume

    pairs, start = make_pairs(), PopsPrior(tiny_prior(dim=DIM))
    cfg = tiny_config(tmp_path, max_steps=4, checkpoint={"every": 2, "total_limit": 5, "at_end": False})
    train(cfg, pairs=pairs, model=copy.deepcopy(start))
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["checkpoint_2", "checkpoint_4"]
    # A save killed before its rename, and a folder whose files never all landed (no marker).
    (root / ".tmp-checkpoint_6").mkdir()
    (root / ".tmp-checkpoint_6" / "model.safetensors").write_bytes(b"trunc")
    (root / "checkpoint_8").mkdir()
    (root / "checkpoint_8" / "model.safetensors").write_bytes(b"trunc")
    assert resolve_resume("auto", tmp_path / "run") == root / "checkpoint_4"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(str(root / "checkpoint_8"), tmp_path / "run")
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(root / "checkpoint_99"), tmp_path / "run")
    resumed = tiny_config(tmp_path, max_steps=8, resume="auto", checkpoint={"every": 2, "total_limit": 5})
    train(resumed, pairs=pairs, model=copy.deepcopy(start))
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps_this_run"] == 4  # from step 4
    assert not (root / ".tmp-checkpoint_6").exists()
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == [f"checkpoint_{s}" for s in (2, 4, 6, 8)]


def test_checkpoint_rotation_keeps_the_newest(tmp_path):
    from pops.train import train
    from pops.train.checkpointing import complete_checkpoints, read_marker

    cfg = tiny_config(tmp_path, max_steps=7, checkpoint={"every": 2, "total_limit": 2, "at_end": True})
    train(cfg, pairs=make_pairs(), model=PopsPrior(tiny_prior(dim=DIM)))
    kept = complete_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["checkpoint_6", "checkpoint_7"]
    assert read_marker(kept[-1])["samples_seen"] == 7 * 4
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p not in kept]


def test_validation_samples_and_renders(tmp_path):
    from PIL import Image

    from pops.renderers.retrieval import RetrievalRenderer
    from pops.train import train

    pairs = make_pairs()
    colours = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(12)]
    renderer = RetrievalRenderer(pairs.target[:12], colours)
    cfg = tiny_config(
        tmp_path, max_steps=4, logging={"every": 2}, validation={"every": 2, "num_samples": 5, "num_inference_steps": 3}
    )
    train(cfg, pairs=pairs, model=PopsPrior(tiny_prior(dim=DIM)), renderer=renderer)
    strips = sorted((tmp_path / "run" / "validation").glob("step_*.png"))
    assert [p.name for p in strips] == ["step_0000002.png", "step_0000004.png"]
    assert Image.open(strips[0]).size == (8 * 5, 8)
    scalars = _tensorboard_scalars((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert len(scalars["val/cosine_to_target"]) == 2
    # A saved renderer folder loads by its registered type ...
    renderer.save_pretrained(tmp_path / "retrieval")
    cfg = tiny_config(
        tmp_path / "b",
        max_steps=2,
        validation={"every": 2, "num_samples": 3, "num_inference_steps": 2, "renderer": str(tmp_path / "retrieval")},
    )
    train(cfg, pairs=pairs, model=PopsPrior(tiny_prior(dim=DIM)))
    assert (tmp_path / "b" / "run" / "validation" / "step_0000002.png").is_file()
    # ... and a config can never name code to run (this used to import os and call system).
    cfg = tiny_config(tmp_path / "c", max_steps=2, validation={"every": 1, "renderer": "os:system"})
    with pytest.raises(ValueError, match="holds no saved renderer"):
        train(cfg, pairs=pairs, model=PopsPrior(tiny_prior(dim=DIM)))
