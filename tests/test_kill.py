"""kill -9 at a random point of `pops embed`, `pops generate` and an equation's evaluation, then a rerun: nothing is
lost, duplicated or half-written picked up — the rerun ends where an uninterrupted run ends. (Training: see
test_train_resume.py; the demo and its workers: test_faults.py.)

Each worker is a subprocess that touches a `started` file once its imports are done and the work begins; it is
killed a seeded random time after that (the seed is in the failure message), so the kill lands inside the work
(or, on a fast run, just after it: the rerun must then change nothing)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.images import solid
from tests.helpers.models import models_folder
from tests.helpers.priors import picture_operator
from tests.helpers.processes import pops_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ENV = pops_env(OMP_NUM_THREADS="1")


def kill_at_random(script: str, *args, window: float, seed: int | None = None) -> tuple[int, float]:
    """Run `script` (python -c) with args; SIGKILL it a random time in [0, window] s after it touches args[0]/started.
    Returns (seed, delay)."""
    seed = random.randrange(10**6) if seed is None else seed
    delay = random.Random(seed).uniform(0.0, window)
    started = Path(args[0]) / "started"
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not started.exists():
        assert proc.poll() is None, f"the worker failed: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    started.unlink()
    return seed, delay


def visible_files(root: Path) -> list[str]:
    """Files a reader may pick up (the hidden temporaries of atomic writes are never read)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


# ----- pops embed ----------------------------------------------------------------------------------------------
EMBED = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from pops.embeddings.cache import EmbeddingCache
from pops.encoders.efficientnet import EfficientNetEncoder
from pops.generate.embedding import embed_dataset
root, dataset, cache = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
encoder = EfficientNetEncoder(32, bf16=False)
(root / "started").touch()
embed_dataset(dataset, EmbeddingCache(cache, encoder, batch_size=4, shard_size=4), chunk_size=4, progress=False)
"""


def make_dataset(folder: Path, samples: int = 16) -> Path:
    from PIL import Image

    from pops.generate.storage import init_dataset, write_sample

    init_dataset(folder, {"operator": "union", "seed": 0, "recipe": {}})
    g = torch.Generator().manual_seed(0)
    for i in range(samples):
        colours = [tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g)) for _ in range(2)]
        images = {f"object_{k}": Image.new("RGB", (32, 32), colour) for k, colour in zip("ab", colours)}
        write_sample(folder, i, images=images, assets={}, record={}, image_format="png")
    return folder


def cache_rows(cache_root: Path) -> tuple[dict[bytes, torch.Tensor], int]:
    """Every cached (key -> embedding) of a cache folder and the number of rows its shards hold (duplicates
    counted); a shard that does not verify fails the test (none may be half-written)."""
    from pops.embeddings.cache import EmbeddingCache
    from pops.encoders.efficientnet import EfficientNetEncoder

    cache = EmbeddingCache(cache_root, EfficientNetEncoder(32, bf16=False))
    rows, total = {}, 0
    for shard in sorted(cache.folder.glob("shard-*.safetensors")):
        keys, embeds = cache._read_shard(shard)  # raises on a damaged shard
        total += len(keys)
        rows.update((bytes(k.tolist()), e) for k, e in zip(keys, embeds))
    assert not list(cache.folder.glob("*.corrupt"))
    return rows, total


@pytest.mark.slow
def test_embed_killed_at_a_random_point_then_rerun_caches_every_image_once(tmp_path):
    from pops.embeddings.cache import EmbeddingCache
    from pops.encoders.efficientnet import EfficientNetEncoder
    from pops.generate.embedding import embed_dataset

    dataset = make_dataset(tmp_path / "dataset")
    seed, delay = kill_at_random(EMBED, tmp_path, dataset, tmp_path / "cache", window=1.5)
    why = f"seed {seed}, killed {delay:.2f} s in"
    encoder = EfficientNetEncoder(32, bf16=False)
    for root in (tmp_path / "cache", tmp_path / "whole"):  # the rerun, and an uninterrupted run
        embed_dataset(dataset, EmbeddingCache(root, encoder, batch_size=4, shard_size=4), chunk_size=4, progress=False)
    resumed, resumed_rows = cache_rows(tmp_path / "cache")
    whole, whole_rows = cache_rows(tmp_path / "whole")
    assert len(whole) == whole_rows == 32, why
    assert resumed.keys() == whole.keys() and resumed_rows == whole_rows, why  # nothing lost, nothing twice
    assert all(torch.equal(resumed[k], whole[k]) for k in whole), why


# ----- pops generate -------------------------------------------------------------------------------------------
GENERATE = """
import sys
from pathlib import Path
from tests.helpers.images import solid
from pops.generate.models import GenerationModels
from pops.generate.runner import generate
root, out = Path(sys.argv[1]), sys.argv[2]
(root / "started").touch()
generate("instruct", out, num_samples=60, seed=3, models=GenerationModels(text_to_image=solid), progress=False)
"""


def dataset_contents(root: Path) -> dict[str, bytes]:
    """The samples of a generated dataset: every picture's bytes and every manifest (the logs are not content)."""
    return {name: (root / "samples" / name).read_bytes() for name in visible_files(root / "samples")}


@pytest.mark.slow
def test_generate_killed_at_a_random_point_then_rerun_makes_the_same_dataset(tmp_path):
    from pops.generate.models import GenerationModels
    from pops.generate.runner import generate

    seed, delay = kill_at_random(GENERATE, tmp_path, tmp_path / "killed", window=1.0)
    why = f"seed {seed}, killed {delay:.2f} s in"
    models = GenerationModels(text_to_image=solid)
    for out in (tmp_path / "killed", tmp_path / "whole"):
        generate("instruct", out, num_samples=60, seed=3, models=models, progress=False)
    resumed, whole = dataset_contents(tmp_path / "killed"), dataset_contents(tmp_path / "whole")
    assert resumed.keys() == whole.keys(), why
    assert len([n for n in whole if n.endswith("sample.json")]) == 60
    assert all(resumed[n] == whole[n] for n in whole), why


# ----- an equation -------------------------------------------------------------------------------------------------
EQUATION = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from pops.equation.cli import run_equation_cli
root, models, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
equation = "texture(texture(good/red.png, good/blue.png), good/b.safetensors)"
(root / "started").touch()
run_equation_cli(equation, models, out, num_inference_steps=25, num_samples=8, render="none", base_dir=str(root),
                 echo=lambda line: None, overwrite=True)
"""


@pytest.mark.slow
def test_an_equation_killed_at_a_random_point_then_rerun_gives_the_uninterrupted_result(tmp_path):
    from PIL import Image

    from pops.embeddings.io import load_embeddings, save_embeddings
    from pops.equation.cli import run_equation_cli

    models = models_folder(tmp_path / "models", picture_operator())
    (tmp_path / "good").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "good" / "red.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "good" / "blue.png")
    b = torch.randn(1, 1280, generator=torch.Generator().manual_seed(3))
    save_embeddings(tmp_path / "good" / "b.safetensors", b)
    seed, delay = kill_at_random(EQUATION, tmp_path, models, tmp_path / "killed", window=2.0)
    why = f"seed {seed}, killed {delay:.2f} s in"
    killed = tmp_path / "killed"
    equation = "texture(texture(good/red.png, good/blue.png), good/b.safetensors)"
    settings = dict(
        num_inference_steps=25, num_samples=8, render="none", base_dir=str(tmp_path), echo=lambda line: None
    )
    run_equation_cli(equation, models, killed, overwrite=True, **settings)  # its cache (killed/.cache) is reused
    run_equation_cli(equation, models, tmp_path / "whole", **settings)
    record = json.loads((killed / "record.json").read_text())
    assert record["outputs"]["output"] == "output.safetensors", why
    resumed = load_embeddings(killed / "output.safetensors")[0]
    assert torch.equal(resumed, load_embeddings(tmp_path / "whole" / "output.safetensors")[0]), why
    assert visible_files(killed) == visible_files(tmp_path / "whole"), why
