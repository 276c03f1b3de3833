"""Evaluation metrics on synthetic embeddings with known answers."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from pops.core.sampling import SamplingConfig
from pops.evaluation import (
    MetricsTable,
    averaging_baseline,
    class_prototypes,
    cosine_to_target,
    evaluate_embeddings,
    input_a_baseline,
    nearest_classes,
    oracle_baseline,
    top1_accuracy,
)
from pops.evaluation.factors import factor_errors


def random_unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_cosine_to_target_known_values():
    x = random_unit(8, 16)
    assert cosine_to_target(x, x) == pytest.approx(1.0, abs=1e-6)
    assert cosine_to_target(x, -3.0 * x) == pytest.approx(-1.0, abs=1e-6)
    e = torch.eye(4)
    assert cosine_to_target(e, e.roll(1, dims=0)) == pytest.approx(0.0, abs=1e-6)
    assert cosine_to_target(
        torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    ) == pytest.approx((math.sqrt(0.5) + 1.0) / 2)
    with pytest.raises(ValueError):
        cosine_to_target(x, x[:4])
    with pytest.raises(ValueError):
        cosine_to_target(x[0], x[0])


def test_class_prototypes_are_normalised_class_means():
    embeds = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0], [4.0, 0.0], [1.0, 1.0]])
    names, protos = class_prototypes(embeds, ["a", "b", "b", "a", "c"])
    assert names == ["a", "b", "c"]
    assert torch.allclose(protos, torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)
    # scale-invariant: each embedding is normalised before averaging
    names2, protos2 = class_prototypes(torch.tensor([[10.0, 0.0], [0.0, 1.0]]), ["x", "x"])
    assert torch.allclose(protos2, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)
    with pytest.raises(ValueError):
        class_prototypes(embeds, ["a", "b"])


def test_top1_is_one_on_prototypes_and_zero_when_permuted():
    protos = random_unit(10, 32, seed=1)
    names = [f"c{i}" for i in range(10)]
    assert top1_accuracy(protos * 2.5, names, names, protos) == 1.0
    deranged = [names[(i + 1) % 10] for i in range(10)]  # every row labelled with another class
    assert top1_accuracy(protos, deranged, names, protos) == 0.0
    half = names[:5] + deranged[5:]
    assert top1_accuracy(protos, half, names, protos) == 0.5
    assert nearest_classes(protos[[3, 7]], names, protos) == ["c3", "c7"]
    with pytest.raises(ValueError, match="without a prototype"):
        top1_accuracy(protos, ["zz"] * 10, names, protos)


def test_mean_reciprocal_rank_gives_partial_credit():
    from pops.evaluation import mean_reciprocal_rank

    protos = torch.eye(4)
    names = ["a", "b", "c", "d"]
    assert mean_reciprocal_rank(protos, names, names, protos) == 1.0
    query = torch.tensor([[0.9, 0.5, 0.1, 0.0]])  # ranks: a 1st, b 2nd, c 3rd
    assert mean_reciprocal_rank(query, ["b"], names, protos) == pytest.approx(0.5)
    assert mean_reciprocal_rank(query.repeat(2, 1), ["a", "c"], names, protos) == pytest.approx((1 + 1 / 3) / 2)


def test_top1_on_noisy_class_clusters():
    # Well-separated classes with small noise: retrieval is perfect; with huge noise it falls towards chance.
    centres = random_unit(6, 64, seed=2)
    labels = [f"k{i % 6}" for i in range(60)]
    idx = torch.tensor([i % 6 for i in range(60)])
    g = torch.Generator().manual_seed(3)
    gallery = centres[idx] + 0.05 * torch.randn(60, 64, generator=g)
    names, protos = class_prototypes(gallery, labels)
    queries = centres[idx] + 0.05 * torch.randn(60, 64, generator=g)
    assert top1_accuracy(queries, labels, names, protos) == 1.0
    noisy = centres[idx] + 10.0 * torch.randn(60, 64, generator=g)
    assert top1_accuracy(noisy, labels, names, protos) < 0.6


def test_averaging_and_input_a_baselines():
    a = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    b = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(averaging_baseline([a, b]), torch.tensor([[2.0, 2.0], [1.0, 1.0]]))
    assert torch.allclose(averaging_baseline([a, None, b]), averaging_baseline([a, b]))
    assert torch.equal(input_a_baseline([a, b]), a)
    # composition: per-row presence; absent slots are ignored by both baselines
    present = torch.tensor([[True, True], [False, True]])
    assert torch.allclose(averaging_baseline([a, b], present), torch.tensor([[2.0, 2.0], [0.0, 0.0]]))
    assert torch.equal(input_a_baseline([a, b], present), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(input_a_baseline([None, b]), b)
    with pytest.raises(ValueError):
        averaging_baseline([None, None])
    with pytest.raises(ValueError):
        averaging_baseline([a, b], torch.tensor([[False, False], [True, True]]))
    with pytest.raises(ValueError):
        averaging_baseline([a, b[:1]])


def test_oracle_is_exact():
    targets = random_unit(12, 8, seed=4)
    names = [f"t{i}" for i in range(12)]
    out = oracle_baseline(targets)
    result = evaluate_embeddings(out, targets, names, names, targets)
    assert result["cosine"] == pytest.approx(1.0, abs=1e-6) and result["top1"] == 1.0
    out.add_(1.0)
    assert not torch.equal(out, targets)  # a copy, not a view


def test_metrics_table_aggregates_and_formats():
    table = MetricsTable()
    row = table.add_runs("texturing", "pops", [{"cosine": 0.8, "top1": 0.5}, {"cosine": 0.6, "top1": 0.7}], n=40)
    assert row.cosine == pytest.approx(0.7) and row.top1 == pytest.approx(0.6)
    assert row.cosine_std == pytest.approx(math.sqrt(0.02)) and row.runs == 2
    table.add("texturing", "averaging", 0.75, 0.25, n=40)
    table.add("texturing", "oracle", 1.0, 0.9)
    table.add("texturing", "input_a", 0.5, 0.0)
    table.add("union <b>", "averaging", 0.4, 0.1)
    assert table.methods() == ["pops", "averaging", "input_a", "oracle"]
    text = table.to_text()
    lines = text.splitlines()
    assert lines[0].split()[0] == "operator" and len(lines) == 4
    assert "0.700 ± 0.141" in text and "60.0% ± 14.1%" in text and "25.0%" in text and "—" in text
    page = table.to_html()
    assert (
        page.startswith("<table")
        and "union &lt;b&gt;" in page
        and "<b>0.750</b>" in page
        and "<b>60.0% ± 14.1%</b>" in page
    )
    again = MetricsTable.from_dict(table.to_dict())
    assert again.to_text() == text
    assert again.get("texturing", "pops").n == 40
    with pytest.raises(KeyError):
        table.get("scene", "pops")
    with pytest.raises(ValueError):
        table.add_runs("scene", "pops", [])


def test_gap_closed_is_the_share_of_the_way_from_averaging_to_the_oracle():
    table = MetricsTable()
    for method, top1 in (("pops", 0.7), ("averaging", 0.4), ("oracle", 1.0), ("pops joint", 0.4)):
        table.add("union", method, cosine=0.5, top1=top1)
    assert table.gap_closed("union") == pytest.approx(0.5)
    assert table.gap_closed("union", "pops joint") == pytest.approx(0.0)
    assert table.gap_closed("scene") is None  # no such row
    table.add("scene", "pops", cosine=0.5, top1=0.9)
    table.add("scene", "averaging", cosine=0.5, top1=0.9)
    table.add("scene", "oracle", cosine=0.5, top1=0.9)
    assert table.gap_closed("scene") is None  # no way to go


def test_factor_errors_say_which_factor_a_wrong_answer_got_wrong():
    truth = ["obj=star|edit=red", "obj=star|edit=red", "obj=moon|edit=big", "obj=moon|edit=big"]
    predicted = ["obj=star|edit=red", "obj=star|edit=big", "obj=moon|edit=red", "obj=ring|edit=big"]
    e = factor_errors(predicted, truth)
    assert e["n"] == 4 and e["top1"] == pytest.approx(0.25)
    assert e["factors"] == pytest.approx({"edit": 0.5, "obj": 0.75})
    assert e["worst_values"][0] == {"value": "edit=big", "n": 2, "top1": 0.0}
    assert {(c["true"], c["predicted"]) for c in e["confusions"]} == {(t, p) for t, p in zip(truth, predicted)} - {
        (truth[0], predicted[0])
    }
    # union's set of objects scores the share of members found; an absent garment slot is right when both lack it
    assert factor_errors(["obj=a+c"], ["obj=a+b"])["factors"] == {"obj": 0.5}
    assert factor_errors(["hat=cap|belt=white"], ["belt=white"])["factors"] == {"belt": 1.0, "hat": 0.0}
    with pytest.raises(ValueError, match="predictions"):
        factor_errors(["a"], [])


def test_metrics_table_text_is_a_plain_rich_table():
    table = MetricsTable()
    table.add_runs("texturing", "pops", [{"cosine": 0.8, "top1": 0.5}, {"cosine": 0.6, "top1": 0.7}], n=40)
    table.add("texturing", "averaging", 0.75, 0.25)
    table.add("[bold]union[/bold]", "averaging", 0.4, 0.125)  # an operator name is text, never rich markup
    lines = table.to_text().splitlines()
    assert lines[0].split() == ["operator", "pops", "cos", "averaging", "cos", "pops", "top-1", "averaging", "top-1"]
    assert set(lines[1]) == {"─"} and len(lines) == 4
    assert lines[2].split() == ["texturing", "0.700", "±", "0.141", "0.750", "60.0%", "±", "14.1%", "25.0%"]
    assert lines[3].split() == ["[bold]union[/bold]", "—", "0.400", "—", "12.5%"]
    assert all(line == line.rstrip() for line in lines) and "\x1b" not in table.to_text()  # no styles, no padding
    # the operator column is left-aligned, the numbers right-aligned (their last characters line up)
    ends = {line.rstrip().rfind(cell) + len(cell) for line, cell in zip(lines[2:], ("25.0%", "12.5%"))}
    assert len(ends) == 1 and lines[2].startswith("texturing")


def test_a_cell_that_does_not_apply_is_na_and_never_the_best():
    table = MetricsTable()
    table.add("texturing", "pops", 0.7, 0.5)
    table.add_not_applicable("texturing", "pops g=8", n=12)
    table.add("texturing", "averaging", 0.6, 0.25)
    lines = table.to_text().splitlines()
    assert lines[2].split() == ["texturing", "0.700", "0.600", "n/a", "50.0%", "25.0%", "n/a"]
    assert "<td>n/a</td>" in table.to_html() and "<b>0.700</b>" in table.to_html()
    data = json.loads(table.to_json())  # strict JSON: null, not NaN
    assert [r for r in data["rows"] if r["method"] == "pops g=8"][0]["top1"] is None
    assert MetricsTable.from_dict(data).to_text() == table.to_text()


def test_eval_command_imports_nothing_from_the_demo(tiny_operator, tmp_path):
    """`pops eval` reads a models folder and its data/ through pops.evaluation alone (checked in a fresh process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pops.embeddings.io import save_embeddings
    from pops.embeddings.pairs import Pairs

    tiny_operator("union").save_pretrained(tmp_path / "operators" / "union")
    g = torch.Generator().manual_seed(0)
    classes = ["a", "b", "c"]
    pairs = Pairs(
        "union",
        [torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)],
        torch.ones(6, 2, dtype=torch.bool),
        torch.randn(6, 32, generator=g),
        class_ids=torch.tensor([0, 1, 2, 0, 1, 2]),
        info={"classes": classes},
    )
    pairs.save(tmp_path / "data" / "union-test.safetensors")
    save_embeddings(
        tmp_path / "data" / "union-gallery.safetensors",
        torch.randn(3, 32, generator=g),
        {"operator": "union", "classes": classes},
    )
    script = (
        "import sys\nfrom pathlib import Path\nimport pops.cli.eval as cli\n"
        "from pops.core.sampling import SamplingConfig\n"
        f"table = cli._eval(Path({str(tmp_path)!r}), ['union'], None, 1, (), SamplingConfig(num_inference_steps=2), "
        f"Path({str(tmp_path / 't.json')!r}), None)\n"
        "print(sorted(m for m in sys.modules if m.startswith('pops.demo')), table.get('union', 'pops').n)\n"
    )
    root = str(Path(__file__).resolve().parents[1])  # this checkout first, as the test process sees it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] 6"
    assert (tmp_path / "t.json").is_file()


class _Untouchable(dict):
    """A mapping of test splits that fails the moment anything reads it."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the guidance choice read the test pairs")

    __getitem__ = get = items = values = keys = __iter__ = __len__ = __contains__ = _refuse


def test_the_sampling_choice_sees_only_validation_classes(tiny_operator):
    """choose_sampling scores the validation pairs (training classes kept out of training) and nothing else: test
    pairs it cannot read, and test pairs present, leave its choice unchanged; it returns a pair it tried."""
    from pops.embeddings.pairs import Pairs
    from pops.evaluation import choose_sampling
    from pops.evaluation.testsets import OperatorData

    op = tiny_operator("union", dim=32)
    g = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(8, 32, generator=g), dim=-1)
    classes = [f"c{i}" for i in range(8)]

    def pairs(ids: list[int]) -> Pairs:
        n = len(ids)
        slots = [torch.randn(n, 32, generator=g) for _ in range(2)]
        present = torch.ones(n, 2, dtype=torch.bool)
        return Pairs("union", slots, present, gallery[ids], class_ids=torch.tensor(ids), info={"classes": classes})

    data = OperatorData("union", classes, None, _Untouchable(), classes, gallery, validation=pairs([0, 1, 2, 3]))
    samplers = (
        SamplingConfig("unclip", 3, draws=1),
        SamplingConfig("ddim", 2, draws=1),
        SamplingConfig("ddim", 2, draws=3),
    )
    chosen = choose_sampling(op, data, (1.0, 3.0, 8.0), samplers, seed=0)
    best, scores = chosen.sampling, chosen.scores
    default = op.call_config(None)
    candidates = {op.call_config(replace(c, guidance_scale=s)).label for c in samplers for s in (1.0, 3.0, 8.0)}
    assert set(scores) == candidates | {default.label} and best.label in scores
    assert "ddim 2 x3 g8" in scores  # the one label format: sampler, steps, draws beyond one, scale
    data.tests = {"test": pairs([4, 5, 6, 7])}  # held-out classes present: still the same choice
    again = choose_sampling(op, data, (1.0, 3.0, 8.0), samplers, seed=0)
    assert again.sampling == chosen.sampling and again.scores == chosen.scores
    op.sampling = chosen.sampling
    assert (op.guidance_scale, op.sampler, op.num_inference_steps, op.draws) == (
        best.guidance_scale,
        best.sampler,
        best.num_inference_steps,
        best.draws,
    )


def test_the_sampling_choice_keeps_the_default_unless_a_candidate_clears_the_noise(tiny_operator, monkeypatch):
    """A candidate replaces the operator's own sampling only when its paired validation advantage exceeds z standard
    errors: one more hit in eight is noise; four more is a win; of two winners the better one ships, of equals the
    earlier."""
    from pops.embeddings.pairs import Pairs
    from pops.evaluation import choose_sampling, harness
    from pops.evaluation.testsets import OperatorData

    op = tiny_operator("union", dim=32)
    gallery = F.normalize(torch.eye(8, 32), dim=-1)
    classes = list("abcdefgh")
    pairs = Pairs("union", [gallery, gallery], torch.ones(8, 2, dtype=torch.bool), gallery, class_ids=torch.arange(8))
    pairs.info["classes"] = classes
    data = OperatorData("union", classes, None, {}, classes, gallery, validation=pairs)
    default = op.call_config(None)
    hits = {}  # each candidate's output retrieves its first n classes (2 unless set); the rest, a wrong class

    def fake(op, pairs, sampling, seed):
        n = hits.get(sampling.label, 2)
        return torch.cat([gallery[:n], torch.roll(gallery, 1, dims=0)[n:]])

    monkeypatch.setattr(harness, "sample_pairs", fake)

    def chosen():
        return choose_sampling(op, data, (1.0, 8.0), [SamplingConfig("ddim", 4, draws=1)]).sampling.label

    assert chosen() == default.label  # all equal
    hits["ddim 4 g1"] = 3
    assert chosen() == default.label  # one more hit in eight: within the noise
    hits["ddim 4 g1"] = 6
    assert chosen() == "ddim 4 g1"
    hits["ddim 4 g8"] = 7
    assert chosen() == "ddim 4 g8"  # both clear the noise: the higher top-1
    hits["ddim 4 g8"] = 6
    assert chosen() == "ddim 4 g1"  # equals: the earlier candidate
