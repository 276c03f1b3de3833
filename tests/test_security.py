"""Input from disk or the network never runs code or reveals the file system: a crafted checkpoint folder is refused
before (or without) unpickling anything; the UI opens only the models folders `pops serve` was started with."""

from __future__ import annotations

import copy
import pickle
import shutil
from pathlib import Path

import pytest

from pops.core.prior import PopsPrior
from tests.helpers.pairs import make_pairs
from tests.helpers.priors import tiny_prior
from tests.helpers.training import DIM, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    """Unpickling this creates `marker` (the stand-in for any code a pickle may run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A complete checkpoint (EMA and a warm-up schedule: every kind of state), as `pops train` saves it."""
    from pops.train import train

    root = tmp_path_factory.mktemp("trained")
    opts = dict(max_steps=2, ema={"enabled": True}, optim={"warmup_steps": 3}, checkpoint={"every": 2, "at_end": False})
    train(tiny_config(root, **opts), pairs=make_pairs(), model=PopsPrior(tiny_prior(dim=DIM)))
    return root / "run" / "checkpoints" / "checkpoint_2"


def test_a_checkpoint_holds_no_pickle_of_ours(checkpoint):
    from pops.train.checkpointing import ALLOWED

    names = sorted(p.name for p in checkpoint.iterdir())
    assert all(ALLOWED.match(n) for n in names), names
    assert not [n for n in names if n.startswith("custom_checkpoint")]
    assert {"train_state.json", "ema.safetensors", "model.safetensors", "optimizer.bin"} <= set(names)


@pytest.mark.parametrize(
    "name",
    ["custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl", "pytorch_model_fsdp_0"],
    ids=["extra-pickle", "optimizer", "rng", "sub-folder"],
)
def test_resume_from_a_crafted_checkpoint_refuses_without_running_it(tmp_path, checkpoint, name):
    from pops.train import train

    crafted = tmp_path / "checkpoint_2"
    shutil.copytree(checkpoint, crafted)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    if name.endswith("fsdp_0"):  # a sharded save's folder: its metadata is a pickle torch would load freely
        (crafted / name).mkdir()
        (crafted / name / ".metadata").write_bytes(payload)
    else:
        (crafted / name).write_bytes(payload)
    cfg = tiny_config(tmp_path, max_steps=4, ema={"enabled": True}, resume=str(crafted))
    with pytest.raises(ValueError, match="refused") as refused:
        train(cfg, pairs=make_pairs(), model=copy.deepcopy(PopsPrior(tiny_prior(dim=DIM))))
    assert "\n" not in str(refused.value)
    if name in ("custom_checkpoint_0.pkl", "pytorch_model_fsdp_0"):
        assert repr(name) in str(refused.value)
    assert not marker.exists()


def test_cli_resume_from_a_crafted_checkpoint_is_a_one_line_error(tmp_path, checkpoint):
    import importlib

    from typer.testing import CliRunner

    from pops.cli import COMMANDS
    from pops.cli.app import app

    for command in COMMANDS:  # as `pops` does: every sub-command registered, so `train` is addressed by name
        importlib.import_module(f"pops.cli.{command}")

    crafted = tmp_path / "checkpoint_2"
    shutil.copytree(checkpoint, crafted)
    marker = tmp_path / "pwned"
    (crafted / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    make_pairs().save(tmp_path / "pairs.safetensors")
    config = tmp_path / "run.yaml"
    config.write_text(
        "operator: texturing\ninit: scratch\nmax_steps: 4\nbatch_size: 4\nprogress: false\n"
        f"data: {tmp_path / 'pairs.safetensors'}\noutput_dir: {tmp_path / 'run'}\n"
        f"model: {{embedding_dim: {DIM}, num_layers: 2, num_attention_heads: 2, attention_head_dim: 16}}\n"
        "ema: {enabled: true}\nlogging: {every: 0}\nvalidation: {every: 0}\ncheckpoint: {every: 0, at_end: false}\n"
    )
    result = CliRunner().invoke(app, ["train", str(config), "--resume", str(crafted)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "custom_checkpoint_0.pkl" in lines[0] and "refused" in lines[0]
    assert not marker.exists()


def test_the_ui_backend_refuses_every_models_folder_it_was_not_started_with(tmp_path):
    from pops.ui.backend import NOT_OFFERED, Backend, Settings

    offered, unlisted = tmp_path / "offered", tmp_path / "unlisted"
    (unlisted / "operators" / "texturing").mkdir(parents=True)
    offered.mkdir()
    backend = Backend([offered], tmp_path / "out")
    assert backend.models_dirs == [str(offered)] and backend.default_models == str(offered)
    names = [str(unlisted), str(tmp_path / "missing"), "/etc/hostname", str(offered) + "/..", "", None]
    for name in names[:-2]:
        with pytest.raises(ValueError) as refused:
            backend.runner(name)
        assert str(refused.value) == NOT_OFFERED
        assert backend.describe(name) == f"**Models folder:** {NOT_OFFERED}"
        out = backend.run_equation("texture(a.png, b.png)", [], Settings(models_dir=name))
        assert not out.ok and NOT_OFFERED in out.status and str(tmp_path) not in out.status
    assert backend.runner("") is backend.runner(None) is backend.runner(str(offered))  # the default
    with pytest.raises(ValueError, match="pops serve --models"):
        Backend(None, tmp_path / "out2").runner("")
