"""More of the bad-input world (see bad_input_env.build, which calls `build_more`): pairs and models folders with
a slot missing, a tiny Kandinsky prior with released-style checkpoints (for `pops models`), datasets with damaged
pictures or a manifest that points outside its folder, training configs of the wrong width, slots, types and
precision, and folders a demo must not write into."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def _raw_pairs(pairs, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """Pairs written without Pairs.save's checks, with the tensors named in `drop` left out."""
    import json

    from safetensors.torch import save_file

    tensors = {"present": pairs.present, "target": pairs.target.contiguous()}
    for i, slot in enumerate(pairs.slots):
        tensors[f"slot{i}"] = slot.contiguous()
    if pairs.class_ids is not None:
        tensors["class_ids"] = pairs.class_ids
    tensors = {k: v for k, v in tensors.items() if k not in drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"operator": pairs.kind, "pops": json.dumps(pairs.info)})
    return path


def _released_state(seed: int, dim: int = 32) -> dict:
    from conftest import tiny_prior

    from pops.operators import checkpoint

    state = tiny_prior(dim=dim, seed=seed).state_dict()
    return {k: v for k, v in state.items() if k not in checkpoint.CLIP_STATS}


def _dataset_with_picture(root: Path, name: str, write) -> None:
    """A copy of the world's dataset whose first picture is replaced by `write(path)`."""
    shutil.copytree(root / "dataset", root / name)
    picture = next((root / name / "samples").glob("*/*/object_a.png"))
    write(picture)


def build_more(root: Path, good: Path, bad: Path) -> None:
    import json

    from bad_input_env import _models_folder, _pairs, _truncate, _yaml, bomb_png, tiny_operator
    from conftest import tiny_prior
    from PIL import Image

    # Pairs without their second slot (a texturing file that holds one input).
    _raw_pairs(_pairs(), bad / "one-slot-pairs.safetensors", drop=("slot1",))
    op = tiny_operator()
    shutil.copytree(root / "models", root / "models-empty-test")
    (root / "models-empty-test" / "data" / "texturing-test.safetensors").write_bytes(b"")
    one_slot = _pairs(class_ids=torch.tensor([0, 1] * 4), info={"classes": ["a", "b"]})
    _models_folder(root / "models-one-slot-test", op)
    _raw_pairs(one_slot, root / "models-one-slot-test" / "data" / "texturing-test.safetensors", drop=("slot1",))

    # Models folders around damaged operator folders (what `pops serve --models` checks before it starts).
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

    # `pops models`: a tiny Kandinsky prior (32-d) and released-style checkpoints on it.
    tiny_prior(dim=32, seed=0).save_pretrained(root / "kprior" / "prior")
    released = root / "released" / "models" / "texturing" / "learned_prior.pth"
    released.parent.mkdir(parents=True)
    torch.save(_released_state(1), released)
    _truncate(released, bad / "trunc.pth")
    torch.save(_released_state(1, dim=16), bad / "wide.pth")
    nan = _released_state(1)
    next(iter(nan.values())).view(-1)[0] = float("nan")
    torch.save(nan, bad / "nan.pth")
    fewer = _released_state(1)
    fewer.pop(next(k for k in fewer if k.startswith("transformer_blocks.")))
    torch.save(fewer, bad / "missing-layer.pth")
    (root / "released-empty").mkdir()
    (root / "renderer-existing").mkdir()
    (root / "renderer-existing" / "renderer.json").write_text('{"type": "kandinsky"}\n')

    # Datasets whose pictures are damaged, or whose manifest points outside the dataset, or names no operator.
    _dataset_with_picture(root, "ds-notimage", lambda p: p.write_text("these bytes are no picture\n"))
    _dataset_with_picture(root, "ds-tiny", lambda p: Image.new("RGB", (2, 2), "red").save(p))
    _dataset_with_picture(root, "ds-bomb", bomb_png)
    _dataset_with_picture(root, "ds-trunc-image", lambda p: _truncate(good / "red.png", p))
    shutil.copytree(root / "dataset", root / "ds-escape")
    manifest = next((root / "ds-escape" / "samples").glob("*/*/sample.json"))
    record = json.loads(manifest.read_text())
    record["images"]["object_a"] = "../../../../good/red.png"
    manifest.write_text(json.dumps(record))
    shutil.copytree(root / "dataset", root / "ds-paint")
    info_path = root / "ds-paint" / "dataset.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "operator": "paint"}))

    # Training configs.
    model = "model: {embedding_dim: 1280, num_layers: 1, num_attention_heads: 2, attention_head_dim: 8}\n"
    base = (
        "operator: texturing\ninit: scratch\nmax_steps: 2\nbatch_size: 4\nprogress: false\n"
        "logging: {every: 0}\nvalidation: {every: 0}\ncheckpoint: {every: 0, at_end: false}\n"
    )

    def config(name: str, extra: str, data: Path = good / "pairs.safetensors") -> None:
        _yaml(bad / f"{name}.yaml", base + model + f"data: {data}\noutput_dir: {root / 'runs' / name}\n" + extra)

    config("data-wide", "", data=bad / "wide-pairs.safetensors")
    config("data-one-slot", "", data=bad / "one-slot-pairs.safetensors")
    config("seed-text", 'seed: "ten"\n')
    config("lr-text", "optim: {lr: fast}\n")
    config("precision", "mixed_precision: fp8\n")
    config("lr-nan", "optim: {lr: .nan}\n")

    # Folders a demo must not write into: an operator folder, a dataset, and an output whose report is a folder.
    (root / "demo-report-folder" / "report.html").mkdir(parents=True)
    (root / "demo-operators-file").mkdir()
    (root / "demo-operators-file" / "operators").write_text("a file where the demo puts its operators\n")
