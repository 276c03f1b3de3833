"""The equation language: parse/print round trips (hypothesis), error positions, and the validation pass."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pops.equation import (
    Call,
    Drop,
    EquationError,
    EquationFileError,
    File,
    Let,
    Program,
    Text,
    Var,
    WeightedSum,
    format_equation,
    parse,
)
from pops.equation.validate import validate

# ----- strategies: any tree the grammar can express ----------------------------------------------------------------
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
names = st.builds(
    lambda head, tail: head + tail, st.sampled_from(LETTERS), st.text(LETTERS + "0123456789", max_size=6)
).filter(lambda s: s not in ("let", "_"))
bare_paths = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(LETTERS + "0123456789./~"),
    st.text(LETTERS + "0123456789./~-", max_size=10),
)
paths = st.one_of(bare_paths, st.text(max_size=12))  # anything else is printed as @"..."
weights = st.floats(allow_nan=False, allow_infinity=False)

leaves = st.one_of(
    st.builds(File, paths),
    st.builds(Text, st.text(max_size=10)),
    st.just(Drop()),
    st.builds(Var, names),
)


def extend(children):
    calls = st.builds(
        Call,
        names,
        st.lists(children, max_size=3).map(tuple),
        st.lists(st.tuples(names, children), max_size=2).map(tuple),
    )
    sums = st.builds(WeightedSum, st.lists(st.tuples(weights, children), min_size=1, max_size=3).map(tuple))
    return st.one_of(calls, sums)


expressions = st.recursive(leaves, extend, max_leaves=12)
programs = st.builds(Program, st.lists(st.builds(Let, names, expressions), max_size=3).map(tuple), expressions)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_any_valid_equation_round_trips(program):
    text = format_equation(program)
    assert parse(text) == program
    # The canonical text is a fixed point, on one line and on several.
    assert format_equation(parse(text)) == text
    assert parse(format_equation(program, multiline=True)) == program


GRAMMAR_ALPHABET = "ab_.png()=,;*+-\"'@#\\\n \t0123456789eltx~/"


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet=GRAMMAR_ALPHABET, max_size=40)))
def test_random_strings_raise_only_equation_errors(source):
    try:
        program = parse(source)
    except EquationError as err:
        assert err.line is not None and err.line >= 1 and err.column >= 1
        assert "\n" not in str(err)
    else:
        assert parse(format_equation(program)) == program


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="(texture)a.png, ", min_size=1, max_size=300))
def test_deep_or_long_inputs_do_not_crash(source):
    try:
        parse(source)
    except EquationError:
        pass


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(EquationError, match="nested more than"):
        parse("(" * 500 + "a.png" + ")" * 500)


# ----- the language, by example --------------------------------------------------------------------------------------
def test_parse_chained_equation_with_variables():
    program = parse("let t = texture(a.png, wood.png); scene(t, beach.png)")
    assert program == Program(
        (Let("t", Call("texture", (File("a.png"), File("wood.png")))),),
        Call("scene", (Var("t"), File("beach.png"))),
    )
    # Line breaks separate statements too, and comments are ignored.
    assert parse("let t = texture(a.png, wood.png)  # the object\nscene(t, beach.png)\n") == program


def test_parse_words_drops_keywords_sums_and_paths():
    assert parse('instruct(cat.png, "red")').result == Call("instruct", (File("cat.png"), Text("red")))
    assert parse("union(cat.png, _)").result == Call("union", (File("cat.png"), Drop()))
    assert parse("composition(hat=h.png, pants=p.png)").result == Call(
        "composition", (), (("hat", File("h.png")), ("pants", File("p.png")))
    )
    assert parse("0.3*a.png + 0.7*b.png").result == WeightedSum(((0.3, File("a.png")), (0.7, File("b.png"))))
    assert parse("a.png - 2*b.png").result == WeightedSum(((1.0, File("a.png")), (-2.0, File("b.png"))))
    assert parse("mean(x.safetensors, y.pt)").result == Call("mean", (File("x.safetensors"), File("y.pt")))
    assert parse('@"my photos/cat 1.png"').result == File("my photos/cat 1.png")
    assert parse("imgs/wood-2.jpg").result == File("imgs/wood-2.jpg")
    assert parse("'it\\'s'").result == Text("it's")
    assert (
        File("x.PNG").modality == "image"
        and File("e.safetensors").modality == "embedding"
        and File("x").modality == "unknown"
    )


def test_printer_quotes_what_would_not_read_back():
    assert format_equation(File("cat.png")) == "cat.png"
    assert format_equation(File("cat")) == '@"cat"'  # bare, it would be a name
    assert format_equation(File("1.5")) == '@"1.5"'  # bare, it would be a number
    assert format_equation(File("a b.png")) == '@"a b.png"'
    assert format_equation(Text('say "hi"\n')) == '"say \\"hi\\"\\n"'
    assert format_equation(WeightedSum(((1.0, File("a.png")),))) == "1.0*a.png"
    assert format_equation(WeightedSum(((0.5, WeightedSum(((1.0, Var("x")), (-1.0, Var("y"))))),))) == "0.5*(x - y)"


@pytest.mark.parametrize(
    "source, line, column, token, message",
    [
        ("texture(a.png wood.png)", 1, 15, "wood.png", "expected ',' or ')'"),
        ("let t = texture(a.png,\n  wood.png;\nscene(t)", 2, 11, ";", "expected ',' or ')'"),
        ("scene(t, beach.png", 1, 19, None, "end of input"),
        ("0.5 a.png", 1, 1, "0.5", "a number must weight"),
        ("a.png*2", 1, 6, "*", "weight first"),
        ('instruct(cat.png, "red)', 1, 19, '"red)', "unterminated string"),
        ("texture(a.png, $)", 1, 16, "$", "unexpected character"),
        ("a.png b.png", 1, 7, "b.png", "after the result"),
        ("let = 1", 1, 5, "=", "variable name"),
        ("f(x=a.png, b.png)", 1, 12, "b.png", "positional arguments must come before"),
        ("", 1, 1, None, "expected an expression"),
        ("1e999*a.png", 1, 1, "1e999", "out of range"),
    ],
)
def test_syntax_errors_say_what_and_where(source, line, column, token, message):
    with pytest.raises(EquationError) as info:
        parse(source)
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert err.token == token
    assert message in str(err)
    assert str(err).startswith(f"line {line}, column {column}")
    caret_line = err.pretty(source).splitlines()[-1]
    assert caret_line.index("^") == column + 1  # two spaces of indent


# ----- validation: before anything runs -----------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path):
    for name in ("a.png", "wood.png", "beach.png", "e.safetensors", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


class FakeModels:
    """The part of ModelSet that validation reads: which operators exist, assets folders."""

    def __init__(self, kinds, assets=()):
        self.kinds, self.assets = kinds, list(assets)

    def available(self):
        return list(self.kinds)

    def missing_message(self, kind):
        return f"no trained {kind!r} operator"

    def asset_dirs(self):
        return self.assets


@pytest.mark.parametrize(
    "source, column, token, message",
    [
        ("textur(a.png, wood.png)", 1, "textur", "unknown operator 'textur' (did you mean 'texture'?)"),
        ("texture(a.png)", 1, "texture", "texture takes 2 inputs, got 1: texture(object, texture)"),
        ("scene(a.png, beach.png, wood.png)", 1, "scene", "scene takes 2 inputs, got 3"),
        ("texture(a.png, missing.png)", 16, "missing.png", "file not found: missing.png"),
        ("texture(a.png, notes.txt)", 16, "notes.txt", "neither an image"),
        ("scene(t, beach.png)", 7, "t", "unknown name 't'"),
        ('texture(a.png, "wood")', 16, '"wood"', "takes an image or embedding, not a word"),
        ("instruct(a.png, wood.png)", 17, "wood.png", "takes a quoted word"),
        ("texture(object=a.png, colour=wood.png)", 30, "colour", "no slot 'colour'"),
        ("texture(a.png, object=wood.png)", 23, "object", "given twice"),
        ("texture(_, _)", 1, "texture", "every input is dropped"),
        ("mean(a.png, _)", 13, "_", "can only fill an operator slot"),
        ('0.5*a.png + 0.5*"red"', 17, '"red"', "quoted word can only fill a text slot"),
        ("union(a.png, wood.png)", 1, "union", "no trained 'union' operator"),
        ("mean()", 1, "mean", "at least one input"),
    ],
)
def test_validation_errors_before_anything_runs(images, source, column, token, message):
    with pytest.raises(EquationError) as info:
        validate(source, FakeModels(["texturing", "scene", "instruct"]), base_dir=images)
    err = info.value
    assert message in str(err), str(err)
    assert (err.line, err.column, err.token) == (1, column, token)


def test_missing_file_is_also_a_file_not_found_error(images):
    with pytest.raises(FileNotFoundError) as info:
        validate("texture(a.png, missing.png)", None, base_dir=images)
    assert isinstance(info.value, EquationFileError) and isinstance(info.value, ValueError)


def test_program_level_errors(images):
    models = FakeModels(["texturing", "scene"])
    with pytest.raises(EquationError, match="already defined"):
        validate("let t = a.png\nlet t = wood.png\nt", models, base_dir=images)
    with pytest.raises(EquationError, match="names an operator"):
        validate("let scene = a.png; scene", models, base_dir=images)
    with pytest.raises(EquationError, match="the result is a quoted word"):
        validate('"red"', models, base_dir=images)
    with pytest.raises(EquationError, match="did you mean 'tex'"):
        validate("let tex = a.png; scene(tez, beach.png)", models, base_dir=images)


def test_plan_inlines_variables_dedupes_and_labels_steps(images):
    plan = validate(
        "let t = texture(a.png, wood.png)\nlet u = texture(a.png, wood.png)\nscene(mean(t, u), beach.png)",
        FakeModels(["texturing", "scene"]),
        base_dir=images,
    )
    computed = plan.computed
    # t and u are the same expression with the same seed: one step. Then the mean, then the output.
    assert [s.label for s in computed] == ["t", "step 1", "output"]
    assert [s.operator for s in computed] == ["texturing", None, "scene"]
    assert plan.variables["t"] == plan.variables["u"]
    assert plan.operators == ["texturing", "scene"]
    assert computed[1].weights == (0.5, 0.5)
    files = [s for s in plan.steps if s.op == "image"]
    assert [f.path for f in files] == [(images / n).resolve() for n in ("a.png", "wood.png", "beach.png")]


def test_keyword_calls_drop_unnamed_slots_and_aliases_resolve(images):
    plan = validate("compose(hat=a.png, pants=wood.png)", FakeModels(["composition"]), base_dir=images)
    out = plan.steps[plan.output]
    assert out.operator == "composition" and len(out.inputs) == 12
    named = {i for i, x in enumerate(out.inputs) if x is not None}
    from pops.base.registry import REGISTRY

    assert {REGISTRY["composition"].slot_names[i] for i in named} == {"hat", "pants"}


def test_bare_names_resolve_to_assets(images, tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    (assets / "wood.png").write_bytes(b"x")
    plan = validate("texture(a.png, wood)", FakeModels(["texturing"], [assets]), base_dir=images)
    assert plan.steps[plan.steps[plan.output].inputs[1]].path == (assets / "wood.png").resolve()
    with pytest.raises(EquationError, match="or an asset image in"):
        validate("texture(a.png, oak)", FakeModels(["texturing"], [assets]), base_dir=images)
