"""One model for all operators (pops.operators.joint): the operator row in the condition, the null condition and the
prefix path, joint training on a tiny world, the one folder as each of its operators (Operator.from_pretrained,
ModelSet, equations, `pops apply`, `pops eval`)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from pops.base.registry import REGISTRY, get_spec
from pops.core.prior import Condition, PopsPrior
from tests.helpers.bad_input.harness import api_outcome, cli_outcome, judge, no_server, snapshot, ui_outcome
from tests.helpers.cli import run_cli
from tests.helpers.demo_world import ColourEncoder, WordRows, tiny_world
from tests.helpers.pairs import slot_inputs
from tests.helpers.priors import tiny_prior

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = tuple(REGISTRY)
DIM = 48  # ColourEncoder's width


def joint_prior(kinds=KINDS, dim: int = 32, text_width: int | None = 8, **sizes) -> PopsPrior:
    torch.manual_seed(1)
    return PopsPrior(tiny_prior(dim=dim, **sizes), text_width=text_width, operators=kinds)


# ----- the condition --------------------------------------------------------------------------------------------
def test_the_operator_row_leads_the_condition_and_the_null_condition_keeps_it():
    model = joint_prior()
    conditions = {kind: model.condition(get_spec(kind), slot_inputs(kind, 3)) for kind in KINDS}
    for i, (kind, cond) in enumerate(conditions.items()):
        plain = PopsPrior(model.prior, text_width=8)  # the same prior without operator rows
        plain.text_proj = model.text_proj
        slots_only = plain.condition(get_spec(kind), slot_inputs(kind, 3))
        assert cond.fixed == 1 and cond.rows.shape[1] == slots_only.rows.shape[1] + 1
        assert torch.equal(cond.rows[:, 0], model.operator_rows[i].detach().expand(3, -1))
        assert torch.equal(cond.rows[:, 1:], slots_only.rows) and cond.mask.all()
        null = cond.null()
        assert torch.equal(null.rows[:, 0], cond.rows[:, 0])  # the operator row survives ...
        assert not null.rows[:, 1:].any() and torch.equal(null.mask, cond.mask)  # ... only the slot rows are zero
        assert null.fixed == 1
    # Per-sample drops zero slot rows, never the operator row.
    spec = get_spec("texturing")
    dropped = model.condition(spec, slot_inputs("texturing", 2), drop=torch.ones(2, 2, dtype=torch.bool))
    assert torch.equal(dropped.rows, conditions["texturing"].null().rows[:2])
    assert not torch.equal(conditions["texturing"].rows[:, 0], conditions["union"].rows[:, 0])
    batched = Condition.cat([conditions["union"].null(), conditions["union"]])
    assert batched.fixed == 1 and batched.rows.shape[0] == 6
    with pytest.raises(ValueError, match="fixed rows"):
        Condition.cat([conditions["union"], Condition(conditions["union"].rows, conditions["union"].mask)])
    # An ordinary prior's null condition is all zeros, as before.
    assert not PopsPrior(tiny_prior()).condition(spec, slot_inputs("texturing", 2)).null().rows.any()
    with pytest.raises(ValueError, match="not 'scene'"):
        joint_prior(kinds=("texturing", "union")).condition(get_spec("scene"), slot_inputs("scene", 1))


@pytest.mark.parametrize("kind", ["texturing", "instruct", "composition"])
def test_the_prefix_path_equals_the_full_forward_for_a_joint_prior(kind):
    from pops.operators.operator import Operator

    model = joint_prior(layers=3, heads=4, head_dim=8).eval()
    with torch.no_grad():
        model.operator_rows.normal_(0, 1)
    cond = model.condition(get_spec(kind), slot_inputs(kind, 2))
    guided = Condition.cat([cond.null(), cond])  # what the sampler runs under guidance
    assert model.supports_prefix()
    with torch.no_grad():
        prefix = model.prefix(guided)
        for t in (999, 400, 2):
            x_t = torch.randn(4, 32, generator=torch.Generator().manual_seed(t))
            full = model(x_t, torch.tensor(t), guided, layout="compact")
            padded = model(x_t, torch.tensor(t), guided, layout="padded")
            reused = model(x_t, torch.tensor(t), guided, prefix=prefix)
            assert (reused - full).abs().max() < 1e-5 and (reused - padded).abs().max() < 1e-5
    # The whole guided sampling loop: compact (with the prefix) and the reference's padded layout agree.
    op = Operator(model, kind)
    sample = lambda layout: op.sample(  # noqa: E731
        slot_inputs(kind, 2), guidance_scale=3.0, num_inference_steps=4, layout=layout, generator=torch.Generator()
    )
    assert (sample("compact") - sample("padded")).abs().max() < 1e-4


# ----- training on a tiny world -----------------------------------------------------------------------------------
def joint_settings(out, **overrides) -> dict:
    base = dict(
        operators=list(KINDS),
        output_dir=str(out),
        init="scratch",
        model=dict(embedding_dim=DIM, num_layers=2, num_attention_heads=2, attention_head_dim=16, clip_std="shared"),
        max_steps=10 * len(KINDS),
        batch_size=16,
        optim=dict(lr=2e-3),
        progress=False,
        logging=dict(every=0),
        checkpoint=dict(every=0, at_end=False),
    )
    base.update(overrides)
    return base


@pytest.fixture(scope="module")
def world_pairs(tmp_path_factory):
    from pops.demo import make_pairs
    from pops.embeddings.cache import EmbeddingCache

    world = tiny_world()
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"), ColourEncoder())
    return {kind: make_pairs(world, kind, "train", 24, 0, cache, WordRows(), progress=False) for kind in KINDS}


@pytest.fixture(scope="module")
def joint_folder(world_pairs, tmp_path_factory):
    """A joint model trained on every operator's pairs of a tiny world, saved as one folder; with the trainer."""
    from pops.train import Trainer, config_from_dict

    out = tmp_path_factory.mktemp("joint") / "operators" / "joint"
    trainer = Trainer(config_from_dict(joint_settings(out, recombine=2, vocabulary=True)), pairs=world_pairs)
    trainer.run()
    return out, trainer


def test_joint_training_learns_every_operator_with_one_prior(world_pairs, joint_folder):
    from pops.core.objective import make_training_scheduler, training_loss
    from pops.train import Trainer, config_from_dict
    from pops.train.model import embedding_stats

    out, trainer = joint_folder
    model, joint = trainer.model, trainer.operator
    assert joint.kinds == KINDS and all(joint[k].model is model for k in KINDS)  # one prior for all
    assert trainer.summary["operators"] == list(KINDS) and trainer.summary["steps"] == 10 * len(KINDS)
    # One normalisation over every operator's embeddings (one shared std).
    mean, std = embedding_stats(list(world_pairs.values()))
    assert torch.allclose(model.prior.clip_mean[0], mean)
    assert torch.allclose(model.prior.clip_std[0], torch.full_like(std, float(std.pow(2).mean().sqrt())))
    # Each operator's training loss on a fixed batch fell, from the same initial weights, and the rows moved.
    untrained = Trainer(config_from_dict(joint_settings(out.parent / "unused")), pairs=world_pairs).model
    assert not torch.equal(untrained.operator_rows, model.operator_rows)

    def loss(m, kind):
        batch = world_pairs[kind].batch(torch.arange(16))
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            return training_loss(m, get_spec(kind), batch, make_training_scheduler(), generator=g)[0].item()

    for kind in KINDS:
        assert loss(model, kind) < 0.9 * loss(untrained, kind), kind
    # Every operator samples (its absent slots the null condition).
    for kind, pairs in world_pairs.items():
        out_embeds = joint[kind].sample_batch(pairs, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
        assert out_embeds.shape == (len(pairs), DIM) and torch.isfinite(out_embeds).all()


def test_round_robin_steps_and_exact_resume(world_pairs, tmp_path):
    """Step s trains operator s mod n, each from its own stream position; a resumed joint run equals the whole."""
    from pops.train import Trainer, config_from_dict, train

    settings = joint_settings(tmp_path / "a", checkpoint={"every": 7, "total_limit": 10, "at_end": True})
    whole = Trainer(config_from_dict(settings), pairs=world_pairs)
    start = copy.deepcopy(whole.model)
    weights = {k: v.clone() for k, v in whole.run().state_dict().items()}
    state = json.loads((tmp_path / "a" / "checkpoints" / "checkpoint_50" / "train_state.json").read_text())
    assert state["train_state"]["operator_samples"] == {k: 10 * 16 for k in KINDS}  # 10 steps of 16 each
    resumed_config = joint_settings(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoints" / "checkpoint_7"))
    resumed = train(config_from_dict(resumed_config), pairs=world_pairs, model=copy.deepcopy(start))
    assert all(torch.equal(weights[k], v) for k, v in resumed.state_dict().items())


# ----- one folder, every operator ---------------------------------------------------------------------------------
def test_the_joint_folder_loads_as_each_of_its_operators(joint_folder, world_pairs, tmp_path):
    from pops.operators.joint import JointOperator
    from pops.operators.operator import Operator

    out, trainer = joint_folder
    config = json.loads((out / "pops_config.json").read_text())
    assert list(config["operators"]) == list(KINDS) and config["operator_table"] == list(KINDS)
    assert "kind" not in config
    card = (out / "README.md").read_text()
    assert "pOps joint operator: texturing, union, scene, instruct, composition" in card and "## Training" in card
    assert "never saw is read as the nearest of its" in card  # instruct's vocabulary
    joint = JointOperator.from_pretrained(out)
    # Instruct keeps the distinct words of its training pairs (the others have no text slot); they travel.
    said = {tuple(r[m].flatten().tolist()) for r, m in zip(*world_pairs["instruct"].slots[1])}
    assert config["operators"]["instruct"]["vocabulary"] == len(said) == len(joint["instruct"].vocabulary) > 1
    assert all(joint[k].vocabulary is None for k in KINDS if k != "instruct")
    assert torch.equal(joint["instruct"].vocabulary.rows, trainer.operator["instruct"].vocabulary.rows)
    for kind in KINDS:
        op = Operator.from_pretrained(out, kind=kind)
        assert op.spec.kind == kind and op.model.operators == KINDS
        sample = lambda o, k=kind: o.sample_batch(  # noqa: E731
            world_pairs[k], num_inference_steps=3, generator=torch.Generator().manual_seed(1)
        )
        expected = sample(trainer.operator[kind])
        assert torch.equal(sample(op), expected) and torch.equal(sample(joint[kind]), expected)
    with pytest.raises(ValueError, match="choose one"):
        Operator.from_pretrained(out)
    with pytest.raises(ValueError, match="not 'nope'"):
        Operator.from_pretrained(out, kind="nope")
    # Per-operator settings travel: guidance, sampler and steps of one operator, the others' untouched.
    joint["scene"].guidance_scale, joint["union"].sampler, joint["union"].num_inference_steps = 3.0, "ddim", 4
    joint.save_pretrained(tmp_path / "again")
    again = JointOperator.from_pretrained(tmp_path / "again")
    assert again["scene"].guidance_scale == 3.0 and again["texturing"].guidance_scale == 8.0
    assert (again["union"].sampler, again["union"].num_inference_steps) == ("ddim", 4)
    assert again["union"].model is again["scene"].model  # the weights once for all
    single = Operator.from_pretrained(joint["scene"].save_pretrained(tmp_path / "scene"))  # one operator, joint weights
    assert single.spec.kind == "scene" and single.model.operators == KINDS
    with pytest.raises(ValueError, match="is a scene operator, not union"):
        Operator.from_pretrained(tmp_path / "scene", kind="union")


def test_serve_checks_a_models_folder_with_a_joint_folder(joint_folder, tmp_path):
    from pops.models.layout import check_models_folder

    models = _models_folder(joint_folder, tmp_path)
    assert sorted(check_models_folder(models)) == sorted(KINDS)  # the separate scene and the joint model's, once each
    assert check_models_folder(models / "operators" / "joint") == list(KINDS)  # the joint folder as a models folder
    with pytest.raises(ValueError, match="is an operator folder"):
        check_models_folder(models / "operators" / "scene")


def _models_folder(joint_folder, tmp_path):
    """A models folder with the joint model under operators/joint/ and a separate scene operator beside it."""
    import shutil

    from pops.operators.operator import Operator

    out, _ = joint_folder
    models = tmp_path / "models"
    shutil.copytree(out, models / "operators" / "joint")
    separate = Operator.from_prior(tiny_prior(dim=DIM, seed=5), "scene")
    separate.save_pretrained(models / "operators" / "scene")
    return models


def test_models_folder_offers_the_joint_operators_and_a_separate_one_wins(joint_folder, tmp_path):
    from pops.embeddings.io import save_embeddings
    from pops.equation import apply
    from pops.models.layout import find_operator_dir, folder_roots
    from pops.models.model_set import ModelSet

    models = _models_folder(joint_folder, tmp_path)
    joint_dir = models / "operators" / "joint"
    (models / "renderers").mkdir()
    model_set = ModelSet(models)
    assert model_set.available() == list(KINDS)
    assert find_operator_dir(models, "scene") == models / "operators" / "scene"  # its own folder wins
    assert find_operator_dir(models, "texturing") == joint_dir  # the joint model fills in the rest
    assert model_set.operator("scene").model.operators == ()
    texturing, union = model_set.operator("texturing"), model_set.operator("union")
    assert texturing.model is union.model  # one copy of the joint weights
    # The joint folder itself: its operators only (scene included), the models folder above for the rest.
    only_joint = ModelSet(joint_dir)
    assert only_joint.available() == list(KINDS) and folder_roots(joint_dir) == [joint_dir, models]
    assert only_joint.operator("scene").model.operators == KINDS
    # An equation over two of its operators equals chaining them by hand (same seed for every step).
    g = torch.Generator().manual_seed(0)
    e = {name: torch.rand(1, DIM, generator=g) for name in "abc"}
    for name, value in e.items():
        save_embeddings(tmp_path / f"{name}.safetensors", value)
    equation = "let t = texturing(a.safetensors, b.safetensors)\nscene(t, c.safetensors)"
    result = apply(equation, models=joint_dir, base_dir=tmp_path, seed=3, num_inference_steps=3)
    scene, tex = only_joint.operator("scene"), only_joint.operator("texturing")
    t = tex.sample([e["a"], e["b"]], num_inference_steps=3, generator=torch.Generator().manual_seed(3))
    out = scene.sample([t, e["c"]], num_inference_steps=3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(result.intermediates["t"], t, atol=1e-5) and torch.allclose(result.output, out, atol=1e-5)
    assert result.record["guidance"] == {"t": tex.guidance_scale, "output": scene.guidance_scale}


def test_apply_and_eval_cli_run_the_joint_operators(joint_folder, world_pairs, tmp_path):
    from pops.embeddings.io import load_embeddings, save_embeddings
    from pops.evaluation import OperatorData, save_data

    models = _models_folder(joint_folder, tmp_path)
    joint_dir = models / "operators" / "joint"
    for name in ("a", "b"):
        save_embeddings(tmp_path / f"{name}.safetensors", torch.rand(1, DIM))
    files = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    out = tmp_path / "out.safetensors"
    result = run_cli("apply", "-m", joint_dir, "--kind", "union", *files, "-o", out)
    assert result.exit_code == 0, result.output
    assert load_embeddings(out)[1]["operator"] == "union"
    result = run_cli("apply", "-m", joint_dir, *files, "-o", tmp_path / "other.safetensors")
    assert result.exit_code != 0 and "error:" in result.output and "choose one" in result.output
    # `pops eval` on the joint folder: its operators, the data/ of the models folder it sits in.
    data = {}
    for kind in ("texturing", "union"):
        pairs = world_pairs[kind]
        classes = pairs.info["classes"]
        gallery_classes = [classes[i] for i in pairs.class_ids.tolist()]
        data[kind] = OperatorData(kind, classes, pairs, {"test": pairs}, gallery_classes, pairs.target)
    save_data(data, models / "data")
    table_file = tmp_path / "table.json"
    args = ["eval", "-m", str(joint_dir), "--operator", "texturing", "--operator", "union", "--seeds", "1"]
    result = run_cli(*args, "--steps", "2", "-o", table_file)
    assert result.exit_code == 0, result.output
    rows = {(r["operator"], r["method"]) for r in json.loads(table_file.read_text())["rows"]}
    assert {("texturing", "pops"), ("union", "pops"), ("union", "averaging")} <= rows


def test_joint_config_errors():
    from pops.train import config_from_dict

    ok = joint_settings("out")
    config_from_dict(ok)
    for overrides, message in (
        ({"operators": ["texturing", "texturing"]}, "each operator once"),
        ({"operators": ["texturing", "nope"]}, "unknown 'nope'"),
        ({"data": "pairs.safetensors"}, "a joint run takes a mapping"),
        ({"data": {"texturing": "t.safetensors"}}, "one pairs file per operator"),
        ({"validation": {"data": "v.safetensors", "every": 5}}, "validates each operator"),
    ):
        with pytest.raises(ValueError, match=message):
            config_from_dict({**ok, **overrides})
    with pytest.raises(ValueError, match="one pairs file per operator"):
        config_from_dict({**ok, "operators": [], "data": {"texturing": "t.safetensors"}})


# ----- a damaged joint folder: refused in one line, as a damaged separate operator --------------------------------
def _damage(folder, how: str) -> str:
    """Damage a copy of a joint folder; returns what the refusal must say."""
    config_path, weights = folder / "pops_config.json", folder / "model.safetensors"
    config = json.loads(config_path.read_text())
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "not a readable safetensors"
    if how == "truncated config":
        config_path.write_text(config_path.read_text()[:40])
        return "invalid JSON"
    if how == "operator table":
        config["operator_table"] = config["operator_table"][::-1]
        expect = "'operators' must name the operators of 'operator_table'"
    elif how == "settings":
        config["operators"]["union"] = "fast"
        expect = "each entry of 'operators' must be an object"
    elif how == "guidance":
        config["operators"]["union"]["guidance_scale"] = -3
        expect = "guidance_scale must be"
    config_path.write_text(json.dumps(config))
    return expect


DAMAGE = ("truncated weights", "truncated config", "operator table", "settings", "guidance")


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_joint_folder_is_refused_in_one_line_everywhere(joint_folder, tmp_path, how, monkeypatch):
    import shutil

    from pops.embeddings.io import save_embeddings
    from pops.equation import apply
    from pops.ui.app import _settings
    from pops.ui.backend import Backend

    root = tmp_path / "world"
    models = root / "models"
    shutil.copytree(joint_folder[0], models / "operators" / "joint")
    joint_dir = models / "operators" / "joint"
    expect = _damage(joint_dir, how)
    monkeypatch.chdir(root)  # the CLI's equation reads its files from here
    for name in ("a", "b"):
        save_embeddings(root / f"{name}.safetensors", torch.rand(1, DIM))
    files = [str(root / "a.safetensors"), str(root / "b.safetensors")]
    out = str(root / "out.safetensors")
    monkeypatch.setattr("pops.ui.serve", no_server)
    cases = [
        (cli_outcome("apply", "-m", joint_dir, "--kind", "union", *files, "-o", out, "--steps", "2"), False),
        (cli_outcome("apply", "union(a.safetensors, b.safetensors)", "--models", models, "-o", out), False),
        (cli_outcome("eval", "--models", models, "--operator", "union"), False),
        (cli_outcome("eval", "--models", joint_dir), False),
        (cli_outcome("serve", "--models", models, "-o", tmp_path / "serve"), False),
        (cli_outcome("serve", "--models", joint_dir, "-o", tmp_path / "serve"), False),
        (api_outcome(lambda: apply("union(a.safetensors, b.safetensors)", models=models, base_dir=root)), True),
    ]
    before = snapshot(root)
    for outcome, api in cases:
        verdict = judge(outcome, expect, before, snapshot(root), api=api)
        assert verdict.clean, verdict.why
    backend = Backend([str(models)], tmp_path / "ui")  # the UI's models folder (its runs are written outside root)
    settings = _settings(models_dir=str(models), renderer="none", seed=0, guidance=0, steps=2, samples=1)
    outcome = ui_outcome(lambda: backend.run_equation("union(a.safetensors, b.safetensors)", files, settings))
    assert outcome.refused and expect.lower() in outcome.text.lower() and len(outcome.text.splitlines()) == 1
