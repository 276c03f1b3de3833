"""The bad-input suite's world: good files (a tiny operator that takes pictures, a models folder with test data,
pairs, a training config, a generated dataset) and, beside them, every kind of bad file, built once in a folder
(about 25 MB; a few seconds). The cases' paths are relative to it: they run there."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path

import torch

from tests.helpers.images import bomb_png
from tests.helpers.models import models_folder
from tests.helpers.pairs import make_pairs, save_raw_embeddings, save_raw_pairs
from tests.helpers.priors import PICTURE_WIDTH, picture_operator, tiny_prior
from tests.helpers.real_stack import released_state

DIM = PICTURE_WIDTH  # the tiny operator takes pictures
KIND = "texturing"
MODEL = "model: {embedding_dim: 1280, num_layers: 1, num_attention_heads: 2, attention_head_dim: 8}\n"
TRAINING = (
    "operator: texturing\ninit: scratch\nmax_steps: 2\nbatch_size: 4\nprogress: false\n"
    "logging: {every: 0}\nvalidation: {every: 0}\ncheckpoint: {every: 0, at_end: false}\n"
)


class World:
    """The built folder (`world / "good/a.safetensors"` is a path in it) and the UI backend serving its models folder
    (made before any case runs: it creates its runs/ folder)."""

    def __init__(self, root: Path):
        from pops.ui.backend import Backend

        self.root = Path(root)
        self.backend = Backend(["models"], self.root / "ui-out")

    def __truediv__(self, other) -> Path:
        return self.root / other


@contextmanager
def entered(root: Path):
    """Build the world in `root` and work in it (the Backend offers "models" relative to the folder the cases run
    in); yields the World, and returns to the previous working folder afterwards."""
    build(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield World(root)
    finally:
        os.chdir(cwd)


def random_pairs(kind: str = KIND, dim: int = DIM, **fields):
    """8 samples of random pairs (nothing to learn): the pairs files of this world."""
    return make_pairs(kind, 8, dim, learnable=False, **fields)


def two_classes() -> dict:
    """Pairs fields: the 8 samples are of classes a and b in turn."""
    return {"class_ids": torch.tensor([0, 1] * 4), "info": {"classes": ["a", "b"]}}


def build(root: Path) -> Path:
    """Write the world into `root`."""
    from PIL import Image

    from pops.embeddings.io import save_embeddings

    root = Path(root)
    good, bad = root / "good", root / "bad"
    for folder in (good, bad):
        folder.mkdir(parents=True)
    op = picture_operator()
    op.save_pretrained(good / "op")
    save_embeddings(good / "a.safetensors", torch.randn(1, DIM, generator=torch.Generator().manual_seed(2)))
    save_embeddings(good / "b.safetensors", torch.randn(1, DIM, generator=torch.Generator().manual_seed(3)))
    Image.new("RGB", (32, 32), "red").save(good / "red.png")
    Image.new("RGB", (32, 32), "blue").save(good / "blue.png")
    models_folder(root / "models", op)
    random_pairs().save(good / "pairs.safetensors")
    random_pairs("union").save(good / "pairs-union.safetensors")
    (good / "out-exists.safetensors").write_bytes((good / "a.safetensors").read_bytes())
    (good / "existing.json").write_text("{}\n")
    (good / "full").mkdir()
    (good / "full" / "keep.txt").write_text("an earlier result\n")
    (root / "blocker").write_text("a file where a folder is expected\n")

    # Bad files of every kind.
    for name in ("empty.safetensors", "empty.pt", "empty.png", "empty.yaml", "empty.json"):
        (bad / name).write_bytes(b"")
    _truncate(good / "a.safetensors", bad / "trunc.safetensors")
    _truncate(good / "red.png", bad / "trunc.png")
    _truncate(good / "pairs.safetensors", bad / "trunc-pairs.safetensors")
    (bad / "foreign.safetensors").write_text('{"not": "a tensor file"}\n')
    (bad / "foreign.pt").write_text("plain text, not a torch file\n")
    torch.save({1, 2, 3}, bad / "set.pt")  # plain data, but no tensor
    torch.save(datetime.date(2024, 1, 1), bad / "pickle.pt")  # an object a pickle rebuilds by calling code
    (bad / "notimage.png").write_text("these bytes are no picture\n")
    (bad / "folder.safetensors").mkdir()
    (bad / "folder.png").mkdir()
    Image.new("RGB", (2, 2), "red").save(bad / "tiny.png")
    bomb_png(bad / "bomb.png")
    nan = torch.randn(1, DIM)
    nan[0, 5] = float("nan")
    save_raw_embeddings(bad / "nan.safetensors", nan)
    torch.save(torch.full((1, DIM), float("inf")), bad / "inf.pt")
    save_embeddings(bad / "wide.safetensors", torch.randn(1, 16))
    torch.save(torch.zeros(0, DIM), bad / "zero.pt")
    torch.save(torch.randn(1, DIM, dtype=torch.complex64), bad / "complex.pt")
    save_embeddings(bad / "rows3.safetensors", torch.randn(3, DIM))
    nan_pairs = random_pairs()
    nan_pairs.target[2, 7] = float("nan")
    save_raw_pairs(nan_pairs, bad / "nan-pairs.safetensors")
    random_pairs(dim=16).save(bad / "wide-pairs.safetensors")
    # Pairs without their second slot (a texturing file that holds one input).
    save_raw_pairs(random_pairs(), bad / "one-slot-pairs.safetensors", drop=("slot1",))
    # Embedding files of integers or booleans (not embeddings, whatever they would cast to), of three dimensions, and
    # safetensors headers that lie: one claiming 2**62 bytes of header, one promising more data than the file holds.
    save_raw_embeddings(bad / "int64.safetensors", torch.randint(-3, 4, (1, DIM)))
    save_raw_embeddings(bad / "int32.safetensors", torch.randint(-3, 4, (1, DIM), dtype=torch.int32))
    torch.save(torch.randint(0, 256, (1, DIM), dtype=torch.uint8), bad / "uint8.pt")
    save_raw_embeddings(bad / "bool.safetensors", torch.ones(1, DIM, dtype=torch.bool))
    save_raw_embeddings(bad / "3d.safetensors", torch.randn(1, 2, DIM))
    (bad / "huge-header.safetensors").write_bytes(struct.pack("<Q", 2**62) + b'{"embeddings": {')
    _lying_header(bad / "lying-header.safetensors")
    os.symlink("models-loop", root / "models-loop")  # a symlink loop where a models folder goes

    # Damaged operator folders.
    for name in ("trunc-weights", "empty-weights", "foreign-config", "no-prior-config", "bad-kind", "nan-guidance"):
        shutil.copytree(good / "op", bad / name)
    _truncate(good / "op" / "model.safetensors", bad / "trunc-weights" / "model.safetensors")
    (bad / "empty-weights" / "model.safetensors").write_bytes(b"")
    (bad / "foreign-config" / "pops_config.json").write_text("[1, 2, 3]\n")
    _edit_config(bad / "no-prior-config", lambda c: c.pop("prior_config"))
    _edit_config(bad / "bad-kind", lambda c: c.update(kind="paint"))
    _edit_config(bad / "nan-guidance", lambda c: c.update(guidance_scale=float("nan")))

    _models_folders(root, good, bad, op)
    _training_configs(root, good, bad)
    _datasets(root, good)
    _released_checkpoints(root, bad)

    # Folders a demo must not write into: a folder holding an operator no demo trained, an output whose report is a
    # folder, one whose operators/ is a file.
    picture_operator().save_pretrained(root / "demo-foreign" / "operators" / "union")
    (root / "demo-report-folder" / "report.html").mkdir(parents=True)
    (root / "demo-operators-file").mkdir()
    (root / "demo-operators-file" / "operators").write_text("a file where the demo puts its operators\n")
    return root


def _models_folders(root: Path, good: Path, bad: Path, op) -> None:
    """Damaged models folders (for `pops eval`), and models folders around damaged operator folders (what
    `pops serve --models` checks before it starts)."""
    shutil.copytree(root / "models", root / "models-trunc-weights")
    _truncate(
        good / "op" / "model.safetensors", root / "models-trunc-weights" / "operators" / KIND / "model.safetensors"
    )
    models_folder(root / "models-no-classes", op, gallery_meta={"operator": KIND})
    models_folder(root / "models-nan-test", op, test=_nan_test_pairs())
    shutil.copytree(root / "models", root / "models-trunc-test")
    _truncate(good / "pairs.safetensors", root / "models-trunc-test" / "data" / f"{KIND}-test.safetensors")
    models_folder(root / "models-wide", op, test=random_pairs(dim=16, **two_classes()))
    classless = random_pairs(class_ids=torch.tensor([0, -1] * 4), info={"classes": ["a", "b"]})  # -1: training-only
    models_folder(root / "models-classless-test", op, test=classless)
    shutil.copytree(root / "models", root / "models-foreign-op")
    (root / "models-foreign-op" / "operators" / KIND / "pops_config.json").write_text('"a string"\n')
    (root / "models-no-data").mkdir()
    op.save_pretrained(root / "models-no-data" / "operators" / KIND)
    shutil.copytree(root / "models", root / "models-empty-test")
    (root / "models-empty-test" / "data" / "texturing-test.safetensors").write_bytes(b"")
    models_folder(root / "models-one-slot-test", op)
    one_slot = root / "models-one-slot-test" / "data" / "texturing-test.safetensors"
    save_raw_pairs(random_pairs(**two_classes()), one_slot, drop=("slot1",))

    for name in ("empty-weights", "bad-kind", "no-prior-config", "nan-guidance"):
        shutil.copytree(bad / name, root / "bad-models" / name / "operators" / "texturing")
    shutil.copytree(good / "op", root / "bad-models" / "wide-config" / "operators" / "texturing")
    config_path = root / "bad-models" / "wide-config" / "operators" / "texturing" / "pops_config.json"
    config = json.loads(config_path.read_text())
    config["prior_config"]["embedding_dim"] = 16
    config["clip_mean"], config["clip_std"] = [0.0] * 16, [1.0] * 16
    config_path.write_text(json.dumps(config))
    shutil.copytree(good / "op", root / "bad-models" / "no-weights" / "operators" / "texturing")
    (root / "bad-models" / "no-weights" / "operators" / "texturing" / "model.safetensors").unlink()


def _training_configs(root: Path, good: Path, bad: Path) -> None:
    from pops.train import train
    from pops.train.config import apply_overrides, config_from_dict

    def config(name: str, extra: str, data: Path = good / "pairs.safetensors", out: str | None = None) -> Path:
        out = out or str(root / "runs" / name)
        return _yaml(bad / f"{name}.yaml", TRAINING + MODEL + f"data: {data}\noutput_dir: {out}\n" + extra)

    def load(text: str) -> dict:
        import yaml

        return yaml.safe_load(text)

    _yaml(
        good / "train.yaml", TRAINING + MODEL + f"data: {good / 'pairs.safetensors'}\noutput_dir: {root / 'runs/ok'}\n"
    )
    _yaml(bad / "malformed.yaml", "operator: texturing\nmax_steps: [1, 2\n")
    _yaml(bad / "list.yaml", "- operator\n- texturing\n")
    (bad / "latin1.yaml").write_bytes("operator: caf\xe9\n".encode("latin-1"))
    config("unknown-key", "learning_rate: 0.1\n")
    config("lr-inf", "optim: {lr: .inf}\n")
    config("lr-nan", "optim: {lr: .nan}\n")
    config("lr-text", "optim: {lr: fast}\n")
    config("betas", 'optim: {betas: [0.9, "a"]}\n')
    config("batch-huge", "batch_size: 1000000000\n")
    config("seed-negative", "seed: -1\n")
    config("seed-text", 'seed: "ten"\n')
    config("precision", "mixed_precision: fp8\n")
    config("data-missing", "", data=bad / "missing.safetensors")
    config("data-trunc", "", data=bad / "trunc-pairs.safetensors")
    config("data-nan", "", data=bad / "nan-pairs.safetensors")
    config("data-foreign", "", data=bad / "foreign.safetensors")
    config("data-wrong-kind", "", data=good / "pairs-union.safetensors")
    config("data-wide", "", data=bad / "wide-pairs.safetensors")
    config("data-one-slot", "", data=bad / "one-slot-pairs.safetensors")
    config("out-holds-operator", "", out=str(good / "op"))
    config("out-unwritable", "", out=str(root / "blocker" / "run"))
    config("steps-huge", "max_steps: 1e12\n")
    config("batch-fractional", "batch_size: 2.5\n")
    config("seed-huge", f"seed: {2**64}\n")
    # A billion laughs: nine levels of nine aliases, 9**9 strings if anything expanded them.
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    _yaml(bad / "alias-bomb.yaml", "\n".join(laughs) + "\n")
    # The same laughs under a real key, whose check would print (and so expand) the value.
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    _yaml(bad / "alias-bomb-key.yaml", f"optim:\n  betas: [{', '.join(levels)}]\n")
    # A checkpoint of a one-layer prior, and a config of a two-layer one that resumes it.
    plain = dict(load(TRAINING + MODEL), data=str(good / "pairs.safetensors"))
    train(config_from_dict(apply_overrides(plain, ["checkpoint.every=1", f"output_dir={root / 'ckpt'}"])))
    checkpoint = root / "ckpt" / "checkpoints" / "checkpoint_2"
    bigger = MODEL.replace("num_layers: 1", "num_layers: 2")
    _yaml(
        bad / "resume-other-size.yaml",
        TRAINING
        + bigger
        + f"data: {good / 'pairs.safetensors'}\noutput_dir: {root / 'runs/other'}\nresume: {checkpoint}\n",
    )


def _datasets(root: Path, good: Path) -> None:
    """Generated datasets (for `pops embed` and `pops pairs`): a good one, ones whose description is missing or
    damaged, whose pictures are damaged, whose manifest points outside the dataset, or that names no operator."""
    from PIL import Image

    from pops.generate.storage import init_dataset, write_sample

    dataset = root / "dataset"
    init_dataset(dataset, {"operator": "union", "seed": 0, "recipe": {}})
    images = {"object_a": Image.new("RGB", (32, 32), "red"), "object_b": Image.new("RGB", (32, 32), "blue")}
    write_sample(dataset, 0, images=images, assets={}, record={}, image_format="png")
    for name, text in (("ds-bad-json", "{not json"), ("ds-foreign-json", '{"format": "other"}'), ("ds-empty-json", "")):
        (root / name).mkdir()
        (root / name / "dataset.json").write_text(text)
    (root / "ds-no-json").mkdir()
    shutil.copytree(dataset, root / "ds-bad-manifest")
    next((root / "ds-bad-manifest" / "samples").glob("*/*/sample.json")).write_text("{truncated")

    _dataset_with_picture(root, "ds-notimage", lambda p: p.write_text("these bytes are no picture\n"))
    _dataset_with_picture(root, "ds-tiny", lambda p: Image.new("RGB", (2, 2), "red").save(p))
    _dataset_with_picture(root, "ds-bomb", bomb_png)
    _dataset_with_picture(root, "ds-trunc-image", lambda p: _truncate(good / "red.png", p))
    shutil.copytree(dataset, root / "ds-escape")
    manifest = next((root / "ds-escape" / "samples").glob("*/*/sample.json"))
    record = json.loads(manifest.read_text())
    record["images"]["object_a"] = "../../../../good/red.png"
    manifest.write_text(json.dumps(record))
    shutil.copytree(dataset, root / "ds-paint")
    info_path = root / "ds-paint" / "dataset.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "operator": "paint"}))


def _released_checkpoints(root: Path, bad: Path) -> None:
    """For `pops models`: a tiny Kandinsky prior (32-d), released-style checkpoints on it, damaged ones."""
    tiny_prior(dim=32, seed=0).save_pretrained(root / "kprior" / "prior")
    released = root / "released" / "models" / "texturing" / "learned_prior.pth"
    released.parent.mkdir(parents=True)
    torch.save(released_state(1), released)
    _truncate(released, bad / "trunc.pth")
    torch.save(released_state(1, dim=16), bad / "wide.pth")
    nan = released_state(1)
    next(iter(nan.values())).view(-1)[0] = float("nan")
    torch.save(nan, bad / "nan.pth")
    fewer = released_state(1)
    fewer.pop(next(k for k in fewer if k.startswith("transformer_blocks.")))
    torch.save(fewer, bad / "missing-layer.pth")
    (root / "released-empty").mkdir()
    (root / "renderer-existing").mkdir()
    (root / "renderer-existing" / "renderer.json").write_text('{"type": "kandinsky"}\n')


def _nan_test_pairs():
    pairs = random_pairs(**two_classes())
    pairs.slots[0][3, 0] = float("nan")
    return _RawPairs(pairs)


class _RawPairs:
    """Pairs saved without Pairs.save's own checks (NaN rows must reach the reader)."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.target = pairs.target

    def save(self, path: Path) -> Path:
        return save_raw_pairs(self.pairs, path)


def _dataset_with_picture(root: Path, name: str, write) -> None:
    """A copy of the world's dataset whose first picture is replaced by `write(path)`."""
    shutil.copytree(root / "dataset", root / name)
    picture = next((root / name / "samples").glob("*/*/object_a.png"))
    write(picture)


def _lying_header(path: Path) -> Path:
    """A safetensors file whose header promises a (1, DIM) float32 tensor that the file holds 16 bytes of."""
    entry = {"dtype": "F32", "shape": [1, DIM], "data_offsets": [0, 4 * DIM]}
    header = json.dumps({"embeddings": entry}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return path


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _edit_config(folder: Path, edit) -> None:
    path = folder / "pops_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
