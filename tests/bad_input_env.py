"""The bad-input suite's world: good files (a tiny operator that takes pictures, a models folder with test data,
pairs, a training config, a generated dataset) and, beside them, every kind of bad file, built once in a folder.
Then the harness: run one case (a CLI command in-process, an API call, a UI request), and judge it — a clean refusal
is a non-zero exit (or the documented exception, or the UI's error status) with ONE line naming the problem, no
traceback, and no file under the folder new or changed. `bad_input_cases.py` holds the case table."""

from __future__ import annotations

import datetime
import importlib
import json
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

DIM = 1280  # the EfficientNet encoder's width: the tiny operator takes pictures
KIND = "texturing"


@dataclass
class Outcome:
    """What a case did: an exit code (CLI) or None, the text it showed, the exception that escaped (if any)."""

    code: int | None
    text: str
    exception: BaseException | None = None
    refused: bool = False  # API / UI: the documented exception was raised, or the error status was shown


@dataclass
class Verdict:
    clean: bool
    traceback: bool
    changed: list[str]
    why: str


# ----- the world -----------------------------------------------------------------------------------------------
def tiny_operator(kind: str = KIND, dim: int = DIM, seed: int = 0):
    from conftest import tiny_prior

    from pops.operators.operator import Operator

    op = Operator.from_prior(tiny_prior(dim=dim, layers=1, heads=2, head_dim=8, seed=seed), kind)
    op.encoder_configs = {"image": {"type": "efficientnet", "resolution": 32, "bf16": False}}
    return op


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height pixels (a decompression bomb: tiny file, huge picture)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _pairs(kind: str = KIND, n: int = 8, dim: int = DIM, seed: int = 0, **extra):
    from pops.base.registry import get_spec
    from pops.embeddings.pairs import Pairs

    g = torch.Generator().manual_seed(seed)
    spec = get_spec(kind)
    slots = [torch.randn(n, dim, generator=g) for _ in spec.slots]
    return Pairs(
        kind, slots, torch.ones(n, spec.num_slots, dtype=torch.bool), torch.randn(n, dim, generator=g), **extra
    )


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _models_folder(root: Path, op, *, classes=("a", "b"), test=None, gallery=None, gallery_meta=None) -> Path:
    from pops.embeddings.files import save_embeddings

    op.save_pretrained(root / "operators" / KIND)
    g = torch.Generator().manual_seed(1)
    test = test if test is not None else _pairs(class_ids=torch.tensor([0, 1] * 4), info={"classes": list(classes)})
    test.save(root / "data" / f"{KIND}-test.safetensors")
    gallery = gallery if gallery is not None else torch.randn(len(classes), test.target.shape[1], generator=g)
    meta = {"operator": KIND, "classes": list(classes)} if gallery_meta is None else gallery_meta
    save_embeddings(root / "data" / f"{KIND}-gallery.safetensors", gallery, meta)
    return root


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def build(root: Path) -> Path:
    """Write the world into `root` (about 25 MB; a few seconds)."""
    from PIL import Image

    from pops.embeddings.files import save_embeddings
    from pops.generate.storage import init_dataset, write_sample

    root = Path(root)
    good, bad = root / "good", root / "bad"
    for folder in (good, bad):
        folder.mkdir(parents=True)
    op = tiny_operator()
    op.save_pretrained(good / "op")
    save_embeddings(good / "a.safetensors", torch.randn(1, DIM, generator=torch.Generator().manual_seed(2)))
    save_embeddings(good / "b.safetensors", torch.randn(1, DIM, generator=torch.Generator().manual_seed(3)))
    Image.new("RGB", (32, 32), "red").save(good / "red.png")
    Image.new("RGB", (32, 32), "blue").save(good / "blue.png")
    _models_folder(root / "models", op)
    _pairs().save(good / "pairs.safetensors")
    _pairs("union").save(good / "pairs-union.safetensors")
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
    save_embeddings_raw(bad / "nan.safetensors", nan)
    torch.save(torch.full((1, DIM), float("inf")), bad / "inf.pt")
    save_embeddings(bad / "wide.safetensors", torch.randn(1, 16))
    torch.save(torch.zeros(0, DIM), bad / "zero.pt")
    torch.save(torch.randn(1, DIM, dtype=torch.complex64), bad / "complex.pt")
    save_embeddings(bad / "rows3.safetensors", torch.randn(3, DIM))
    nan_pairs = _pairs()
    nan_pairs.target[2, 7] = float("nan")
    save_pairs_raw(nan_pairs, bad / "nan-pairs.safetensors")
    _pairs(dim=16).save(bad / "wide-pairs.safetensors")

    # Damaged operator folders.
    for name in ("trunc-weights", "empty-weights", "foreign-config", "no-prior-config", "bad-kind", "nan-guidance"):
        shutil.copytree(good / "op", bad / name)
    _truncate(good / "op" / "model.safetensors", bad / "trunc-weights" / "model.safetensors")
    (bad / "empty-weights" / "model.safetensors").write_bytes(b"")
    (bad / "foreign-config" / "pops_config.json").write_text("[1, 2, 3]\n")
    _edit_config(bad / "no-prior-config", lambda c: c.pop("prior_config"))
    _edit_config(bad / "bad-kind", lambda c: c.update(kind="paint"))
    _edit_config(bad / "nan-guidance", lambda c: c.update(guidance_scale=float("nan")))

    # Damaged models folders (for `pops eval`).
    shutil.copytree(root / "models", root / "models-trunc-weights")
    _truncate(
        good / "op" / "model.safetensors", root / "models-trunc-weights" / "operators" / KIND / "model.safetensors"
    )
    _models_folder(root / "models-no-classes", op, gallery_meta={"operator": KIND})
    _models_folder(root / "models-nan-test", op, test=_nan_test_pairs())
    shutil.copytree(root / "models", root / "models-trunc-test")
    _truncate(good / "pairs.safetensors", root / "models-trunc-test" / "data" / f"{KIND}-test.safetensors")
    wide = _pairs(dim=16, class_ids=torch.tensor([0, 1] * 4), info={"classes": ["a", "b"]})
    _models_folder(root / "models-wide", op, test=wide)
    classless = _pairs(class_ids=torch.tensor([0, -1] * 4), info={"classes": ["a", "b"]})  # -1: training-only rows
    _models_folder(root / "models-classless-test", op, test=classless)
    shutil.copytree(root / "models", root / "models-foreign-op")
    (root / "models-foreign-op" / "operators" / KIND / "pops_config.json").write_text('"a string"\n')
    (root / "models-no-data").mkdir()
    op.save_pretrained(root / "models-no-data" / "operators" / KIND)

    # Training configs.
    _training_configs(root, good, bad)

    # Generated datasets (for `pops embed` and `pops pairs`).
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

    # Folders of a demo run: one holding an operator no demo trained.
    tiny_operator().save_pretrained(root / "demo-foreign" / "operators" / "union")
    from bad_input_world_more import build_more

    build_more(root, good, bad)
    return root


def _nan_test_pairs():
    pairs = _pairs(class_ids=torch.tensor([0, 1] * 4), info={"classes": ["a", "b"]})
    pairs.slots[0][3, 0] = float("nan")
    return _RawPairs(pairs)


class _RawPairs:
    """Pairs saved without Pairs.save's own checks (NaN rows must reach the reader)."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.target = pairs.target

    def save(self, path: Path) -> Path:
        return save_pairs_raw(self.pairs, path)


def save_pairs_raw(pairs, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"present": pairs.present, "target": pairs.target.contiguous()}
    for i, slot in enumerate(pairs.slots):
        tensors[f"slot{i}"] = slot.contiguous()
    if pairs.class_ids is not None:
        tensors["class_ids"] = pairs.class_ids
    save_file(tensors, str(path), metadata={"operator": pairs.kind, "pops": json.dumps(pairs.info)})
    return path


def save_embeddings_raw(path: Path, embeds: torch.Tensor) -> Path:
    from safetensors.torch import save_file

    save_file({"embeddings": embeds.contiguous()}, str(path), metadata={"pops": "{}"})
    return path


def _edit_config(folder: Path, edit) -> None:
    path = folder / "pops_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _training_configs(root: Path, good: Path, bad: Path) -> None:
    from pops.train import train
    from pops.train.config import apply_overrides, config_from_dict

    model = "model: {embedding_dim: 1280, num_layers: 1, num_attention_heads: 2, attention_head_dim: 8}\n"
    base = (
        "operator: texturing\ninit: scratch\nmax_steps: 2\nbatch_size: 4\nprogress: false\n"
        "logging: {every: 0}\nvalidation: {every: 0}\ncheckpoint: {every: 0, at_end: false}\n"
    )

    def config(name: str, extra: str, data: Path = good / "pairs.safetensors", out: str | None = None) -> Path:
        out = out or str(root / "runs" / name)
        return _yaml(bad / f"{name}.yaml", base + model + f"data: {data}\noutput_dir: {out}\n" + extra)

    def load(text: str) -> dict:
        import yaml

        return yaml.safe_load(text)

    _yaml(good / "train.yaml", base + model + f"data: {good / 'pairs.safetensors'}\noutput_dir: {root / 'runs/ok'}\n")
    _yaml(bad / "malformed.yaml", "operator: texturing\nmax_steps: [1, 2\n")
    _yaml(bad / "list.yaml", "- operator\n- texturing\n")
    (bad / "latin1.yaml").write_bytes("operator: caf\xe9\n".encode("latin-1"))
    config("unknown-key", "learning_rate: 0.1\n")
    config("lr-inf", "optim: {lr: .inf}\n")
    config("betas", 'optim: {betas: [0.9, "a"]}\n')
    config("batch-huge", "batch_size: 1000000000\n")
    config("seed-negative", "seed: -1\n")
    config("data-missing", "", data=bad / "missing.safetensors")
    config("data-trunc", "", data=bad / "trunc-pairs.safetensors")
    config("data-nan", "", data=bad / "nan-pairs.safetensors")
    config("data-foreign", "", data=bad / "foreign.safetensors")
    config("data-wrong-kind", "", data=good / "pairs-union.safetensors")
    config("out-holds-operator", "", out=str(good / "op"))
    config("out-unwritable", "", out=str(root / "blocker" / "run"))
    # A checkpoint of a one-layer prior, and a config of a two-layer one that resumes it.
    plain = dict(load(base + model), data=str(good / "pairs.safetensors"))
    train(config_from_dict(apply_overrides(plain, ["checkpoint.every=1", f"output_dir={root / 'ckpt'}"])))
    checkpoint = root / "ckpt" / "checkpoints" / "checkpoint_2"
    bigger = model.replace("num_layers: 1", "num_layers: 2")
    _yaml(
        bad / "resume-other-size.yaml",
        base
        + bigger
        + f"data: {good / 'pairs.safetensors'}\noutput_dir: {root / 'runs/other'}\nresume: {checkpoint}\n",
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


def no_server(*args, **kwargs):
    raise AssertionError("the server would have started: the bad input was not refused")


# ----- the harness -------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under root: (size, mtime) — what a case must leave unchanged."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        state[str(path.relative_to(root))] = ("dir",) if path.is_dir() else (st.st_size, st.st_mtime_ns)
    return state


_APP = None


def cli_app():
    """The full `pops` app, every sub-command registered (what `pops.cli.main` does)."""
    global _APP
    if _APP is None:
        from pops.cli import COMMANDS
        from pops.cli.app import app

        for name in COMMANDS:
            importlib.import_module(f"pops.cli.{name}")
        _APP = app
    return _APP


def run_cli(*args: str) -> Outcome:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app(), [str(a) for a in args])
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.output, exception)


def run_api(call, refusals=(ValueError, TypeError, OSError)) -> Outcome:
    """Call `call()`; the documented refusals are ValueError (pops.base.checks.BadValue is also a TypeError), TypeError
    and OSError (FileNotFoundError, …)."""
    try:
        call()
    except refusals as exc:
        return Outcome(None, str(exc), None, refused=True)
    except Exception as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}", exc)
    return Outcome(None, "(accepted)", None)


def run_ui(call) -> Outcome:
    """A UI request: the page shows the error status ('**Error…'), never 'internal error'."""
    try:
        out = call()
    except Exception as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}", exc)
    text = out.status.replace("**Error:** ", "").replace("**Error**", "").replace("```", "").strip()
    refused = not out.ok and out.status.startswith("**Error") and "internal error" not in out.status
    return Outcome(None, text.splitlines()[0] if refused and text else out.status, None, refused=refused)


def judge(outcome: Outcome, expect: str, before: dict, after: dict, *, api: bool) -> Verdict:
    changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
    lines = [line for line in outcome.text.splitlines() if line.strip()]
    traceback = outcome.exception is not None or "Traceback" in outcome.text
    if api:
        ok = outcome.refused and len(lines) == 1
    else:
        ok = outcome.code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: ")
    ok = ok and expect.lower() in outcome.text.lower() and not traceback and not changed
    why = "" if ok else f"exit {outcome.code}, {len(lines)} line(s): {outcome.text[-400:]!r}; changed {changed[:5]}"
    return Verdict(ok, traceback, changed, why)
