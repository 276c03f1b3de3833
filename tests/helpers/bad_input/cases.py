"""THE bad-input case table, the one place every case is declared: every entry point (the CLI commands, the Python
API, equations, the UI backend) against every kind of bad input, one section per entry point.

A case is (entry point, kind, expected words of the one-line message, what to run); paths are relative to the world
`tests.helpers.bad_input.world.build` writes (the cases run there). `tests/test_bad_input.py` runs each case;
`python -m tests.helpers.bad_input` prints the table of kinds x entry points."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.bad_input.harness import api_outcome, cli_outcome, ui_outcome

KINDS = {
    "missing": "missing file or folder",
    "folder": "a folder where a file goes (or the reverse)",
    "empty": "empty file",
    "truncated": "truncated file",
    "foreign": "foreign file (other bytes, another format or operator)",
    "width": "embeddings of the wrong width",
    "classless": "test pairs without a true class for every sample",
    "nan": "NaN / inf values",
    "slots": "wrong number of inputs or slots",
    "operator": "unknown or absent operator",
    "unwritable": "unwritable output",
    "existing": "existing output",
    "notimage": "non-image bytes named .png",
    "tiny": "tiny image (2x2)",
    "huge": "huge image (decompression bomb)",
    "config": "malformed config / YAML / record",
    "equation": "pathological equation",
    "number": "bad number (guidance, steps, seed, counts, lr)",
    "memory": "request larger than the machine's memory",
    "work": "request no machine would finish in a day",
    "type": "argument of the wrong type",
    "device": "unknown or absent device, unknown precision",
}
ENTRIES = (
    "apply", "eval", "demo", "train", "embed", "render", "pairs", "generate", "distill", "serve",
    "models", "api", "equation", "ui",
)  # fmt: skip


@dataclass
class Case:
    entry: str
    kind: str
    expect: str  # words the one-line message must hold (case-insensitive)
    run: Callable  # (world) -> Outcome
    api: bool = False  # judged as an API call / UI request (no exit code)

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.kind}-{self.expect[:24]}".replace(" ", "_")


CASES: list[Case] = []


def cli(entry: str, kind: str, expect: str, *args) -> None:
    CASES.append(Case(entry, kind, expect, lambda world, args=args: cli_outcome(*args)))


def api(entry: str, kind: str, expect: str, call: Callable) -> None:
    CASES.append(Case(entry, kind, expect, lambda world, call=call: api_outcome(lambda: call(world)), api=True))


def ui(kind: str, expect: str, call: Callable) -> None:
    CASES.append(Case("ui", kind, expect, lambda world, call=call: ui_outcome(lambda: call(world)), api=True))


A, B, OP = "good/a.safetensors", "good/b.safetensors", "good/op"
# Integer and boolean embedding files: not embeddings, whatever they would cast to (fp16/bf16/fp32/fp64 are read).
INTEGERS = ("bad/int64.safetensors", "bad/int32.safetensors", "bad/uint8.pt", "bad/bool.safetensors")
FLOATS = "floating-point numbers"
# An output that is a device, which takes no bytes (Linux only; refused before anything is written).
DEV_FULL = "/dev/full"
HAS_DEV_FULL = Path(DEV_FULL).exists()
DEVICES = (  # every command that places models takes these: (flag, value, expected words)
    ("--device", "cuda:99", "cuda:99"),  # no such GPU here (no CUDA at all, or fewer than 100)
    ("--dtype", "fp8", "unknown dtype"),
)


# ----- pops apply (one operator on files; an operator's name with pictures) -------------------------------------
def apply(kind, expect, *inputs, model=OP, out="out.safetensors", extra=()):
    cli("apply", kind, expect, "apply", *inputs, "-m", model, "-o", out, "--steps", "2", *extra)


apply("missing", "no such embedding file", A, "bad/missing.safetensors")
apply("missing", "no such operator folder", A, B, model="bad/no-operator")
apply("missing", "no such image", A, "bad/missing.png")
apply("folder", "is a folder", A, "bad/folder.safetensors")
apply("folder", "is a folder", A, "bad/folder.png")
apply("folder", "not a pops operator folder", A, B, model="good/a.safetensors")
apply("empty", "empty file", A, "bad/empty.safetensors")
apply("empty", "empty file", A, "bad/empty.pt")
apply("empty", "empty file", A, B, model="bad/empty-weights")
apply("truncated", "not a readable safetensors", A, "bad/trunc.safetensors")
apply("truncated", "not a readable safetensors", A, B, model="bad/trunc-weights")
apply("truncated", "not a readable image", A, "bad/trunc.png")
apply("foreign", "not a readable safetensors", A, "bad/foreign.safetensors")
apply("foreign", "not a plain embedding file", A, "bad/foreign.pt")
apply("foreign", "expected a tensor, got set", A, "bad/set.pt")
apply("foreign", "objects other than tensors", A, "bad/pickle.pt")
apply("foreign", "not an operator config", A, B, model="bad/foreign-config")
apply("width", "width 16, expected 1280", A, "bad/wide.safetensors")
apply("width", "no embeddings", A, "bad/zero.pt")
apply("nan", "NaN or inf", A, "bad/nan.safetensors")
apply("nan", "NaN or inf", A, "bad/inf.pt")
apply("type", "real numbers", A, "bad/complex.pt")
for path in INTEGERS:
    apply("type", FLOATS, A, path)
apply("width", "expected shape (N, D)", A, "bad/3d.safetensors")
apply("foreign", "header too large", A, "bad/huge-header.safetensors")
apply("truncated", "not a readable safetensors", A, "bad/lying-header.safetensors")
if HAS_DEV_FULL:
    apply("unwritable", "already exists", A, B, out=DEV_FULL)
apply("slots", "takes 2 inputs", A)
apply("slots", "takes 2 inputs", A, B, A)
apply("operator", "unknown operator 'paint'", A, B, model="bad/bad-kind")
apply("unwritable", "not writable", A, B, out="blocker/out.safetensors")
apply("existing", "already exists", A, B, out="good/out-exists.safetensors")
apply("existing", "is a folder", A, B, out="good/full")
apply("notimage", "not a readable image", A, "bad/notimage.png")
apply("tiny", "at least 8 pixels", A, "bad/tiny.png")
apply("huge", "decompression bomb", A, "bad/bomb.png")
apply("config", "prior_config", A, B, model="bad/no-prior-config")
apply("config", "guidance_scale", A, B, model="bad/nan-guidance")
apply("config", "must end in .safetensors", A, B, out="out.txt")
for value, expect in (("nan", "finite"), ("inf", "finite"), ("0", "[1, 100]"), ("-3", "[1, 100]"), ("1e30", "1e+30")):
    apply("number", expect, A, B, extra=("-g", value))
for flag, value in (
    ("--seed", "-1"),
    ("--seed", str(2**64)),
    ("--steps", "0"),
    ("--steps", "100000"),
    ("-n", "0"),
    ("--draws", "0"),
):
    apply("number", flag.lstrip("-") if flag != "-n" else "num-samples", A, B, extra=(flag, value))
apply("memory", "memory", A, B, extra=("-n", "1000000000"))
apply("type", "valid integer", A, B, extra=("--steps", "2.5"))
apply("type", "layout must be one of", A, B, extra=("--layout", "diagonal"))
apply("type", "unknown sampler", A, B, extra=("--sampler", "euler"))
for flag, value, expect in (*DEVICES, ("--device", "gpu", "unknown device"), ("--generator-device", "cuda", "cuda")):
    apply("device", expect, A, B, extra=(flag, value))
# An operator's name with pictures: `pops apply texturing a.png b.png -n 4 -o out/`.
PICTURES = ("--models", "models", "--render", "none", "--steps", "2")


def pictures(kind, expect, *inputs, out="pictures-out", extra=()):
    cli("apply", kind, expect, "apply", "texturing", *inputs, *PICTURES, "-n", "4", "-o", out, *extra)


pictures("notimage", "not a readable image", "good/red.png", "bad/notimage.png")
pictures("tiny", "at least 8 pixels", "good/red.png", "bad/tiny.png")
pictures("huge", "megapixels", "bad/bomb.png", "good/blue.png")
pictures("missing", "not found", "good/red.png", "bad/missing.png")
pictures("slots", "texture", "good/red.png")
pictures("memory", "memory", "good/red.png", "good/blue.png", extra=("-n", "1000000000"))
pictures("number", "steps", "good/red.png", "good/blue.png", extra=("--steps", "100000"))
pictures("existing", "already exists", "good/red.png", "good/blue.png", out="good/full")
pictures("device", "cuda:99", "good/red.png", "good/blue.png", extra=("--device", "cuda:99"))

# ----- pops eval ---------------------------------------------------------------------------------------------------
cli("eval", "missing", "no such models folder", "eval", "--models", "bad/no-models")
cli("eval", "folder", "no such models folder", "eval", "--models", A)
cli("eval", "missing", "no evaluation data", "eval", "--models", "models-no-data")
cli("eval", "missing", "no evaluation data", "eval", "--models", "models", "--data", "bad/no-data")
cli("eval", "truncated", "not a readable safetensors", "eval", "--models", "models-trunc-weights")
cli("eval", "truncated", "not a readable safetensors", "eval", "--models", "models-trunc-test")
cli("eval", "foreign", "not an operator config", "eval", "--models", "models-foreign-op")
cli("eval", "config", "one class name per embedding", "eval", "--models", "models-no-classes")
cli("eval", "nan", "NaN or inf", "eval", "--models", "models-nan-test")
cli("eval", "width", "16-d", "eval", "--models", "models-wide")
cli("eval", "classless", "true class of every sample", "eval", "--models", "models-classless-test")
cli("eval", "operator", "unknown operator 'paint'", "eval", "--models", "models", "--operator", "paint")
cli("eval", "operator", "no trained 'union'", "eval", "--models", "models", "--operator", "union")
cli("eval", "unwritable", "not writable", "eval", "--models", "models", "-o", "blocker/t.json")
cli("eval", "existing", "already exists", "eval", "--models", "models", "-o", "good/existing.json")
cli("eval", "config", "must end in .json", "eval", "--models", "models", "-o", "t.txt")
cli("eval", "number", "seeds", "eval", "--models", "models", "--seeds", "0")
cli("eval", "work", "would take", "eval", "--models", "models", "--seeds", "1000000000000000")
cli("eval", "number", "steps", "eval", "--models", "models", "--steps", "100000")
cli("eval", "number", "threads", "eval", "--models", "models", "--threads", "5000")
cli("eval", "number", "threads", "eval", "--models", "models", "--threads", "0")
cli("eval", "missing", "no such models folder", "eval", "--models", "models-loop")  # a symlink loop
if HAS_DEV_FULL:
    cli("eval", "unwritable", "must end in .json", "eval", "--models", "models", "-o", DEV_FULL)
cli("eval", "number", "guidance", "eval", "--models", "models", "--guidance", "nan")
cli("eval", "type", "valid integer", "eval", "--models", "models", "--seeds", "two")
cli("eval", "empty", "empty file", "eval", "--models", "models-empty-test")
cli("eval", "slots", "slot1", "eval", "--models", "models-one-slot-test")
cli("eval", "type", "unknown sampler", "eval", "--models", "models", "--sampler", "euler")
cli("eval", "number", "--draws", "eval", "--models", "models", "--draws", "0")
for flag, value, expect in DEVICES:
    cli("eval", "device", expect, "eval", "--models", "models", flag, value)

# ----- pops demo (refused before any work) -------------------------------------------------------------------------
DEMO = ("demo", "--quick", "--no-progress", "-o", "demo-out")
for args, kind, expect in (
    (("--steps", "0"), "number", "steps"),
    (("--seed", "-1"), "number", "seed"),
    (("--seed", str(2**32)), "number", "seed"),
    (("--threads", "5000"), "number", "threads"),
    (("--threads", "0"), "number", "threads"),
    (("--seed", str(2**64)), "number", "seed"),
    (("--workers", "0"), "number", "workers"),
    (("--eval-seeds", "0"), "number", "eval_seeds"),
    (("--train-per-class", "0"), "number", "train_per_class"),
    (("--guidance", "nan"), "number", "guidance"),
    (("--guidance", "0.5"), "number", "guidance"),
    (("--batch-size", "1000000000"), "memory", "memory"),
    (("--operator", "paint"), "operator", "unknown operator 'paint'"),
    (("--cache-dir", "blocker/cache"), "unwritable", "not writable"),
    (("--cache-dir", A), "folder", "is a file"),
    (("--steps", "ten"), "type", "valid integer"),
):
    cli("demo", kind, expect, *DEMO, *args)
cli("demo", "unwritable", "not writable", "demo", "--quick", "--no-progress", "-o", "blocker/demo")
if HAS_DEV_FULL:
    cli("demo", "unwritable", "is a file", "demo", "--quick", "--no-progress", "-o", DEV_FULL)
cli("demo", "folder", "is a file", "demo", "--quick", "--no-progress", "-o", A)
cli(
    "demo",
    "existing",
    "no demo trained",
    "demo",
    "--quick",
    "--no-progress",
    "-o",
    "demo-foreign",
    "--operator",
    "union",
)
cli("demo", "foreign", "operator folder", *DEMO[:3], "-o", OP)
cli("demo", "foreign", "dataset", *DEMO[:3], "-o", "dataset")
cli("demo", "folder", "report.html", *DEMO[:3], "-o", "demo-report-folder")
cli("demo", "folder", "operators", *DEMO[:3], "-o", "demo-operators-file")


# Its settings: the Python config (`pops.demo.quick_config`).
def demo_settings(kind, expect, **settings):
    def call(world):
        from pops.demo import quick_config, run_demo

        return run_demo(quick_config(out=world / "demo-api", progress=False, **settings))

    api("demo", kind, expect, call)


demo_settings("config", "unknown key", world={"shape": ("circle", "square")})
demo_settings("config", "unicorn", world={"shapes": ("circle", "unicorn")})
demo_settings("empty", "textures", world={"textures": ()})
demo_settings("operator", "unknown operators", train_per_class={"paint": 1})
demo_settings("slots", "at least one operator", operators=())
demo_settings("width", "multiple of 64", width=100)
demo_settings("nan", "lr", lr=float("nan"))
demo_settings("nan", "holdout", world={"holdout": float("nan")})
demo_settings("tiny", "image_size", image_size=8)
demo_settings("tiny", "encoder_resolution", encoder_resolution=16)
demo_settings("huge", "image_size", image_size=100000)
demo_settings("type", "must be an integer", steps="10")

# ----- pops train --------------------------------------------------------------------------------------------------
for config, kind, expect in (
    ("bad/missing.yaml", "missing", "no such config file"),
    ("bad/folder.png", "folder", "is a folder"),
    ("bad/empty.yaml", "empty", "empty file"),
    ("bad/malformed.yaml", "config", "invalid YAML"),
    ("bad/list.yaml", "config", "a mapping"),
    ("bad/latin1.yaml", "config", "not UTF-8"),
    ("bad/unknown-key.yaml", "config", "unknown key 'learning_rate'"),
    ("bad/betas.yaml", "config", "optim.betas"),
    ("bad/lr-inf.yaml", "number", "optim.lr"),
    ("bad/seed-negative.yaml", "number", "seed"),
    ("bad/batch-huge.yaml", "memory", "memory"),
    ("bad/data-missing.yaml", "missing", "no such pairs file"),
    ("bad/data-trunc.yaml", "truncated", "not a readable safetensors"),
    ("bad/data-foreign.yaml", "foreign", "not a readable safetensors"),
    ("bad/data-nan.yaml", "nan", "NaN or inf"),
    ("bad/data-wrong-kind.yaml", "operator", "for 'union'"),
    ("bad/out-holds-operator.yaml", "existing", "already holds a trained operator"),
    ("bad/out-unwritable.yaml", "unwritable", "blocker"),
    ("bad/resume-other-size.yaml", "config", "cannot load"),
    ("bad/alias-bomb.yaml", "config", "aliases"),
    ("bad/alias-bomb-key.yaml", "config", "aliases"),
    ("bad/steps-huge.yaml", "number", "max_steps"),
    ("bad/batch-fractional.yaml", "type", "batch_size"),
    ("bad/seed-huge.yaml", "number", "seed"),
):
    cli("train", kind, expect, "train", config, "--no-progress")
cli("train", "config", "expected key=value", "train", "good/train.yaml", "-o", "max_steps")
cli("train", "config", "not YAML", "train", "good/train.yaml", "-o", "optim.betas=[0.9")
cli("train", "operator", "unknown 'paint'", "train", "good/train.yaml", "-o", "operator=paint")
cli("train", "number", "max_steps", "train", "good/train.yaml", "-o", "max_steps=0")
cli("train", "missing", "no such checkpoint folder", "train", "good/train.yaml", "--resume", "bad/no-checkpoint")
for config, kind, expect in (
    ("bad/data-wide.yaml", "width", "16"),
    ("bad/data-one-slot.yaml", "slots", "slot1"),
    ("bad/seed-text.yaml", "type", "seed"),
    ("bad/lr-text.yaml", "type", "optim.lr"),
    ("bad/lr-nan.yaml", "nan", "optim.lr"),
    ("bad/precision.yaml", "device", "mixed_precision"),
):
    cli("train", kind, expect, "train", config, "--no-progress")

# ----- pops embed / pops pairs -------------------------------------------------------------------------------------
for entry, out in (("embed", "cache-out"), ("pairs", "pairs-out.safetensors")):
    cli(entry, "missing", "no such dataset folder", entry, "bad/no-dataset", "-o", out, "--no-progress")
    cli(entry, "folder", "no such dataset folder", entry, A, "-o", out, "--no-progress")
    cli(entry, "missing", "not a generated dataset", entry, "ds-no-json", "-o", out, "--no-progress")
    cli(entry, "empty", "empty file", entry, "ds-empty-json", "-o", out, "--no-progress")
    cli(entry, "truncated", "invalid JSON", entry, "ds-bad-json", "-o", out, "--no-progress")
    cli(entry, "foreign", "not a dataset description", entry, "ds-foreign-json", "-o", out, "--no-progress")
    cli(entry, "config", "not a sample manifest", entry, "ds-bad-manifest", "-o", out, "--no-progress")
    cli(entry, "number", "batch-size", entry, "dataset", "-o", out, "--batch-size", "0")
    cli(entry, "number", "resolution", entry, "dataset", "-o", out, "--resolution", "33")
    cli(entry, "config", "--encoder must be one of", entry, "dataset", "-o", out, "--encoder", "resnet")
    cli(entry, "type", "valid integer", entry, "dataset", "-o", out, "--batch-size", "many")
    for flag, value, expect in DEVICES:
        cli(entry, "device", expect, entry, "dataset", "-o", out, flag, value)
    cli(entry, "operator", "unknown operator 'paint'", entry, "ds-paint", "-o", out, "--no-progress")
    cli(entry, "tiny", "resolution", entry, "dataset", "-o", out, "--resolution", "16")
    cli(entry, "huge", "resolution", entry, "dataset", "-o", out, "--resolution", "99968")
    cli(entry, "memory", "memory", entry, "dataset", "-o", out, "--resolution", "1024", "--batch-size", "100000")
    cli(entry, "missing", "no such folder", entry, "dataset", "-o", out, "--encoder", "clip", "--clip-model", "bad/x/y")
cli("embed", "folder", "is a file", "embed", "dataset", "-o", A)
cli("embed", "unwritable", "not writable", "embed", "dataset", "-o", "blocker/cache")
if HAS_DEV_FULL:
    cli("embed", "unwritable", "is a file", "embed", "dataset", "-o", DEV_FULL)
cli("pairs", "existing", "already exists", "pairs", "dataset", "-o", "good/out-exists.safetensors")
cli("pairs", "folder", "is a folder", "pairs", "dataset", "-o", "good/full")
cli("pairs", "unwritable", "not writable", "pairs", "dataset", "-o", "blocker/p.safetensors")
cli("embed", "config", "outside", "embed", "ds-escape", "-o", "cache-out", "--no-progress")
cli("embed", "existing", "dataset folder itself", "embed", "dataset", "-o", "dataset", "--no-progress")
cli("pairs", "number", "seed", "pairs", "dataset", "-o", "p.safetensors", "--seed", "-1")
cli("pairs", "number", "seed", "pairs", "dataset", "-o", "p.safetensors", "--seed", str(2**64))

# ----- pops render (checked before any model loads) ----------------------------------------------------------------
RENDER = ("-o", "render-out")
RENDER_A = ("render", A, *RENDER)
for path, kind, expect in (
    ("bad/missing.safetensors", "missing", "no such embedding file"),
    ("bad/folder.safetensors", "folder", "is a folder"),
    ("bad/empty.safetensors", "empty", "empty file"),
    ("bad/trunc.safetensors", "truncated", "not a readable safetensors"),
    ("bad/foreign.safetensors", "foreign", "not a readable safetensors"),
    ("bad/nan.safetensors", "nan", "NaN or inf"),
    ("bad/zero.pt", "width", "no embeddings"),
    ("bad/complex.pt", "type", "real numbers"),
    ("bad/int64.safetensors", "type", FLOATS),
    ("bad/uint8.pt", "type", FLOATS),
    ("bad/3d.safetensors", "width", "expected shape (N, D)"),
    ("bad/huge-header.safetensors", "foreign", "header too large"),
):
    cli("render", kind, expect, "render", path, *RENDER)
cli("render", "config", "--render must be one of", *RENDER_A, "--render", "dalle")
cli("render", "existing", "already exists", "render", A, "-o", "good/full")
cli("render", "folder", "is a file", "render", A, "-o", A)
cli("render", "unwritable", "not writable", "render", A, "-o", "blocker/pictures")
cli("render", "missing", "needs --structure", *RENDER_A, "--render", "ipadapter-depth")
cli("render", "missing", "no such structure image", *RENDER_A, "--render", "ipadapter-depth", "--structure", "x.png")
for flag, value in (("--steps", "0"), ("--steps", "5000"), ("--guidance", "nan"), ("--seed", "-1"), ("--size", "5000")):
    cli("render", "number", flag.lstrip("-"), *RENDER_A, flag, value)
cli("render", "number", "batch-size", *RENDER_A, "--batch-size", "0")
cli("render", "number", "seed", *RENDER_A, "--seed", str(2**64))
if HAS_DEV_FULL:
    cli("render", "unwritable", "is a file", "render", A, "-o", DEV_FULL)
cli("render", "tiny", "size", *RENDER_A, "--size", "2")
cli("render", "huge", "size", *RENDER_A, "--size", "100000")
DEPTH = (*RENDER_A, "--render", "ipadapter-depth", "--structure")
cli("render", "notimage", "not a readable structure image", *DEPTH, "bad/notimage.png")
cli("render", "huge", "megapixels", *DEPTH, "bad/bomb.png")
cli("render", "tiny", "at least 8 pixels", *DEPTH, "bad/tiny.png")
cli("render", "missing", "no such folder", *RENDER_A, "--decoder", "bad/no/decoder")
for flag, value, expect in (*DEVICES, ("--generator-device", "cuda", "cuda")):
    cli("render", "device", expect, *RENDER_A, flag, value)

# ----- pops generate (checked before any model loads) --------------------------------------------------------------
GEN = ("-o", "gen-out", "-n", "2", "--no-progress")
UNION = ("generate", "union", *GEN)
cli("generate", "operator", "unknown operator 'paint'", "generate", "paint", *GEN)
cli("generate", "config", "KEY=VALUE", *UNION, "--option", "max_iou")
cli("generate", "config", "unknown", *UNION, "--option", "no_such_setting=1")
cli("generate", "config", "jpg or png", *UNION, "--image-format", "gif")
cli("generate", "folder", "is not a folder", "generate", "union", "-o", A, "-n", "2")
cli("generate", "number", "num-samples", "generate", "union", "-o", "gen-out", "-n", "0")
cli("generate", "number", "seed", *UNION, "--seed", "-1")
cli("generate", "number", "seed", *UNION, "--seed", str(2**64))
if HAS_DEV_FULL:
    cli("generate", "unwritable", "is not a folder", "generate", "union", "-o", DEV_FULL, "-n", "2")
cli("generate", "number", "turbo-steps", *UNION, "--turbo-steps", "100000")
cli("generate", "number", "inpaint-guidance", *UNION, "--inpaint-guidance", "nan")
cli("generate", "number", "image-size", *UNION, "--image-size", "2")
cli("generate", "type", "valid integer", "generate", "union", "-o", "gen-out", "-n", "lots")
cli("generate", "empty", "empty file", "generate", "union", "-o", "ds-empty-json", "-n", "2")
cli("generate", "truncated", "invalid JSON", "generate", "union", "-o", "ds-bad-json", "-n", "2")
cli("generate", "foreign", "not a dataset description", "generate", "union", "-o", "ds-foreign-json", "-n", "2")
cli("generate", "existing", "different seed", "generate", "union", "-o", "dataset", "-n", "2", "--seed", "5")
cli("generate", "existing", "different operator", "generate", "scene", "-o", "dataset", "-n", "2")
cli("generate", "unwritable", "not writable", "generate", "union", "-o", "blocker/data", "-n", "2")
cli("generate", "missing", "no such folder", *UNION, "--models-from", "bad/no-models")
cli("generate", "tiny", "segmenter-size", *UNION, "--segmenter-size", "2")
cli("generate", "huge", "image-size", *UNION, "--image-size", "100000")
cli("generate", "nan", "depth-guidance", *UNION, "--depth-guidance", "inf")
for flag, value, expect in DEVICES:
    cli("generate", "device", expect, *UNION, flag, value)

# ----- pops distill ------------------------------------------------------------------------------------------------
P = "good/pairs.safetensors"


def distill(kind, expect, teacher=OP, data=P, out="student", extra=()):
    cli("distill", kind, expect, "distill", teacher, "--data", data, "-o", out, "--steps", "2", *extra)


distill("missing", "not an operator folder", teacher="bad/no-operator")
distill("folder", "not an operator folder", teacher=A)
distill("truncated", "not a readable safetensors", teacher="bad/trunc-weights")
distill("foreign", "not an operator config", teacher="bad/foreign-config")
distill("missing", "no such pairs file", data="bad/missing.safetensors")
distill("empty", "empty file", data="bad/empty.safetensors")
distill("truncated", "not a readable safetensors", data="bad/trunc-pairs.safetensors")
distill("foreign", "not a pops pairs file", data=A)
distill("nan", "NaN or inf", data="bad/nan-pairs.safetensors")
distill("width", "16-d", data="bad/wide-pairs.safetensors")
distill("operator", "for 'union'", data="good/pairs-union.safetensors")
distill("existing", "already exists", out="good/full")
distill("unwritable", "not writable", out="blocker/student")
distill("existing", "teacher's own folder", out=OP, extra=("--overwrite",))
for flag, value in (("--lr", "inf"), ("--batch-size", "0"), ("--threads", "5000"), ("--seed", "-1"), ("--noises", "0")):
    distill("number", flag.lstrip("-"), extra=(flag, value))
distill("memory", "memory", extra=("--batch-size", "1000000000000"))
distill("number", "threads", extra=("--threads", "0"))
distill("type", "valid number", extra=("--lr", "fast"))
distill("type", "valid integer", extra=("--steps", "2.5"))
distill("config", "prior_config", teacher="bad/no-prior-config")
distill("slots", "slot1", data="bad/one-slot-pairs.safetensors")

# ----- pops serve (refused before the server starts) ---------------------------------------------------------------
SERVE = ("serve", "-o", "ui-serve")
cli("serve", "number", "--port", *SERVE, "--port", "0")
cli("serve", "number", "--port", *SERVE, "--port", "70000")
cli("serve", "number", "--queue-size", *SERVE, "--queue-size", "0")
cli("serve", "config", "--max-file-size", *SERVE, "--max-file-size", "abc")
cli("serve", "config", "--max-file-size", *SERVE, "--max-file-size", "-5mb")
cli("serve", "config", "unknown renderer", *SERVE, "--renderer", "dalle")
cli("serve", "folder", "is a file", "serve", "--models", A, "-o", "ui-serve")
cli("serve", "missing", "leads nowhere", "serve", "--models", "models-loop", "-o", "ui-serve")  # a symlink loop
cli("serve", "folder", "is a file, not a folder", "serve", "--models", "models", "-o", A)
cli("serve", "type", "valid integer", *SERVE, "--port", "http")
cli("serve", "unwritable", "not writable", "serve", "--models", "models", "-o", "blocker/ui")
for flag, value, expect in DEVICES:
    cli("serve", "device", expect, *SERVE, flag, value)
for folder, kind, expect in (
    (OP, "foreign", "operator folder"),
    ("models-trunc-weights", "truncated", "not a readable safetensors"),
    ("models-foreign-op", "foreign", "not an operator config"),
    ("bad-models/empty-weights", "empty", "empty file"),
    ("bad-models/bad-kind", "operator", "unknown operator 'paint'"),
    ("bad-models/no-prior-config", "config", "prior_config"),
    ("bad-models/nan-guidance", "nan", "guidance_scale"),
    ("bad-models/no-weights", "missing", "model.safetensors"),
    ("bad-models/wide-config", "width", "has shape"),
):
    cli("serve", kind, expect, "serve", "--models", folder, "-o", "ui-serve")
cli("serve", "tiny", "smaller than any picture", *SERVE, "--max-file-size", "100b")
cli("serve", "existing", "models folder", "serve", "--models", "models", "-o", "models")

# ----- pops models import | real | renderer ------------------------------------------------------------------------
RELEASED = "released/models/texturing/learned_prior.pth"


def imported(kind, expect, checkpoint=RELEASED, out="imported", base="kprior", extra=()):
    cli("models", kind, expect, "models", "import", checkpoint, "--base", base, "-o", out, *extra)


TEXTURING = ("--kind", "texturing")
imported("missing", "no such file", "bad/missing.pth", extra=TEXTURING)
imported("missing", "no such folder", base="bad/no/prior")
imported("folder", "is a folder", "bad/folder.png", extra=TEXTURING)
imported("empty", "empty file", "bad/empty.pt", extra=TEXTURING)
imported("truncated", "not a plain state dict", "bad/trunc.pth", extra=TEXTURING)
imported("foreign", "not a plain state dict", "bad/foreign.pt", extra=TEXTURING)
imported("foreign", "objects other than tensors", "bad/pickle.pt", extra=TEXTURING)
imported("foreign", "1 missing", "bad/missing-layer.pth", extra=TEXTURING)
imported("width", "has shape", "bad/wide.pth", extra=TEXTURING)
imported("nan", "NaN or inf", "bad/nan.pth", extra=TEXTURING)
imported("operator", "unknown operator 'paint'", extra=("--kind", "paint"))
imported("operator", "not 'union'", extra=("--kind", "union"))
imported("operator", "cannot tell which operator", "bad/wide.pth")
imported("unwritable", "not writable", out="blocker/op")
imported("existing", "already exists", out="good/full")
imported("existing", "is a file", out=A)
imported("device", "unknown dtype", extra=("--dtype", "fp8"))
REAL = ("models", "real", "real-out", "--base", "kprior")
cli("models", "missing", "no such folder", *REAL, "--checkpoints", "bad/no/checkpoints")
TEXTURING_ONLY = ("--operator", "texturing")
cli("models", "missing", "no released texturing", *REAL, "--checkpoints", "released-empty", *TEXTURING_ONLY)
cli("models", "operator", "no released 'paint'", *REAL, "--checkpoints", "released", "--operator", "paint")
cli("models", "config", "--render must be one of", *REAL, "--render", "dalle")
cli("models", "device", "unknown dtype", *REAL, "--dtype", "fp8")
cli("models", "existing", "already exists", "models", "real", "good/full", "--base", "kprior", *TEXTURING_ONLY)
RENDERER = ("models", "renderer", "renderer-out")
for setting, kind, expect in (
    ("size", "config", "KEY=VALUE"),
    ("no_such=1", "config", "no_such"),
    ("num_inference_steps=0", "number", "num_inference_steps"),
    ("guidance_scale=nan", "nan", "guidance_scale"),
    ("size=abc", "type", "size"),
    ("size=2", "tiny", "size"),
    ("size=100000", "huge", "size"),
    ("dtype=fp8", "device", "dtype"),
):
    cli("models", kind, expect, *RENDERER, "--set", setting)
cli("models", "config", "--type must be one of", *RENDERER, "--type", "dalle")
cli("models", "unwritable", "not writable", "models", "renderer", "blocker/renderer")
cli("models", "existing", "already exists", "models", "renderer", "renderer-existing")


# ----- the Python API -----------------------------------------------------------------------------------------------
def _op(world):
    from pops.operators.operator import Operator

    return Operator.from_pretrained(world / OP, load_encoders=False)


def _emb(world, name=A):
    from pops.embeddings.io import load_embeddings

    return load_embeddings(world / name)[0]


def _sample(**kwargs):
    def call(world):
        inputs = kwargs.pop("inputs", None)
        emb = _emb(world)
        return _op(world).sample(inputs if inputs is not None else [emb, emb], **kwargs)

    return call


def _load(name, **kw):
    from pops.embeddings.io import load_embeddings

    return lambda world: load_embeddings(world / name, **kw)


def _pretrained(name):
    from pops.operators.operator import Operator

    return lambda world: Operator.from_pretrained(world / name)


def _load_pairs(name):
    from pops.embeddings.pairs import Pairs

    return lambda world: Pairs.load(world / name)


api("api", "missing", "no such operator folder", _pretrained("bad/no-operator"))
api("api", "folder", "not a pops operator folder", _pretrained(A))
api("api", "empty", "empty file", _pretrained("bad/empty-weights"))
api("api", "truncated", "not a readable safetensors", _pretrained("bad/trunc-weights"))
api("api", "foreign", "not an operator config", _pretrained("bad/foreign-config"))
api("api", "config", "prior_config", _pretrained("bad/no-prior-config"))
api("api", "operator", "unknown operator 'paint'", _pretrained("bad/bad-kind"))
api("api", "number", "guidance_scale", _pretrained("bad/nan-guidance"))
api("api", "missing", "no such embedding file", _load("bad/missing.safetensors"))
api("api", "folder", "is a folder", _load("bad/folder.safetensors"))
api("api", "empty", "empty file", _load("bad/empty.pt"))
api("api", "truncated", "not a readable safetensors", _load("bad/trunc.safetensors"))
api("api", "foreign", "objects other than tensors", _load("bad/pickle.pt"))
api("api", "width", "width 16, expected 1280", _load("bad/wide.safetensors", dim=1280))
api("api", "nan", "NaN or inf", _load("bad/inf.pt"))
for path in INTEGERS:
    api("api", "type", FLOATS, _load(path))
api("api", "width", "expected shape (N, D)", _load("bad/3d.safetensors"))
api("api", "foreign", "header too large", _load("bad/huge-header.safetensors"))
api("api", "truncated", "not a readable safetensors", _load("bad/lying-header.safetensors"))
api("api", "truncated", "not a readable safetensors", _load_pairs("bad/trunc-pairs.safetensors"))
api("api", "nan", "NaN or inf", _load_pairs("bad/nan-pairs.safetensors"))
api("api", "foreign", "not a pops pairs file", _load_pairs(A))
api("api", "type", "must be an integer", _sample(num_inference_steps=2.5))
api("api", "type", "must be an integer", _sample(num_inference_steps="10"))
api("api", "type", "must be a number", _sample(guidance_scale="8"))
api("api", "type", "generator", _sample(generator=5))
api("api", "type", "sampler must be a name", _sample(sampler=3))
api("api", "type", "a list of 2 inputs", _sample(inputs=5))
api("api", "number", "finite", _sample(guidance_scale=float("nan")))
api("api", "number", "[1, 100]", _sample(guidance_scale=0))
api("api", "number", "[1, 1000]", _sample(num_inference_steps=100000))
api("api", "number", "batch_size", _sample(batch_size=0))
api("api", "memory", "memory", _sample(batch_size=10**12))
api("api", "slots", "takes 2 inputs", lambda w: _op(w).sample([_emb(w)]))
api("api", "width", "expected 1280", lambda w: _op(w).sample([_emb(w), _emb(w, "bad/wide.safetensors")]))
api("api", "width", "no embeddings", lambda w: _op(w).sample([_emb(w), _emb(w)[:0]]))
api("api", "nan", "NaN or inf", lambda w: _op(w).sample([_emb(w), _emb(w) * float("nan")]))
api("api", "type", "real numbers", lambda w: _op(w).sample([_emb(w), _emb(w).to(__import__("torch").complex64)]))


def _raw(world, name):
    """The tensor in an embedding file as safetensors / torch read it, without pops's checks."""
    import torch
    from safetensors.torch import load_file

    path = world / name
    return load_file(path)["embeddings"] if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


for path in INTEGERS[:3]:
    api("api", "type", FLOATS, lambda w, name=path: _op(w).sample([_emb(w), _raw(w, name)]))
api("api", "type", FLOATS, lambda w: _op(w).sample([[_raw(w, INTEGERS[0])[0], None], _emb(w)]))
api("api", "unwritable", "blocker", lambda w: _op(w).save_pretrained(w / "blocker" / "op"))


def _from_prior_paint(world):
    from pops.operators.operator import Operator
    from tests.helpers.priors import tiny_prior

    return Operator.from_prior(tiny_prior(), "paint")


api("api", "operator", "unknown operator 'paint'", _from_prior_paint)


def _train_lr_inf(world):
    from pops.train import train
    from pops.train.config import load_config

    return train(load_config(world / "bad" / "lr-inf.yaml"))


api("api", "number", "optim.lr", _train_lr_inf)


# Placing an operator.
def _to(**placement):
    def call(world):
        from pops.operators.operator import Operator

        return Operator.from_pretrained(world / OP, load_encoders=False).to(**placement)

    return call


api("api", "device", "cuda:99", _to(device="cuda:99"))
api("api", "device", "unknown dtype", _to(dtype="fp8"))
api("api", "device", "unknown device", _to(device="gpu"))


# ----- equations (pops.apply and `pops apply EQUATION --models`) ---------------------------------------------------
def eq(kind, expect, equation, **kwargs):
    def call(world):
        import pops

        settings = dict(models=world / "models", base_dir=world.root, num_inference_steps=2, **kwargs)
        return pops.apply(equation, **settings)

    api("equation", kind, expect, call)


eq("missing", "file not found", "texture(good/red.png, bad/missing.png)")
eq("folder", "is a folder", "texture(good/red.png, bad/folder.png)")
eq("empty", "empty file", "texture(good/a.safetensors, bad/empty.safetensors)")
eq("empty", "empty file", "texture(good/red.png, bad/empty.png)")
eq("truncated", "not a readable safetensors", "texture(good/a.safetensors, bad/trunc.safetensors)")
eq("truncated", "not a readable image", "texture(good/red.png, bad/trunc.png)")
eq("foreign", "not a plain embedding file", "texture(good/a.safetensors, bad/foreign.pt)")
eq("foreign", "objects other than tensors", "texture(good/a.safetensors, bad/pickle.pt)")
eq("width", "16-d", "texture(good/a.safetensors, bad/wide.safetensors)")
eq("nan", "NaN or inf", "texture(good/a.safetensors, bad/nan.safetensors)")
eq("slots", "texture", "texture(good/a.safetensors)")
eq("slots", "texture", "texture(good/a.safetensors, good/b.safetensors, good/a.safetensors)")
eq("operator", "unknown operator", "paint(good/a.safetensors)")
eq("operator", "no trained 'union'", "union(good/a.safetensors, good/b.safetensors)")
eq("notimage", "not a readable image", "texture(good/red.png, bad/notimage.png)")
eq("tiny", "at least 8 pixels", "texture(good/red.png, bad/tiny.png)")
eq("huge", "decompression bomb", "texture(good/red.png, bad/bomb.png)")
eq("equation", "line 1", "texture(good/a.safetensors, good/b.safetensors")
eq("equation", "nested more than", "(" * 200 + "good/a.safetensors" + ")" * 200)
eq("equation", "nested more than", "(" * 1500 + "good/a.safetensors" + ")" * 1500)
for path in INTEGERS:
    eq("type", FLOATS, f"texture(good/a.safetensors, {path})")
eq("width", "expected shape (N, D)", "texture(good/a.safetensors, bad/3d.safetensors)")
eq("foreign", "header too large", "texture(good/a.safetensors, bad/huge-header.safetensors)")
eq("truncated", "not a readable safetensors", "texture(good/a.safetensors, bad/lying-header.safetensors)")
eq("equation", "out of range", "1e999*good/a.safetensors")
eq("equation", "unexpected character", "texture(good/a.safetensors, \x00)")
eq("equation", "unterminated", 'texture(good/a.safetensors, "wood)')
eq("equation", "neither an image", "texture(good/a.safetensors, good/train.yaml)")
eq("number", "seed", "texture(good/a.safetensors, good/b.safetensors)", seed=-1)
eq("number", "seed", "texture(good/a.safetensors, good/b.safetensors)", seed=2**64)
eq("number", "[1, 100]", "texture(good/a.safetensors, good/b.safetensors)", guidance_scale=0)
eq("number", "num_samples", "texture(good/a.safetensors, good/b.safetensors)", num_samples=0)
eq("number", "no operator step named", "texture(good/a.safetensors, good/b.safetensors)", seeds={"nope": 1})
eq("slots", "has 3 rows", "texture(good/a.safetensors, bad/rows3.safetensors)", num_samples=2)
eq("memory", "memory", "texture(good/a.safetensors, good/b.safetensors)", num_samples=10**12)
eq("type", "must be a number", "texture(good/a.safetensors, good/b.safetensors)", guidance_scale="8")
eq("type", "must be an integer", "texture(good/a.safetensors, good/b.safetensors)", num_samples=2.5)
EQ = "texture(good/a.safetensors, good/b.safetensors)"
cli("equation", "existing", "already exists", "apply", EQ, "--models", "models", "-o", "good/full", "--steps", "2")
cli("equation", "unwritable", "not writable", "apply", EQ, "--models", "models", "-o", "blocker/eq", "--steps", "2")
cli("equation", "missing", "models folder not found", "apply", EQ, "--models", "bad/no-models", "-o", "eq")
cli("equation", "config", "LABEL=SEED", "apply", EQ, "--models", "models", "-o", "eq", "--step-seed", "output")
cli("equation", "config", "unknown renderer", "apply", EQ, "--models", "models", "-o", "eq", "--render", "dalle")
cli("equation", "empty", "empty file", "apply", "--replay", "bad/empty.json", "-o", "eq")
cli("equation", "config", "not an equation record", "apply", "--replay", "good/existing.json", "-o", "eq")
cli("equation", "number", "guidance", "apply", EQ, "--models", "models", "-o", "eq", "-g", "-3")
cli("equation", "number", "seed", "apply", EQ, "--models", "models", "-o", "eq", "--seed", "-1")
for path in INTEGERS[:3]:
    cli("equation", "type", FLOATS, "apply", f"texture({A}, {path})", "--models", "models", "-o", "eq", "--steps", "2")
cli("equation", "missing", "models folder not found", "apply", EQ, "--models", "models-loop", "-o", "eq")
DEEP = "(" * 1500 + A + ")" * 1500
cli("equation", "equation", "nested more than", "apply", DEEP, "--models", "models", "-o", "eq", "--steps", "2")
if HAS_DEV_FULL:
    cli("equation", "unwritable", "is a file", "apply", EQ, "--models", "models", "-o", DEV_FULL, "--steps", "2")
for flag, value, expect in DEVICES:
    cli("equation", "device", expect, "apply", EQ, "--models", "models", "-o", "eq", flag, value)


# ----- the UI backend (what the page's HTTP API calls) -------------------------------------------------------------
def run_eq(equation, files=(), **settings):
    def call(world):
        from pops.ui.app import _settings

        values = dict(models_dir="models", renderer="none", seed=0, guidance=0, steps=2, samples=1)
        values.update(settings)
        return world.backend.run_equation(equation, [str(world / f) for f in files], _settings(**values))

    return call


ui("missing", "does not offer", run_eq("texture(a.safetensors, b.safetensors)", models_dir="bad"))
ui("missing", "does not offer", run_eq("texture(a.safetensors, b.safetensors)", models_dir="/etc"))
ui("missing", "file not found", run_eq("texture(red.png, nothere.png)", ["good/red.png"]))
ui("folder", "without folders", run_eq("texture(/etc/hostname.png, red.png)", ["good/red.png"]))
ui("folder", "without folders", run_eq("texture(../good/red.png, red.png)", ["good/red.png"]))
ui("empty", "empty file", run_eq("texture(red.png, empty.png)", ["good/red.png", "bad/empty.png"]))
ui("truncated", "not a readable image", run_eq("texture(red.png, trunc.png)", ["good/red.png", "bad/trunc.png"]))
ui(
    "truncated",
    "not a readable safetensors",
    run_eq("texture(a.safetensors, trunc.safetensors)", [A, "bad/trunc.safetensors"]),
)
ui("foreign", "objects other than tensors", run_eq("texture(a.safetensors, pickle.pt)", [A, "bad/pickle.pt"]))
ui("width", "16-d", run_eq("texture(a.safetensors, wide.safetensors)", [A, "bad/wide.safetensors"]))
ui("nan", "NaN or inf", run_eq("texture(a.safetensors, nan.safetensors)", [A, "bad/nan.safetensors"]))
ui("type", FLOATS, run_eq("texture(a.safetensors, int64.safetensors)", [A, "bad/int64.safetensors"]))
ui(
    "foreign",
    "header too large",
    run_eq("texture(a.safetensors, huge-header.safetensors)", [A, "bad/huge-header.safetensors"]),
)
ui("slots", "texture", run_eq("texture(a.safetensors)", [A]))
ui("slots", "both called", run_eq("texture(a.safetensors, a.safetensors)", [A, A]))
ui("operator", "unknown operator", run_eq("paint(a.safetensors)", [A]))
ui("notimage", "not a readable image", run_eq("texture(red.png, notimage.png)", ["good/red.png", "bad/notimage.png"]))
ui("tiny", "at least 8 pixels", run_eq("texture(red.png, tiny.png)", ["good/red.png", "bad/tiny.png"]))
ui("huge", "decompression bomb", run_eq("texture(red.png, bomb.png)", ["good/red.png", "bad/bomb.png"]))
ui("equation", "line 1", run_eq("texture(a.safetensors, b.safetensors", [A, B]))
ui("equation", "type an equation", run_eq("   ", [A]))
for setting, value, expect in (
    ("guidance", -3, "[1, 100]"),
    ("guidance", 0.5, "[1, 100]"),
    ("guidance", float("nan"), "finite"),
    ("steps", 0, "sampling steps"),
    ("steps", 100000, "sampling steps"),
    ("seed", -1, "seed"),
    ("samples", 0, "samples"),
    ("samples", 10**6, "samples"),
):
    ui("number", expect, run_eq("texture(a.safetensors, b.safetensors)", [A, B], **{setting: value}))
for setting, value, expect in (
    ("guidance", "8", "must be a number"),
    ("steps", "abc", "integer"),
    ("steps", 2.5, "integer"),
):
    ui("type", expect, run_eq("texture(a.safetensors, b.safetensors)", [A, B], **{setting: value}))
ui("config", "unknown renderer", run_eq("texture(a.safetensors, b.safetensors)", [A, B], renderer="dalle"))


def run_op(slot_files, word=None, **settings):
    def call(world):
        from pops.ui.backend import Settings

        files = {name: str(world / path) for name, path in slot_files.items()}
        return world.backend.run_operator(
            "texturing", files, word, Settings(models_dir="models", renderer="none", steps=2, **settings)
        )

    return call


ui("slots", "upload at least one", run_op({}))
ui("notimage", "not a readable image", run_op({"object": "good/red.png", "texture": "bad/notimage.png"}))
ui("huge", "decompression bomb", run_op({"object": "bad/bomb.png", "texture": "good/red.png"}))
