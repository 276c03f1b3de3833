"""The trainer as users run it, in subprocesses: killed (SIGKILL) and resumed, stopped by SIGTERM, and on two
processes with accelerate (gloo) against one process with the same global batch."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers.pairs import make_pairs
from tests.helpers.processes import free_port, pops_env
from tests.helpers.training import max_diff, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_run(tmp_path: Path, name: str, **overrides) -> tuple[Path, dict]:
    """A pairs file and a YAML config for a tiny scratch run; returns (config path, config dict)."""
    pairs_path = tmp_path / "pairs.safetensors"
    if not pairs_path.exists():
        make_pairs(n=48).save(pairs_path)
    config = tiny_settings(pairs_path, tmp_path / name)
    for key, value in overrides.items():
        config[key] = dict(config[key], **value) if isinstance(value, dict) and key in config else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def env() -> dict:
    return pops_env(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def in_process(config: dict, **changes):
    from pops.train import config_from_dict, train

    return train(config_from_dict(dict(config, **changes)))


def initial_weights(config: dict) -> dict:
    """The scratch init every run of `config` starts from (the trainer seeds it with config seed)."""
    from pops.embeddings.pairs import Pairs
    from pops.train import config_from_dict
    from pops.train.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.get("seed", 0))
        return build_model(config_from_dict(config), Pairs.load(config["data"])).state_dict()


def final_weights(output_dir) -> dict:
    return load_file(Path(output_dir) / "model.safetensors")


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training subprocess")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_ends_with_the_same_weights(tmp_path):
    from pops.train.checkpointing import complete_checkpoints, read_marker

    opts = dict(max_steps=150, deterministic=True, checkpoint={"every": 10, "total_limit": 3, "at_end": True})
    path, config = write_run(tmp_path, "killed", **opts)
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    kill_after = rng.randrange(10, 100, 10)  # the checkpoint to wait for, then a random part of the next 10 steps
    proc = subprocess.Popen(
        [sys.executable, "-m", "pops", "train", str(path)], env=env(), cwd=tmp_path, stderr=subprocess.PIPE
    )
    wait_for(lambda: (tmp_path / "killed" / "checkpoints" / f"checkpoint_{kill_after}").exists(), proc)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed (seed {seed})"
    last = complete_checkpoints(tmp_path / "killed")[-1]
    killed_at = read_marker(last)["step"]
    assert kill_after <= killed_at < 150

    in_process(config, resume="auto")  # picks up the newest complete checkpoint, ignores any half-written one
    uninterrupted = in_process(config, output_dir=str(tmp_path / "whole"))
    assert max_diff(final_weights(tmp_path / "killed"), uninterrupted.state_dict()) == 0, (
        f"seed {seed}, resumed at {killed_at}"
    )


@pytest.mark.slow
def test_sigterm_saves_a_usable_checkpoint_and_exits(tmp_path):
    from pops.train.checkpointing import complete_checkpoints, read_marker

    opts = dict(max_steps=2000, checkpoint={"every": 50, "total_limit": 5, "at_end": True})
    path, config = write_run(tmp_path, "stopped", **opts)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pops", "train", str(path)], env=env(), cwd=tmp_path, stderr=subprocess.PIPE
    )
    wait_for(lambda: (tmp_path / "stopped" / "checkpoints" / "checkpoint_50").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert "stopped by SIGTERM at step" in err.decode()
    last = complete_checkpoints(tmp_path / "stopped")[-1]
    step = read_marker(last)["step"]
    assert 50 <= step < 2000 and last.name == f"checkpoint_{step}"
    assert not (tmp_path / "stopped" / "model.safetensors").exists()  # no final operator: the run did not finish
    # The checkpoint is usable: resuming it continues from that step to the end.
    in_process(config, resume=str(last), max_steps=step + 5, output_dir=str(tmp_path / "continued"))
    summary = (tmp_path / "continued" / "train_summary.json").read_text()
    assert f'"steps": {step + 5}' in summary and '"steps_this_run": 5' in summary


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 processes × 4 samples (DDP over gloo) against 1 process × 4 samples × 2 accumulation steps."""
    path, config = write_run(tmp_path, "ddp", max_steps=5, optim={"lr": 1e-3, "schedule": "cosine", "warmup_steps": 2})
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    # accelerate 1.15 starts one process for `--cpu --num_processes 2` (its multi-CPU path needs MPI); on a machine
    # without CUDA, `--multi_gpu` runs torchrun with 2 CPU processes on gloo (DistributedType.MULTI_CPU).
    env2 = dict(env(), ACCELERATE_USE_CPU="1")
    result = subprocess.run(
        [*launch, "-m", "pops", "train", str(path)], env=env2, cwd=tmp_path, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = (tmp_path / "ddp" / "train_summary.json").read_text()
    assert '"num_processes": 2' in summary and "MULTI_CPU" in summary and '"global_batch": 8' in summary

    single = in_process(config, output_dir=str(tmp_path / "single"), gradient_accumulation_steps=2)
    ddp = final_weights(tmp_path / "ddp")
    assert max_diff(ddp, single.state_dict()) < 1e-5
    assert max_diff(ddp, initial_weights(config)) > 1e-4  # and both moved away from the same seeded scratch init
    from pops.operators.operator import Operator

    assert torch.equal(Operator.from_pretrained(tmp_path / "ddp").model.prior.clip_std, single.prior.clip_std)
