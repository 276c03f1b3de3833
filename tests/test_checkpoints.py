"""Checkpoints: our format round trip, released-checkpoint loading, the Kandinsky prior path, bad files."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from pops.base import hub
from pops.operators import checkpoint, folder
from pops.operators.operator import Operator
from tests.helpers.priors import tiny_prior


def test_save_load_round_trip_is_bit_exact(tiny_operator, tmp_path):
    op = tiny_operator("instruct", text_width=12)
    op.save_pretrained(tmp_path / "op")
    files = sorted(p.name for p in (tmp_path / "op").iterdir())
    assert files == ["README.md", "model.safetensors", "pops_config.json"]
    config = json.loads((tmp_path / "op" / "pops_config.json").read_text())
    assert config["kind"] == "instruct" and config["prior_config"]["embedding_dim"] == 32
    assert config["sampling_scheduler"]["clip_sample_range"] == 10.0 and len(config["clip_mean"]) == 32
    assert "instruct" in (tmp_path / "op" / "README.md").read_text()

    loaded = Operator.from_pretrained(tmp_path / "op")
    a, b = op.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    inputs = [torch.randn(2, 32), torch.randn(2, 4, 12)]
    x = op.sample(inputs, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    y = loaded.sample(inputs, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y)
    assert not loaded.model.prior.clip_std.requires_grad


def test_released_checkpoint_with_kandinsky_key_names_loads_on_a_base(tmp_path):
    base_dir = tmp_path / "kandinsky-2-2-prior"
    base = tiny_prior(seed=0)
    base.save_pretrained(base_dir / "prior")  # the hub layout: <repo>/prior/{config.json, weights}
    trained = tiny_prior(seed=1)
    state = trained.state_dict()  # the real PriorTransformer key names (pickled fp32 dict, like learned_prior.pth)
    state.pop("clip_mean"), state.pop("clip_std")
    torch.save(state, tmp_path / "learned_prior.pth")

    op = Operator.from_pretrained(base_dir, checkpoint=tmp_path / "learned_prior.pth", kind="texturing")
    got = op.model.prior.state_dict()
    assert torch.equal(
        got["transformer_blocks.0.attn1.to_q.weight"], trained.state_dict()["transformer_blocks.0.attn1.to_q.weight"]
    )
    assert torch.equal(got["clip_mean"], base.clip_mean.detach())  # statistics come from the base
    assert op.spec.kind == "texturing"
    assert op.encoder_configs["image"]["resize"] == 512  # pictures squashed to 512² first, as the reference does


def test_kind_is_read_from_the_checkpoint_path(tmp_path):
    base = tiny_prior()
    base.save_pretrained(tmp_path / "base")
    (tmp_path / "models" / "scene").mkdir(parents=True)
    torch.save(tiny_prior(seed=2).state_dict(), tmp_path / "models" / "scene" / "learned_prior.pth")
    op = Operator.from_pretrained(tmp_path / "base", checkpoint=tmp_path / "models" / "scene" / "learned_prior.pth")
    assert op.spec.kind == "scene"


def test_missing_and_unexpected_keys_are_refused_and_the_base_is_untouched():
    prior = tiny_prior()
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    state = tiny_prior(seed=3).state_dict()
    del state["proj_in.weight"]
    with pytest.raises(ValueError, match=r"1 missing \(proj_in.weight\) keys"):
        checkpoint.apply_pops_checkpoint(prior, state)
    state = tiny_prior(seed=3).state_dict()
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"1 unexpected \(extra.weight\) keys"):
        checkpoint.apply_pops_checkpoint(prior, state)
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_keys_of_ddp_and_compiled_models_load_as_the_plain_keys(prefix):
    prior, trained = tiny_prior(), tiny_prior(seed=4)
    state = {prefix + k: v for k, v in trained.state_dict().items() if k not in checkpoint.CLIP_STATS}
    checkpoint.apply_pops_checkpoint(prior, state)
    got = prior.state_dict()
    assert all(torch.equal(got[k], v) for k, v in trained.state_dict().items() if k not in checkpoint.CLIP_STATS)


def test_checkpoint_for_a_different_size_is_refused_naming_both_shapes(tmp_path):
    torch.save(tiny_prior(dim=48).state_dict(), tmp_path / "big.pth")
    with pytest.raises(ValueError, match=r"\(16, 48\) in the checkpoint, \(16, 32\) in the base"):
        checkpoint.apply_pops_checkpoint(tiny_prior(dim=32), checkpoint.load_state_dict_file(tmp_path / "big.pth"))


def test_a_pickle_that_is_not_a_plain_state_dict_is_refused(tmp_path):
    torch.save(tiny_prior(), tmp_path / "module.pth")  # a whole pickled module: weights_only refuses it
    with pytest.raises(ValueError, match="not a plain state dict"):
        checkpoint.load_state_dict_file(tmp_path / "module.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a plain state dict"):
        checkpoint.load_state_dict_file(tmp_path / "list.pth")


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load_state_dict_file(tmp_path / "nope.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load_kandinsky_prior(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a pops operator folder"):
        folder.load_operator_folder(tmp_path / "empty")


def test_offline_hub_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ValueError, match="kandinsky-community/kandinsky-2-2-prior.*--local-dir DIR.*pass DIR instead"):
        checkpoint.load_kandinsky_prior("kandinsky-community/kandinsky-2-2-prior")
    assert time.monotonic() - start < 2.0


def test_unreachable_hub_fails_fast(monkeypatch):
    # the sandbox has no route to the hub: with offline mode off, the probe must fail fast, not retry for minutes
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("pops.base.hub._probe", lambda repo: "unreachable")
    start = time.monotonic()
    with pytest.raises(ValueError, match="cannot be reached"):
        hub.resolve_file_ref("pOpsPaper/operators:models/texturing/learned_prior.pth")
    assert time.monotonic() - start < 5.0


def test_weights_that_do_not_match_the_config_are_refused(tiny_operator, tmp_path):
    tiny_operator("scene").save_pretrained(tmp_path / "op")
    config_path = tmp_path / "op" / "pops_config.json"
    config = json.loads(config_path.read_text())
    config["prior_config"]["num_layers"] = 3
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match"):
        Operator.from_pretrained(tmp_path / "op")
    assert "prior.transformer_blocks.0.attn1.to_q.weight" in load_file(tmp_path / "op" / "model.safetensors")
