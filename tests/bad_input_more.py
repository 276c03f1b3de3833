"""The rest of the bad-input case table (bad_input_cases.py imports this module, which appends to its CASES): the
later commands and options — `pops models import|real|renderer`, `pops apply OPERATOR a.png b.png -n 4 -o out/`,
--device/--dtype/--generator-device/--sampler everywhere they are taken, the demo's settings (its Python config) —
and the kinds each entry point lacked in the first table. World files are built by bad_input_world_more.py."""

from __future__ import annotations

from bad_input_cases import DEMO, EQ, OP, SERVE, A, B, api, apply, cli, distill

DEVICES = (
    ("--device", "cuda:99", "cuda:99"),  # no such GPU here (no CUDA at all, or fewer than 100)
    ("--dtype", "fp8", "unknown dtype"),
)

# ----- pops apply: the devices, and an operator's name with pictures (`pops apply texturing a.png b.png`) ---------
for flag, value, expect in (*DEVICES, ("--device", "gpu", "unknown device"), ("--generator-device", "cuda", "cuda")):
    apply("device", expect, A, B, extra=(flag, value))
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
cli("eval", "empty", "empty file", "eval", "--models", "models-empty-test")
cli("eval", "slots", "slot1", "eval", "--models", "models-one-slot-test")
cli("eval", "type", "unknown sampler", "eval", "--models", "models", "--sampler", "euler")
cli("eval", "number", "--draws", "eval", "--models", "models", "--draws", "0")
for flag, value, expect in DEVICES:
    cli("eval", "device", expect, "eval", "--models", "models", flag, value)

# ----- pops equations (CLI) ----------------------------------------------------------------------------------------
for flag, value, expect in DEVICES:
    cli("equation", "device", expect, "apply", EQ, "--models", "models", "-o", "eq", flag, value)


# ----- pops demo: its settings (the Python config `pops.demo.quick_config`) and folders it must not write into ----
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
cli("demo", "foreign", "operator folder", *DEMO[:3], "-o", OP)
cli("demo", "foreign", "dataset", *DEMO[:3], "-o", "dataset")
cli("demo", "folder", "report.html", *DEMO[:3], "-o", "demo-report-folder")
cli("demo", "folder", "operators", *DEMO[:3], "-o", "demo-operators-file")

# ----- pops train --------------------------------------------------------------------------------------------------
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
    for flag, value, expect in DEVICES:
        cli(entry, "device", expect, entry, "dataset", "-o", out, flag, value)
    cli(entry, "operator", "unknown operator 'paint'", entry, "ds-paint", "-o", out, "--no-progress")
    cli(entry, "tiny", "resolution", entry, "dataset", "-o", out, "--resolution", "16")
    cli(entry, "huge", "resolution", entry, "dataset", "-o", out, "--resolution", "99968")
    cli(entry, "memory", "memory", entry, "dataset", "-o", out, "--resolution", "1024", "--batch-size", "100000")
    cli(entry, "missing", "no such folder", entry, "dataset", "-o", out, "--encoder", "clip", "--clip-model", "bad/x/y")
cli("embed", "config", "outside", "embed", "ds-escape", "-o", "cache-out", "--no-progress")
cli("embed", "existing", "dataset folder itself", "embed", "dataset", "-o", "dataset", "--no-progress")

# ----- pops render -------------------------------------------------------------------------------------------------
RENDER = ("render", A, "-o", "render-out")
cli("render", "tiny", "size", *RENDER, "--size", "2")
cli("render", "huge", "size", *RENDER, "--size", "100000")
DEPTH = (*RENDER, "--render", "ipadapter-depth", "--structure")
cli("render", "notimage", "not a readable structure image", *DEPTH, "bad/notimage.png")
cli("render", "huge", "megapixels", *DEPTH, "bad/bomb.png")
cli("render", "tiny", "at least 8 pixels", *DEPTH, "bad/tiny.png")
cli("render", "missing", "no such folder", *RENDER, "--decoder", "bad/no/decoder")
for flag, value, expect in (*DEVICES, ("--generator-device", "cuda", "cuda")):
    cli("render", "device", expect, *RENDER, flag, value)

# ----- pops generate -----------------------------------------------------------------------------------------------
GEN = ("generate", "union", "-o", "gen-out", "-n", "2", "--no-progress")
cli("generate", "tiny", "segmenter-size", *GEN, "--segmenter-size", "2")
cli("generate", "huge", "image-size", *GEN, "--image-size", "100000")
cli("generate", "nan", "depth-guidance", *GEN, "--depth-guidance", "inf")
for flag, value, expect in DEVICES:
    cli("generate", "device", expect, *GEN, flag, value)

# ----- pops distill ------------------------------------------------------------------------------------------------
distill("type", "valid number", extra=("--lr", "fast"))
distill("type", "valid integer", extra=("--steps", "2.5"))
distill("config", "prior_config", teacher="bad/no-prior-config")
distill("slots", "slot1", data="bad/one-slot-pairs.safetensors")

# ----- pops serve --------------------------------------------------------------------------------------------------
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


# ----- the Python API: placing an operator ------------------------------------------------------------------------
def _to(**placement):
    def call(world):
        from pops.operators.operator import Operator

        return Operator.from_pretrained(world / OP, load_encoders=False).to(**placement)

    return call


api("api", "device", "cuda:99", _to(device="cuda:99"))
api("api", "device", "unknown dtype", _to(dtype="fp8"))
api("api", "device", "unknown device", _to(device="gpu"))
