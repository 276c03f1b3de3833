"""Property tests (hypothesis) for the readers, the boundary checks and the equation language: whatever bytes, numbers
or text come in, the result is either a valid value or the documented one-line refusal — never another exception."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pops.base import checks
from pops.embeddings.io import load_embeddings, save_embeddings
from pops.embeddings.pairs import Pairs
from pops.equation import EquationError
from pops.equation.validate import validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(exc: BaseException) -> bool:
    text = str(exc)
    return bool(text.strip()) and "\n" not in text and "Traceback" not in text


def mutations(data: bytes):
    """A file's bytes cut, overwritten in places, or grown: what a disk, a download or a user can do to it."""
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    flips = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: _edit(data, edits)
    )
    grown = st.binary(max_size=64).map(lambda tail: data + tail)
    return st.one_of(cut, flips, grown, st.binary(max_size=256))


def _edit(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        out[at] = value
    return bytes(out)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("fuzz")
    save_embeddings(root / "e.safetensors", torch.randn(2, 8))
    g = torch.Generator().manual_seed(0)
    Pairs(
        "union",
        [torch.randn(4, 8, generator=g) for _ in range(2)],
        torch.ones(4, 2, dtype=torch.bool),
        torch.randn(4, 8),
    ).save(root / "p.safetensors")
    Image.new("RGB", (16, 16), "red").save(root / "i.png")
    return {name: (root / name).read_bytes() for name in ("e.safetensors", "p.safetensors", "i.png")}


@FAST
@given(data=st.data())
def test_any_embedding_file_is_read_or_refused_in_one_line(good_files, tmp_path, data):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data.draw(mutations(good_files["e.safetensors"])))
    try:
        embeds, _ = load_embeddings(path)
    except (ValueError, OSError) as exc:
        assert one_line(exc) and str(path) in str(exc)
    else:
        assert embeds.ndim == 2 and embeds.shape[0] > 0 and torch.isfinite(embeds).all()


@FAST
@given(data=st.data())
def test_any_pairs_file_is_read_or_refused_in_one_line(good_files, tmp_path, data):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data.draw(mutations(good_files["p.safetensors"])))
    try:
        pairs = Pairs.load(path)
    except (ValueError, OSError) as exc:
        assert one_line(exc) and str(path) in str(exc)
    else:
        assert len(pairs) > 0 and torch.isfinite(pairs.target).all()


@FAST
@given(data=st.data())
def test_any_picture_file_is_decoded_or_refused_in_one_line(good_files, tmp_path, data):
    from pops.base.readers import read_image

    path = tmp_path / "x.png"
    path.write_bytes(data.draw(mutations(good_files["i.png"])))
    try:
        image = read_image(path)
    except (ValueError, OSError) as exc:
        assert one_line(exc) and str(path) in str(exc)
    else:
        assert image.mode == "RGB" and min(image.size) >= 8


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TRAIN_KEYS = st.sampled_from(["operator", "max_steps", "batch_size", "seed", "optim", "init", "layout", "ema", "lr"])


OPTIM_KEYS = st.sampled_from(["lr", "betas", "eps", "weight_decay"])


@FAST
@given(
    overrides=st.dictionaries(TRAIN_KEYS, JSONISH, max_size=4), optim=st.dictionaries(OPTIM_KEYS, JSONISH, max_size=3)
)
def test_any_training_config_is_valid_or_refused_in_one_line(overrides, optim):
    from pops.train.config import config_from_dict

    data = dict(overrides, optim=optim)
    try:
        config = config_from_dict(data)
    except ValueError as exc:
        assert one_line(exc)
    else:
        assert math.isfinite(config.optim.lr) and config.optim.lr > 0 and config.batch_size >= 1


NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.booleans(),
    st.none(), st.complex_numbers(max_magnitude=1e6), st.lists(st.integers(), max_size=2),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(value=NUMBERS)
def test_every_check_returns_a_value_in_range_or_refuses_in_one_line(value):
    for check, ok in (
        (checks.guidance, lambda v: v is None or 1 <= v <= checks.MAX_GUIDANCE),
        (checks.steps, lambda v: v is None or 1 <= v <= 1000),
        (checks.seed, lambda v: 0 <= v <= checks.MAX_SEED),
        (checks.learning_rate, lambda v: math.isfinite(v) and v > 0),
        (lambda x: checks.count(x, "n"), lambda v: v >= 1),
        (checks.threads, lambda v: v is None or 1 <= v <= checks.cores()),
    ):
        try:
            result = check(value)
        except checks.BadValue as exc:
            assert isinstance(exc, TypeError) and isinstance(exc, ValueError) and one_line(exc)
        else:
            assert ok(result), (check, value, result)
            assert not isinstance(result, (bool, str, complex))


TOKENS = st.sampled_from(
    ["texture", "union", "scene", "instruct", "mean", "let", "t", "=", "(", ")", ",", "+", "-", "*", "0.5", "1e999",
     "a.safetensors", "missing.png", "_", '"red"', '"', "object=", "\n", " ", "\x00", "@", "é", "nan", "texture(("]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(TOKENS, max_size=24))
def test_any_equation_text_validates_or_refuses_in_one_line(tmp_path, tokens):
    save_embeddings(tmp_path / "a.safetensors", torch.zeros(1, 4) + 1)
    text = "".join(tokens)
    try:
        plan = validate(text, base_dir=tmp_path)
    except EquationError as exc:
        assert one_line(exc)
        assert exc.pretty(text)  # the UI's form (with a caret) never fails either
    else:
        assert plan.steps and 0 <= plan.output < len(plan.steps)


CONFIG_KEYS = st.sampled_from(["kind", "prior_config", "clip_mean", "clip_std", "format_version", "guidance_scale"])


@FAST
@given(config=st.dictionaries(CONFIG_KEYS, JSONISH, max_size=5))
def test_any_operator_config_loads_or_is_refused_in_one_line(tiny_operator, tmp_path_factory, config):
    from pops.operators.operator import Operator

    folder = tmp_path_factory.mktemp("op")
    tiny_operator("union").save_pretrained(folder)
    real = json.loads((folder / "pops_config.json").read_text())
    (folder / "pops_config.json").write_text(json.dumps({**real, **config}))
    try:
        op = Operator.from_pretrained(folder)
    except (ValueError, OSError) as exc:
        assert one_line(exc)
    else:
        assert op.guidance_scale >= 1
