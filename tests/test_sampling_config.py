"""How a call samples: one SamplingConfig, checked once where a value enters, resolved against the operator's own;
an operator's own settings are one OperatorConfig, the one owner of its folder's config."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from pops.base.errors import BadValue
from pops.core.sampler import SAMPLERS
from pops.core.sampling import SAMPLER_NAMES, SamplingConfig, call_sampling
from pops.operators.folder import OperatorConfig

OWN = SamplingConfig("ddim", 4, 5.0, 4)


def test_every_sampler_name_has_its_function():
    assert tuple(SAMPLERS) == SAMPLER_NAMES


@pytest.mark.parametrize(
    "values, names, message",
    [
        (dict(guidance_scale=0.5), None, "guidance_scale must be in [1, 100]"),
        (dict(guidance_scale=0.5), {"guidance_scale": "--guidance-scale"}, "--guidance-scale must be in [1, 100]"),
        (dict(num_inference_steps=0), {"num_inference_steps": "--steps"}, "--steps must be an integer in [1, 1000]"),
        (dict(draws=0), {"draws": "--draws"}, "--draws must be an integer of at least 1"),
        (dict(sampler="euler"), None, "unknown sampler 'euler'"),
        (dict(sampler=3), None, "sampler must be a name"),
        (dict(layout="wide"), None, "layout must be one of compact, padded"),
        (dict(guidance_scale="8"), None, "guidance_scale must be a number"),
    ],
)
def test_a_bad_value_is_refused_when_the_config_is_made_naming_it_as_the_boundary_does(values, names, message):
    with pytest.raises(BadValue, match=message.replace("[", r"\[").replace("]", r"\]")):
        SamplingConfig(**values, names=names)


def test_values_are_canonical_and_the_config_is_frozen_and_hashable():
    config = SamplingConfig("ddim", torch.tensor(4), 3, 2)
    assert (config.num_inference_steps, config.guidance_scale) == (4, 3.0)
    assert type(config.num_inference_steps) is int and type(config.guidance_scale) is float
    with pytest.raises(AttributeError):
        config.draws = 3
    assert {config: 1}[SamplingConfig("ddim", 4, 3.0, 2)] == 1


def test_resolve_fills_what_the_call_leaves_to_the_operator():
    assert SamplingConfig().resolve(OWN) == OWN
    assert SamplingConfig(guidance_scale=2).resolve(OWN) == replace(OWN, guidance_scale=2.0)
    # its own steps go with its own sampler only: another sampler named alone takes the reference's 25
    assert SamplingConfig(sampler="unclip").resolve(OWN) == SamplingConfig("unclip", 25, 5.0, 4)
    assert SamplingConfig(sampler="unclip", num_inference_steps=10).resolve(OWN).num_inference_steps == 10
    assert SamplingConfig(draws=1, layout="padded").resolve(OWN) == SamplingConfig("ddim", 4, 5.0, 1, "padded")


def test_the_one_label_format():
    assert OWN.label == "ddim 4 x4 g5"
    assert SamplingConfig("unclip", 25, 8.0, 1).label == "unclip 25 g8"
    assert SamplingConfig("ddim", 4, draws=1).label == "ddim 4"


def test_a_call_gives_a_config_or_its_values_not_both():
    assert call_sampling(None, sampler="ddim", layout="compact") == SamplingConfig("ddim")
    assert call_sampling(OWN, guidance_scale=None, layout="compact") is OWN
    with pytest.raises(BadValue, match="either sampling= or guidance_scale"):
        call_sampling(OWN, guidance_scale=3.0)
    with pytest.raises(BadValue, match="must be a SamplingConfig"):
        call_sampling({"sampler": "ddim"})


def test_an_operator_samples_with_a_config_as_with_its_keywords(tiny_operator):
    op = tiny_operator("texturing")
    a, b = torch.randn(2, 32), torch.randn(2, 32)
    by_words = op.sample([a, b], guidance_scale=3.0, sampler="ddim", num_inference_steps=2, generator=_gen())
    by_config = op.sample([a, b], sampling=SamplingConfig("ddim", 2, 3.0), generator=_gen())
    assert torch.equal(by_words, by_config)
    with pytest.raises(BadValue, match="not both"):
        op.sample([a, b], sampling=SamplingConfig("ddim", 2), draws=2)


def test_an_operators_own_settings_are_its_config_and_setting_one_checks_it(tiny_operator, tmp_path):
    op = tiny_operator("union")
    assert op.sampling == SamplingConfig("unclip", 25, 8.0, 1) and op.config.kind == op.kind == "union"
    op.draws = 3
    op.guidance_scale = 2
    assert op.sampling == SamplingConfig("unclip", 25, 2.0, 3) and op.config.sampling is op.sampling
    with pytest.raises(BadValue, match="draws must be an integer of at least 1"):
        op.draws = 0
    with pytest.raises(ValueError, match="names every value"):
        op.sampling = SamplingConfig(sampler="ddim")
    assert op.sampling.draws == 3  # a refused value leaves the operator as it was
    op.save_pretrained(tmp_path / "op")
    saved = json.loads((tmp_path / "op" / "pops_config.json").read_text())
    assert OperatorConfig.from_dict(saved, where=tmp_path / "op") == op.config
    assert {k: saved[k] for k in ("kind", "guidance_scale", "draws")} == {
        "kind": "union",
        "guidance_scale": 2.0,
        "draws": 3,
    }
    assert "sampler" not in saved and "num_inference_steps" not in saved  # the reference's call is not written


def test_a_bad_saved_setting_is_one_line_naming_the_config_file(tmp_path):
    with pytest.raises(ValueError, match=r"pops_config.json: draws must be an integer"):
        OperatorConfig.from_dict({"kind": "scene", "draws": -1}, where=tmp_path)
    with pytest.raises(ValueError, match=r"pops_config.json: unknown operator 'paint'"):
        OperatorConfig.from_dict({"kind": "paint"}, where=tmp_path)


def test_the_cli_loads_no_torch_until_a_command_runs():
    """`pops --help` and every sub-command's module import without torch (a second saved on every --help)."""
    code = (
        "import sys, pops.cli\n"
        "for name in pops.cli.COMMANDS:\n"
        "    __import__(f'pops.cli.{name}')\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def _gen():
    return torch.Generator().manual_seed(0)
