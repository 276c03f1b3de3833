"""The embedded demo end to end (`pops demo --quick`), its evaluation CLI, and the pieces it is built from."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pops.base.registry import get_spec
from pops.operators.operator import Operator
from tests.helpers.cli import run_cli
from tests.helpers.demo_world import ColourEncoder, WordRows
from tests.helpers.demo_world import tiny_world as build_tiny_world


# ----------------------------------------------------------------------------------------------------------------
# The quick demo, once per test session (about a minute on 2 cores), with the joint model beside the separate
# operators; several tests read its output.
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from pops.demo import quick_config, run_demo

    out = tmp_path_factory.mktemp("demo")
    config = quick_config(out=out, progress=False)  # the joint model too, as by default
    return config, run_demo(config)


def at_most_one_sample_behind(row, baseline) -> bool:
    """The quick world's test sets are 28-48 samples (one sample is 2-4 points of top-1): where the baseline is
    already strong (union, scene: averaging ~0.7 in this encoder's space) a tie within one sample is noise."""
    return row.top1 >= baseline.top1 - 1.0 / row.n - 1e-9


@pytest.mark.slow
def test_quick_demo_beats_averaging_on_held_out_combinations(quick_demo):
    """Each operator, sampled as chosen on validation classes, beats the paper's averaging baseline on combinations
    it never saw over the operators, and on each one is never behind it by more than one sample; instruct — trained
    with the text-alignment term through the aligned text space — beats it outright. The registry's scale is
    reported next to the chosen one."""
    config, result = quick_demo
    table = result.table
    for kind in config.operators:
        pops, averaging, oracle = (table.get(kind, m) for m in ("pops", "averaging", "oracle"))
        assert pops.runs == config.eval_seeds and pops.n > 0
        assert at_most_one_sample_behind(pops, averaging), f"{kind}: pops {pops.top1:.2f} vs {averaging.top1:.2f}"
        assert oracle.cosine == pytest.approx(1.0)
        registry = get_spec(kind).guidance_scale
        assert result.guidance[kind] in (*config.guidance_candidates, registry)  # the registry's: the default
        method = "pops" if registry == result.guidance[kind] else f"pops g={registry:g}"
        assert table.get(kind, method).n == pops.n
    kinds = config.operators
    mean = {m: sum(table.get(k, m).top1 for k in kinds) / len(kinds) for m in ("pops", "averaging")}
    assert mean["pops"] > mean["averaging"] + 0.1, mean
    assert table.get("instruct", "pops").top1 > table.get("instruct", "averaging").top1
    assert table.get("instruct (synonyms)", "pops").n > 0
    assert sorted(result.trained) == sorted([*config.operators, "joint"])
    assert result.encoded > 0
    assert result.workers == 2  # operators trained and evaluated two at a time


@pytest.mark.slow
def test_quick_demo_joint_model_beats_averaging_and_runs_as_each_operator(quick_demo, tmp_path):
    """One prior for all five operators, trained on all their pairs (joint_budget of their steps): it beats averaging
    on held-out combinations over the operators (in the quick world it is short of steps: not on each one); per
    operator the demo ships it only where it beats the separate one on validation beyond the noise, and what it ships
    is never behind averaging by more than one sample; its one folder serves `pops apply` and equations."""
    from pops.models.model_set import ModelSet

    config, result = quick_demo
    table = result.table
    rows = (*config.operators, "instruct (synonyms)")
    for row in rows:
        joint = table.get(row, "pops joint")
        assert joint.runs == config.eval_seeds and joint.n == table.get(row, "pops").n
        chosen, averaging = table.get(row, "pops chosen"), table.get(row, "averaging")
        assert at_most_one_sample_behind(chosen, averaging), f"{row}: {chosen.top1:.2f} vs {averaging.top1:.2f}"
    mean = {m: sum(table.get(row, m).top1 for row in rows) / len(rows) for m in ("pops joint", "averaging")}
    assert mean["pops joint"] > mean["averaging"], mean
    assert set(result.joint_guidance) == set(config.operators)
    folder = config.out / "operators" / "joint"
    record = json.loads((folder / "demo_training.json").read_text())
    assert record["settings"]["max_steps"] == round(config.joint_budget * config.steps * len(config.operators))
    assert set(record["choice"]) == set(config.operators)  # sampling chosen per operator on its validation classes
    # Per operator, the joint model only where its paired validation advantage over the separate one exceeds z
    # standard errors ("pops chosen"); the chosen rows are that model's rows, every test split.
    summary = json.loads((config.out / "demo.json").read_text())
    for kind in config.operators:
        joint = summary["model_choice"][kind]["joint"]
        expected = "joint" if joint["diff"] > config.choice_z * joint["diff_se"] else "separate"
        assert result.chosen[kind] == summary["model_choice"][kind]["model"] == expected
        method = "pops joint" if expected == "joint" else "pops"
        for row in (kind, *(["instruct (synonyms)"] if kind == "instruct" else [])):
            assert table.get(row, "pops chosen").top1 == table.get(row, method).top1
    assert summary["chosen"] == result.chosen and summary["joint_steps"] == record["settings"]["max_steps"]
    page = result.report.read_text()
    assert f"in turn for {record['settings']['max_steps']} steps" in page
    assert "One model for all operators" in page and "pOps joint · retrieval" in page and "chosen model" in page
    # The models folder keeps the separate operators by name; the joint folder offers its own five.
    assert ModelSet(config.out).where("scene").endswith("scene")
    joint = ModelSet(folder)
    assert joint.available() == list(config.operators)
    assert joint.operator("scene").guidance_scale == result.joint_guidance["scene"]
    pictures = sorted((config.out / "assets").glob("*.png"))
    obj = next(p for p in pictures if p.stem in config.world["shapes"])
    tex = next(p for p in pictures if p.stem in config.world["textures"])
    place = next(p for p in pictures if p.stem in config.world["scenes"])
    out = tmp_path / "joint.safetensors"
    cli = run_cli("apply", "-m", str(folder), "--kind", "texturing", str(obj), str(tex), "-o", str(out))
    assert cli.exit_code == 0, cli.output
    equation = f"scene(texturing({obj}, {tex}), {place})"
    cli = run_cli("apply", equation, "--models", str(folder), "--out", str(tmp_path / "eq"))
    assert cli.exit_code == 0, cli.output
    assert (tmp_path / "eq" / "output.safetensors").is_file()


@pytest.mark.slow
def test_quick_demo_writes_a_self_contained_report_and_loadable_operators(quick_demo):
    from pops.embeddings.pairs import Pairs
    from pops.operators.operator import Operator

    config, result = quick_demo
    page = result.report.read_text()
    assert '<table class="metrics">' in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # nothing outside the file
    assert "scene(texturing(" in page  # the chained equation
    summary = json.loads((config.out / "demo.json").read_text())
    for kind in config.operators:
        assert f"<h3>{kind}</h3>" in page
        op = Operator.from_pretrained(config.out / "operators" / kind)
        assert op.encoder_configs["image"]["type"] == "efficientnet"
        assert op.model.has_clip_stats()
        assert op.guidance_scale == result.guidance[kind]  # the chosen scale travels with the operator
        # Instruct keeps the words it was trained on (a new word is read as the nearest); no other has a text slot.
        assert (op.vocabulary is not None) == (kind == "instruct")
        # Written once, by the demo, after choosing guidance: the card has both the scale and the Training section
        # (the trainer was told not to write the folder, so it left no summary of its own there).
        card = (config.out / "operators" / kind / "README.md").read_text()
        assert f"| default guidance scale | {result.guidance[kind]:g} |" in card
        assert "## Training" in card and f"| recombined pairs | x{config.recombine} |" in card
        assert not (config.out / "operators" / kind / "train_summary.json").exists()
        record = json.loads((config.out / "operators" / kind / "demo_training.json").read_text())
        # every candidate tried on validation, by its one label ("ddim 4 x4 g3"): the fast samplers at each scale
        # (the registry's among them) and the default, the paper's own call
        scales = {*config.guidance_candidates, get_spec(kind).guidance_scale}
        default = f"unclip 25 g{get_spec(kind).guidance_scale:g}"
        candidates = {replace(c, guidance_scale=g).label for c in config.sampling_candidates() for g in scales}
        choice = record["choice"]
        assert set(choice["candidates"]) == candidates | {default} and choice["default"] == default
        assert all(c["se"] >= 0 and c["diff_se"] >= 0 for c in choice["candidates"].values())
        # the chosen one travels too, its draws included
        assert summary["sampling"][kind] == op.sampling.label == choice["chosen"]
    instruct = Operator.from_pretrained(config.out / "operators" / "instruct")
    assert instruct.encoder_configs["text"]["type"] == "text-tower"  # the aligned text space
    metrics = json.loads((config.out / "metrics.json").read_text())
    assert {r["operator"] for r in metrics["rows"]} >= set(config.operators)
    # The training pairs it saved load back, training-only combinations (class id -1: no class) included.
    composition = Pairs.load(config.out / "data" / "composition-train.safetensors")
    assert (composition.class_ids == -1).any() and (composition.class_ids >= 0).any()
    # Gap closed per operator and the errors per factor, in the page and in demo.json, for the operators and the
    # joint model; the errors' top-1 is the first seed's, so it lies within the seeds' spread of the table's.
    assert "gap closed" in page and "right per factor" in page
    for row in (*config.operators, "instruct (synonyms)"):
        for name, method in ((row, "pops"), (f"{row} (joint)", "pops joint")):
            errors, cell = summary["errors"][name], result.table.get(row, method)
            assert errors["n"] == cell.n and abs(errors["top1"] - cell.top1) <= 3 * (cell.top1_std or 0) + 1e-6
            assert all(0.0 <= v <= 1.0 for v in errors["factors"].values())
    assert set(summary["errors"]["instruct"]["factors"]) == {"obj", "edit"}
    assert "hat" in summary["errors"]["composition"]["factors"]
    for name in ("retrieval", "decoder"):
        assert (config.out / "renderers" / name).is_dir()
    # The decoder draws recognisably: re-encoded, its pictures find their own source far above chance.
    fidelity = result.decoder_fidelity
    assert fidelity["top5"] >= 10 * fidelity["chance_top1"] and fidelity["steps"] == config.decoder_steps
    assert fidelity["seconds"] > 0


@pytest.mark.slow
def test_rerun_encodes_nothing_and_reuses_the_operators(quick_demo):
    from pops.demo import run_demo

    config, first = quick_demo
    again = run_demo(config)
    assert again.encoded == 0  # every image came from the cache
    assert again.trained == []  # same settings and data: the saved operators are reused
    assert again.guidance == first.guidance
    for kind in config.operators:  # the reloaded operators sample what the freshly trained ones did
        a, b = first.table.get(kind, "pops"), again.table.get(kind, "pops")
        assert b.cosine == pytest.approx(a.cosine, abs=1e-4)


@pytest.mark.slow
def test_apply_takes_images_with_a_demo_operator(quick_demo, tmp_path):
    from pops.embeddings.io import load_embeddings

    config, _ = quick_demo
    assets = config.out / "assets"
    pictures = sorted(assets.glob("*.png"))
    obj = next(p for p in pictures if p.stem in config.world["shapes"])
    tex = next(p for p in pictures if p.stem in config.world["textures"])
    out = tmp_path / "textured.safetensors"
    result = run_cli(
        "apply", "--model", str(config.out / "operators" / "texturing"), str(obj), str(tex), "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    embeds, meta = load_embeddings(out)
    assert embeds.shape == (1, 1280) and meta["operator"] == "texturing"
    result = run_cli("apply", "--model", str(config.out / "operators" / "instruct"), str(obj), "red", "-o", str(out))
    assert result.exit_code != 0 and "already exists; pass --overwrite" in result.output  # never replaced silently
    result = run_cli(
        "apply", "--model", str(config.out / "operators" / "instruct"), str(obj), "red", "-o", str(out), "--overwrite"
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_eval_cli_scores_the_saved_operators(quick_demo, tmp_path):
    config, result = quick_demo
    out = tmp_path / "table.json"
    cli = run_cli("eval", "--models", str(config.out), "--operator", "union", "--seeds", "1", "-o", str(out))
    assert cli.exit_code == 0, cli.output
    assert "union" in cli.output and "averaging" in cli.output
    rows = {(r["operator"], r["method"]): r for r in json.loads(out.read_text())["rows"]}
    # The same evaluation code and data as the demo: the baselines agree exactly.
    assert rows[("union", "averaging")]["top1"] == pytest.approx(result.table.get("union", "averaging").top1)
    # A few-step sampler by name, from the same command: two deterministic DPM-Solver++ passes still beat input A.
    fast_out = tmp_path / "fast.json"
    args = ["eval", "--models", str(config.out), "--operator", "union", "--seeds", "1", "--sampler", "dpmpp"]
    cli = run_cli(*args, "--steps", "2", "-o", str(fast_out))
    assert cli.exit_code == 0, cli.output
    fast = {(r["operator"], r["method"]): r for r in json.loads(fast_out.read_text())["rows"]}
    assert fast[("union", "pops")]["top1"] > fast[("union", "input_a")]["top1"]
    cli = run_cli(*args[:-1], "euler")
    assert cli.exit_code != 0 and "unknown sampler" in cli.output


@pytest.mark.slow
def test_distilled_students_beat_averaging_on_the_quick_demo(quick_demo, tmp_path):
    """`pops distill` on quick-demo operators gives one-pass students that beat averaging on held-out combinations
    (scored by `pops eval`, which shows the registry's guidance as n/a for them); their cards name the teacher and
    the call they expect."""
    from pops.operators.operator import Operator

    config, result = quick_demo
    students = tmp_path / "students"
    for kind in ("texturing", "union"):
        teacher, data = config.out / "operators" / kind, config.out / "data" / f"{kind}-train.safetensors"
        out = students / "operators" / kind
        out.parent.mkdir(parents=True, exist_ok=True)
        # 40 steps: on the quick demo's few pairs as good as the default 150 (measured), in ~6 s of CPU each.
        cli = run_cli("distill", str(teacher), "--data", str(data), "-o", str(out), "--steps", "40")
        assert cli.exit_code == 0, cli.output
        op = Operator.from_pretrained(out, load_encoders=False)
        assert (op.sampler, op.num_inference_steps) == ("ddim", 1) and op.guidance_folded
        card = (out / "README.md").read_text()
        assert f"Distilled with `pops distill` from the teacher `{teacher}`" in card
        assert "| default sampling | ddim, 1 step, guidance 1 (guidance folded into the weights) |" in card
    table_path = tmp_path / "students.json"
    args = ["eval", "--models", str(students), "--data", str(config.out / "data"), "--seeds", "1", "-o"]
    cli = run_cli(*args, str(table_path))
    assert cli.exit_code == 0, cli.output
    rows = {(r["operator"], r["method"]): r for r in json.loads(table_path.read_text())["rows"]}
    for kind in ("texturing", "union"):
        pops, averaging = rows[(kind, "pops")]["top1"], rows[(kind, "averaging")]["top1"]
        assert pops > averaging, f"{kind} student: {pops:.2f} vs averaging {averaging:.2f}"
        assert rows[(kind, "averaging")]["top1"] == pytest.approx(result.table.get(kind, "averaging").top1)
    # Guided again at the registry's scale 8, a student's number would mean nothing: n/a, null in the JSON.
    assert rows[("texturing", "pops g=8")]["top1"] is None and "n/a" in cli.output


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one-line errors, nothing written
# ----------------------------------------------------------------------------------------------------------------
def test_demo_cli_rejects_an_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("demo", "--quick", "--out", str(blocker / "demo"), "--no-progress")
    assert result.exit_code != 0
    assert "not writable" in result.output and "Traceback" not in result.output


def test_demo_cli_rejects_bad_options(tmp_path):
    for args in (["--steps", "0"], ["--operator", "paint"], ["--threads", "0"], ["--workers", "0"]):
        result = run_cli("demo", "--quick", "--out", str(tmp_path / "d"), *args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
    assert not (tmp_path / "d" / "report.html").exists()


def test_eval_cli_errors(tmp_path):
    result = run_cli("eval", "--models", str(tmp_path / "missing"))
    assert result.exit_code != 0 and "no such models folder" in result.output
    result = run_cli("eval", "--models", str(tmp_path))
    assert result.exit_code != 0 and "no trained operators" in result.output


def test_demo_config_validation(tmp_path):
    from pops.demo import DemoConfig

    with pytest.raises(ValueError, match="width"):
        DemoConfig(out=tmp_path, width=100)
    with pytest.raises(ValueError, match="unknown operator"):
        DemoConfig(out=tmp_path, operators=("texturing", "paint"))
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(out=tmp_path, steps=0)
    with pytest.raises(ValueError, match="workers"):
        DemoConfig(out=tmp_path, workers=0)  # refused before any work, not when the workers start
    with pytest.raises(ValueError, match="unknown textures"):
        DemoConfig(out=tmp_path, world={"textures": ("velvet",)}).world_config()
    with pytest.raises(ValueError, match="joint_budget"):
        DemoConfig(out=tmp_path, joint_budget=0)
    assert not DemoConfig(out=tmp_path).trains_joint  # off unless asked for (`--joint`)
    assert DemoConfig(out=tmp_path, joint=True).trains_joint
    assert not DemoConfig(out=tmp_path, joint=True, operators=("union",)).trains_joint  # one operator: nothing to join
    assert DemoConfig(out=tmp_path, steps=100, joint_budget=0.5).joint_steps() == 250  # 5 operators x 100 x 0.5
    assert DemoConfig(out=tmp_path).cache_dir == tmp_path / "cache"


def test_load_test_data_needs_a_demo_folder(tmp_path):
    from pops.evaluation import load_test_data

    with pytest.raises(FileNotFoundError, match="pops demo"):
        load_test_data(tmp_path, ["texturing"])


# ----------------------------------------------------------------------------------------------------------------
# The data stage on a tiny world with a cheap stand-in encoder (no network weights)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_world():
    return build_tiny_world()


def test_make_pairs_lines_up_inputs_targets_and_classes(tiny_world, tmp_path):
    from pops.demo import make_pairs
    from pops.embeddings.cache import EmbeddingCache

    encoder = ColourEncoder()
    cache = EmbeddingCache(tmp_path, encoder)
    for kind in ("texturing", "composition", "instruct"):
        pairs = make_pairs(tiny_world, kind, "train", 5, 0, cache, WordRows(), progress=False)
        samples = tiny_world.samples(kind, "train", 5, 0)
        assert len(pairs) == 5
        for j, sample in enumerate(samples):
            assert pairs.info["classes"][pairs.class_ids[j]] == sample.target_class
            assert torch.allclose(pairs.target[j], encoder.encode([sample.target])[0])
            for i, value in enumerate(sample.inputs):
                if value is None:
                    assert not pairs.present[j, i] and not pairs.slots[i][j].any()
                elif isinstance(value, str):
                    rows, mask = pairs.slots[i]
                    assert mask[j].sum() == 2 + len(value) % 3 and rows[j, 0, 0] == len(value)
                else:
                    assert pairs.present[j, i] and torch.allclose(pairs.slots[i][j], encoder.encode([value])[0])
    before = encoder.encoded
    make_pairs(tiny_world, "texturing", "train", 5, 0, EmbeddingCache(tmp_path, encoder), WordRows(), progress=False)
    assert encoder.encoded == before  # a second pass over the same samples is all cache hits


def test_recombined_pairs_keep_each_targets_input_classes(tiny_world, tmp_path):
    from pops.demo import make_pairs
    from pops.embeddings.cache import EmbeddingCache
    from pops.embeddings.pairs import recombine

    cache = EmbeddingCache(tmp_path, ColourEncoder())
    pairs = make_pairs(tiny_world, "union", "train", 12, 0, cache, None, progress=False)
    by_class: dict[str, list[torch.Tensor]] = {}
    for j, row in enumerate(pairs.info["input_classes"]):
        for i, name in enumerate(row):
            by_class.setdefault(name, []).append(pairs.slots[i][j])
    mixed = recombine(pairs, 3, seed=1)
    assert (
        len(mixed) == 36
        and torch.equal(mixed.target[:12], pairs.target)
        and torch.equal(mixed.target[24:], pairs.target)
    )
    assert torch.equal(mixed.slots[0][:12], pairs.slots[0])  # the first copy is the original pairs
    for k in range(36):
        row = pairs.info["input_classes"][k % 12]
        for i, name in enumerate(row):
            assert any(torch.equal(mixed.slots[i][k], e) for e in by_class[name])  # an input of the same class
    assert not torch.equal(mixed.slots[0][12:24], pairs.slots[0])
    # instruct's alignment targets travel with their pairs (a recombined pair keeps its caption's embedding)
    pairs.align_text = torch.randn(12, pairs.target.shape[1])
    assert torch.equal(recombine(pairs, 3, seed=1).align_text, pairs.align_text.repeat(3, 1))


def test_validation_classes_are_kept_out_of_training(tiny_world, tmp_path):
    from pops.demo import make_pairs, split_validation
    from pops.embeddings.cache import EmbeddingCache

    pairs = make_pairs(
        tiny_world, "texturing", "train", 24, 0, EmbeddingCache(tmp_path, ColourEncoder()), None, progress=False
    )
    train, validation = split_validation(pairs, 0.25, seed=0)
    assert len(train) + len(validation) == len(pairs)
    assert not set(train.class_ids.tolist()) & set(validation.class_ids.tolist())
    assert len(set(validation.class_ids.tolist())) == round(0.25 * len(set(pairs.class_ids.tolist())))
    for part in (train, validation):  # per-sample info follows the samples
        assert len(part.info["recipes"]) == len(part) and len(part.info["input_classes"]) == len(part)
        for j in range(len(part)):
            assert part.info["classes"][part.class_ids[j]] == tiny_world.target_class(part.info["recipes"][j])
    assert split_validation(pairs, 0.0, seed=0) == (pairs, None)


def test_operator_keeps_its_own_guidance_scale(tmp_path):
    from pops.core.prior import PopsPrior, make_prior
    from pops.operators.operator import Operator

    prior = make_prior(16, 1, 1, 16)
    model = PopsPrior(prior)
    model.set_clip_stats(torch.zeros(16), torch.ones(16))
    op = Operator(model, "texturing")
    assert op.guidance_scale == get_spec("texturing").guidance_scale  # the registry's unless given
    op.guidance_scale = 3.0
    loaded = Operator.from_pretrained(op.save_pretrained(tmp_path / "op"), load_encoders=False)
    assert loaded.guidance_scale == 3.0
    inputs = [torch.randn(2, 16), torch.randn(2, 16)]
    sample = lambda o, **kw: o.sample(inputs, generator=torch.Generator().manual_seed(0), num_inference_steps=3, **kw)  # noqa: E731
    assert torch.equal(sample(loaded), sample(op, guidance_scale=3.0))
    assert not torch.equal(sample(loaded), sample(op, guidance_scale=8.0))
    with pytest.raises(ValueError, match="guidance_scale"):
        Operator(model, "texturing", guidance_scale=0.5)


def test_union_inputs_are_exchangeable_within_their_class(tiny_world):
    """What makes recombined union pairs exact: the inputs' poses are drawn independently of the target."""
    recipes = tiny_world.sample_recipes("union", "train", 40, 0)
    first = recipes[0]
    other = next(r for r in recipes[1:] if r["objects"][0] == first["objects"][0])
    swapped = dict(first, poses=[other["poses"][0], first["poses"][1]])
    inputs, target = tiny_world.render(swapped)
    assert tiny_world.render(first)[1].tobytes() == target.tobytes()
    assert inputs[0].tobytes() == tiny_world.render(other)[0][0].tobytes()


# ----------------------------------------------------------------------------------------------------------------
# Small parts
# ----------------------------------------------------------------------------------------------------------------
def test_choose_threads():
    from pops.demo import choose_threads

    assert choose_threads(3) == 3
    assert choose_threads(None) == 1
    with pytest.raises(ValueError):
        choose_threads(0)


def test_the_model_per_operator_is_chosen_on_validation_hits_beyond_the_noise(tmp_path):
    """The joint model's operator replaces the separate one only where it beats it on the same validation samples by
    more than the noise of the paired difference; a tie, a win within the noise or no validation classes keep the
    separate operator. The choice reads the recorded validation hits (never a test score: the records hold none)."""
    from pops.demo.operators import TRAIN_RECORD, choose_models, saved_choice

    def hits(*values):
        return {"hits": list(values)}

    separate = {
        "texturing": hits(1, 1, 0, 1, 1, 0, 1, 1),
        "union": hits(1, 1, 1, 1, 0, 0, 0, 0),
        "instruct": hits(0, 0, 0, 0, 0, 0, 0, 1),
        "scene": None,
    }
    joint = {
        "texturing": hits(1, 1, 1, 1, 1, 0, 1, 1),  # one more right: within the noise
        "union": hits(1, 1, 1, 1, 0, 0, 0, 0),  # a tie
        "instruct": hits(1, 1, 1, 1, 1, 1, 1, 1),  # clearly better
        "scene": hits(1, 1),
    }
    models = choose_models(separate, joint, z=2.0)
    assert {kind: m["model"] for kind, m in models.items()} == {
        "texturing": "separate",
        "union": "separate",
        "instruct": "joint",
        "scene": "separate",
    }
    assert models["instruct"]["joint"]["diff"] == pytest.approx(7 / 8)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / TRAIN_RECORD).write_text(json.dumps({"choice": {"chosen": "ddim 4 g5", "hits": [1, 0]}}))
    assert saved_choice(tmp_path / "one")["chosen"] == "ddim 4 g5"


def test_each_operator_trains_with_its_demo_recipe_dropout_and_batch_and_the_joint_model_with_neither(tmp_path):
    from pops.base.registry import REGISTRY
    from pops.demo.operators import joint_settings, training_settings
    from pops.demo.plan import DemoConfig
    from pops.demo.training_recipes import demo_recipe

    config = DemoConfig(out=tmp_path, batch_size=32)
    assert {demo_recipe(k).batch_factor for k in REGISTRY} != {1}  # some operator has its own recipe
    for kind in REGISTRY:
        settings = training_settings(config, kind)
        assert settings["batch_size"] == 32 * demo_recipe(kind).batch_factor
        assert settings["model"]["dropout"] == demo_recipe(kind).dropout
    joint = joint_settings(config, list(REGISTRY))
    assert joint["batch_size"] == 32 and joint["model"]["dropout"] == 0.0
    assert settings["vocabulary"] and joint["vocabulary"]  # the demo's default: both keep their training words
    assert not training_settings(DemoConfig(out=tmp_path, vocabulary=False), "instruct")["vocabulary"]


def test_choose_workers():
    from pops.demo import choose_workers

    assert choose_workers(None, 6) in (1, 2)
    assert choose_workers(4, 3) == 3  # never more processes than jobs
    assert choose_workers(1, 6) == 1
    with pytest.raises(ValueError):
        choose_workers(0, 6)


def test_report_is_one_self_contained_page(tmp_path):
    from PIL import Image

    from pops.demo.report import write_report
    from pops.evaluation import MetricsTable

    table = MetricsTable()
    table.add_runs("texturing", "pops", [{"cosine": 0.8, "top1": 0.7}, {"cosine": 0.82, "top1": 0.75}], n=10)
    table.add("texturing", "averaging", 0.5, 0.1, n=10)
    table.add("texturing", "oracle", 1.0, 0.9, n=10)
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    grids = [
        {
            "title": "texturing",
            "rows": [{"label": "obj=star|tex=wood", "cells": [("input 1", red), ("ground truth", red)]}],
        }
    ]
    path = write_report(
        tmp_path / "r.html", table=table, seconds={"training": 1.5}, grids=grids, equation=None, summary={}
    )
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 3  # the plot and two grid cells
    assert "obj=star|tex=wood" in page and "72.5%" in page and "training" in page
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temp file left behind


@pytest.mark.slow
def test_quick_demo_reads_words_through_an_aligned_text_space_learnt_from_training_classes_only(quick_demo, tmp_path):
    """The text tower learns from the captions of the training pairs alone: no held-out synonym and no caption of a
    test or validation class is among them; instruct's operator reads words through it (its token rows, width of
    the pictures' space), a copy of it inside its folder (which can move); the report shows each synonym's nearest
    training words."""
    from pops.demo.text_space import training_captions
    from pops.embeddings.pairs import Pairs
    from pops.encoders.text_tower import load_text_tower
    from pops.world.captions import caption
    from pops.world.edits import SYNONYMS

    config, result = quick_demo
    train = {kind: Pairs.load(config.out / "data" / f"{kind}-train.safetensors") for kind in config.operators}
    texts, *_ = training_captions(train)
    said = {word for text in texts for word in text.split()}
    assert not said & set(SYNONYMS)
    for kind in config.operators:
        held = Pairs.load(config.out / "data" / f"{kind}-test.safetensors")
        names = {held.info["classes"][i] for i in held.class_ids.tolist()}
        assert not {caption(name) for name in names} & set(texts), kind
    tower = load_text_tower(config.out / "encoders" / "text-tower")
    assert tower.width == 1280 and tower.token_rows(["crimson"])[0].shape[1] == 1280
    moved = tmp_path / "instruct"
    shutil.copytree(config.out / "operators" / "instruct", moved)
    instruct = Operator.from_pretrained(moved)
    assert Path(instruct.encoder_configs["text"]["path"]).is_relative_to(moved.resolve())
    assert torch.equal(instruct.text_encoder.encode(["crimson"]), tower.encode(["crimson"]))
    summary = json.loads((config.out / "demo.json").read_text())
    assert set(summary["text_tower"]["nearest"]) == set(SYNONYMS)
    assert "The aligned text space" in result.report.read_text()


@pytest.mark.slow
def test_quick_demo_scores_the_peers_and_the_regret_of_its_choice(quick_demo, tmp_path):
    """Beside every operator: the subspace operator and ridge regression on the same held-out pairs, in the metrics,
    the report (with pOps' margin over the best peer) and demo.json's regret of each choice; the subspace folder runs
    as a models folder of its own (`pops apply` an equation, `pops eval`, the UI's operator tab on pictures)."""
    from pops.embeddings.io import save_embeddings
    from pops.models.layout import check_models_folder
    from pops.ui.backend import Backend, Settings

    config, result = quick_demo
    for row in (*config.operators, "instruct (synonyms)"):
        for method in ("subspace", "ridge"):
            assert result.table.get(row, method).n == result.table.get(row, "pops").n
    page = result.report.read_text()
    assert "How it compares" in page and "margin" in page and "regret" in page
    regret = json.loads((config.out / "demo.json").read_text())["regret"]
    assert set(regret) == set(config.operators) and all(r["regret"] >= 0 for r in regret.values())
    subspace = config.out / "operators" / "subspace"
    assert "union" in check_models_folder(subspace)  # what `pops serve --models` checks first
    for name in ("a", "b"):
        save_embeddings(tmp_path / f"{name}.safetensors", torch.randn(1, 1280))
    out = tmp_path / "eq"
    equation = f"union({tmp_path / 'a.safetensors'}, {tmp_path / 'b.safetensors'})"
    done = run_cli("apply", equation, "--models", subspace, "-o", out, "--render", "none")
    assert done.exit_code == 0, done.output
    scored = run_cli("eval", "--models", subspace, "--data", config.out / "data", "--operator", "union", "--seeds", "1")
    assert scored.exit_code == 0 and "union" in scored.output
    backend = Backend([str(subspace)], tmp_path / "ui")
    pictures = {"object": str(config.out / "assets" / "circle.png"), "texture": str(config.out / "assets" / "wood.png")}
    shown = backend.run_operator("texturing", pictures, None, Settings(str(subspace), renderer="none"))
    assert shown.ok, shown.status
    assert shown.record["steps"] and "texturing" in shown.record["equation"]
