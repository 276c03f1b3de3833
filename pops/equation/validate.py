"""The validation pass: from a syntax tree to a checked plan of steps, before anything runs.

Every error a user can make in an equation is caught here with its position: unknown operator or name, wrong
number of arguments, unknown slot, a word where an image belongs (or the reverse), a missing or unreadable file,
an operator that the models folder does not hold. The plan is a DAG in evaluation order: variables are inlined and
identical sub-expressions become one step (same inputs, same operator, same seed: the same result).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from pops.base.registry import REGISTRY
from pops.equation.ast import Call, Drop, File, Node, Pos, Program, Text, Var, WeightedSum
from pops.equation.diagnostics import EquationError, EquationFileError
from pops.equation.parser import parse
from pops.equation.printer import format_equation, format_node
from pops.models.model_set import ASSET_SUFFIXES

MEAN = "mean"


def aliases() -> dict[str, str]:
    """Short names accepted for operators (each registry entry's `aliases`; listed in docs/EQUATIONS.md)."""
    return {alias: kind for kind, spec in REGISTRY.items() for alias in spec.aliases}


def operator_names() -> dict[str, str]:
    """Every name a call may use -> the registry kind (or 'mean')."""
    names = {kind: kind for kind in REGISTRY}
    names.update(aliases())
    names[MEAN] = MEAN
    return names


@dataclass
class Step:
    """One node of the plan. `op`: image | embedding | text | drop | call | sum."""

    index: int
    op: str
    text: str  # the step's expression as written (variables by name)
    pos: Pos
    operator: str | None = None  # calls: the operator's registry kind
    inputs: tuple[int | None, ...] = ()  # per slot for calls (None: dropped), per term for sums
    weights: tuple[float, ...] = ()  # sums
    path: Path | None = None  # files
    value: str | None = None  # text
    label: str = ""  # calls and sums: the variable it is bound to, "output", or "step N"
    key: tuple = field(default=(), repr=False)  # structural identity (dedupe)

    @property
    def is_embedding(self) -> bool:
        return self.op in ("image", "embedding", "call", "sum")


@dataclass
class Plan:
    source: str
    program: Program
    steps: list[Step]
    output: int
    variables: dict[str, int]

    @property
    def operators(self) -> list[str]:
        return list(dict.fromkeys(s.operator for s in self.steps if s.op == "call"))

    @property
    def computed(self) -> list[Step]:
        """Calls and sums: the steps whose results are intermediates (and the output)."""
        return [s for s in self.steps if s.op in ("call", "sum")]

    def step(self, label: str) -> Step:
        for s in self.steps:
            if s.label == label:
                return s
        raise KeyError(label)


def _err(message: str, node, token: str | None = None, cls=EquationError) -> EquationError:
    pos = getattr(node, "pos", None) or Pos(0, 0)
    if pos.line == 0:  # a tree built in Python, not parsed: no position to show
        return cls(message, token=token)
    return cls(message, pos.line, pos.column, token)


class _Validator:
    def __init__(self, models, base_dir: Path, asset_dirs: list[Path]):
        self.models = models
        self.base_dir = base_dir
        self.asset_dirs = asset_dirs
        self.names = operator_names()
        self.available = set(models.available()) if models is not None else None
        self.steps: list[Step] = []
        self.by_key: dict[tuple, int] = {}
        self.variables: dict[str, int] = {}
        self.var_pos: dict[str, Pos] = {}

    def add(self, step: Step) -> int:
        if step.key in self.by_key:
            return self.by_key[step.key]
        step.index = len(self.steps)
        self.steps.append(step)
        self.by_key[step.key] = step.index
        return step.index

    # ----- nodes -----------------------------------------------------------------------------------------------
    def visit(self, node: Node) -> int:
        if isinstance(node, File):
            return self.file(node, node.path)
        if isinstance(node, Text):
            return self.add(Step(0, "text", format_node(node), node.pos, value=node.value, key=("text", node.value)))
        if isinstance(node, Drop):
            return self.add(Step(0, "drop", "_", node.pos, key=("drop",)))
        if isinstance(node, Var):
            return self.var(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, WeightedSum):
            return self.weighted_sum(node)
        raise _err(f"not an equation node: {type(node).__name__}", None)

    def file(self, node, path_text: str) -> int:
        path = Path(path_text).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        modality = File(path_text).modality
        if modality == "unknown":
            raise _err(
                f"{path_text!r} is neither an image (.png, .jpg, .jpeg, .webp, .bmp, .gif) "
                "nor an embedding file (.safetensors, .pt, .pth)",
                node,
                path_text,
            )
        if path.is_dir():
            raise _err(f"{path_text} is a folder, not a file", node, path_text)
        if not path.is_file():
            raise _err(
                f"file not found: {path_text}" + (f" (looked at {path})" if str(path) != path_text else ""),
                node,
                path_text,
                EquationFileError,
            )
        path = path.resolve()
        return self.add(Step(0, modality, format_node(node), node.pos, path=path, key=(modality, str(path))))

    def var(self, node: Var) -> int:
        if node.name in self.variables:
            return self.variables[node.name]
        for folder in self.asset_dirs:
            for suffix in ASSET_SUFFIXES:
                if (folder / (node.name + suffix)).is_file():
                    return self.file(node, str(folder / (node.name + suffix)))
        close = difflib.get_close_matches(node.name, list(self.variables), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if node.name in self.names:
            hint = f"; {node.name} is an operator: call it as {node.name}(…)"
        where = " or an asset image in " + ", ".join(str(d) for d in self.asset_dirs) if self.asset_dirs else ""
        raise _err(
            f"unknown name {node.name!r}: not a variable defined before this point{where}{hint}", node, node.name
        )

    def call(self, node: Call) -> int:
        kind = self.names.get(node.name)
        if kind is None:
            close = difflib.get_close_matches(node.name, list(self.names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(list(REGISTRY) + [f"{a} (= {k})" for a, k in aliases().items()] + [MEAN])
            raise _err(f"unknown operator {node.name!r}{hint}; operators: {known}", node, node.name)
        if kind == MEAN:
            return self.mean(node)
        spec = REGISTRY[kind]
        slots = spec.slot_names
        usage = f"{node.name}({', '.join(slots)})"
        if len(node.args) > spec.num_slots or (not node.kwargs and len(node.args) != spec.num_slots):
            extra = "" if node.kwargs or spec.num_slots < 3 else "; name the slots you use, e.g. hat=…, pants=…"
            raise _err(
                f"{node.name} takes {spec.num_slots} input{'s' * (spec.num_slots != 1)}, got "
                f"{len(node.args) + len(node.kwargs)}: {usage}{extra}",
                node,
                node.name,
            )
        filled: list[Node | None] = [*node.args] + [None] * (spec.num_slots - len(node.args))
        for key, value in node.kwargs:
            if key not in slots:
                raise _err(f"{node.name} has no slot {key!r}; its slots are {', '.join(slots)}", value, key)
            i = slots.index(key)
            if filled[i] is not None:
                raise _err(f"slot {key!r} of {node.name} is given twice", value, key)
            filled[i] = value
        inputs: list[int | None] = []
        for slot, arg in zip(spec.slots, filled):
            if arg is None:  # keyword calls: a slot not named is dropped
                inputs.append(None)
                continue
            index = self.visit(arg)
            step = self.steps[index]
            if step.op == "drop":
                inputs.append(None)
                continue
            if slot.kind == "text" and step.op != "text":
                raise _err(f'slot {slot.name!r} of {node.name} takes a quoted word, as in "red"', arg, step.text)
            if slot.kind == "image" and not step.is_embedding:
                raise _err(f"slot {slot.name!r} of {node.name} takes an image or embedding, not a word", arg, step.text)
            inputs.append(index)
        if all(i is None for i in inputs):
            raise _err(f"{node.name}: every input is dropped; give at least one", node, node.name)
        if self.available is not None and kind not in self.available:
            raise _err(self.models.missing_message(kind), node, node.name)
        key = ("call", kind, tuple(inputs))
        return self.add(Step(0, "call", format_node(node), node.pos, operator=kind, inputs=tuple(inputs), key=key))

    def mean(self, node: Call) -> int:
        if node.kwargs:
            raise _err("mean(…) takes positional arguments only", node.kwargs[0][1], node.kwargs[0][0])
        if not node.args:
            raise _err("mean(…) needs at least one input", node, node.name)
        inputs = tuple(self.embedding_input(arg, "mean(…)") for arg in node.args)
        weights = tuple(1.0 / len(inputs) for _ in inputs)
        key = ("sum", weights, inputs)
        return self.add(Step(0, "sum", format_node(node), node.pos, inputs=inputs, weights=weights, key=key))

    def weighted_sum(self, node: WeightedSum) -> int:
        if not node.terms:
            raise _err("a weighted sum needs at least one term", node)
        inputs = tuple(self.embedding_input(term, "a weighted sum") for _, term in node.terms)
        weights = tuple(float(w) for w, _ in node.terms)
        key = ("sum", weights, inputs)
        return self.add(Step(0, "sum", format_node(node), node.pos, inputs=inputs, weights=weights, key=key))

    def embedding_input(self, node: Node, where: str) -> int:
        index = self.visit(node)
        step = self.steps[index]
        if step.op == "drop":
            raise _err(f"'_' (a dropped input) can only fill an operator slot, not {where}", node, "_")
        if not step.is_embedding:
            raise _err(f"a quoted word can only fill a text slot (instruct's word), not {where}", node, step.text)
        return index

    # ----- program ---------------------------------------------------------------------------------------------
    def program(self, program: Program) -> tuple[int, dict[str, int]]:
        for let in program.lets:
            if let.name in self.names:
                raise _err(f"{let.name!r} names an operator; choose another variable name", let, let.name)
            if let.name in self.variables:
                first = self.var_pos[let.name]
                raise _err(f"variable {let.name!r} is already defined (line {first.line})", let, let.name)
            self.variables[let.name] = self.visit(let.value)
            self.var_pos[let.name] = let.pos
        output = self.visit(program.result)
        if not self.steps[output].is_embedding:
            what = "a quoted word" if self.steps[output].op == "text" else "'_'"
            raise _err(f"the result is {what}; an equation must produce an embedding", program.result)
        return output, dict(self.variables)


def _label_steps(steps: list[Step], output: int, variables: dict[str, int]) -> None:
    """Calls and sums are named for display, records and per-step seeds: variable name, 'output', or 'step N'."""
    bound = {}
    for name, index in variables.items():
        bound.setdefault(index, name)
    n = 0
    for step in steps:
        if step.op not in ("call", "sum"):
            if step.index == output:  # a bare input as the result: still called "output"
                step.label = "output"
            continue
        if step.index == output:
            step.label = "output"
        elif step.index in bound:
            step.label = bound[step.index]
        else:
            n += 1
            step.label = f"step {n}"


def validate(
    equation: str | Program,
    models=None,
    *,
    base_dir: str | Path | None = None,
    asset_dirs: list[Path] | None = None,
) -> Plan:
    """Parse (if given text) and check an equation; return its `Plan`. Raises `EquationError` on any problem.

    `models`: a `ModelSet` (checks that each operator used exists; its `assets/` folder resolves bare names), or None
    to check syntax, names, arity, slot types and files only. Relative file paths are resolved against `base_dir`
    (default: the current folder).
    """
    program = parse(equation) if isinstance(equation, str) else equation
    if not isinstance(program, Program):
        raise ValueError(f"expected an equation string or Program, got {type(equation).__name__}")
    base = Path(base_dir).expanduser() if base_dir is not None else Path.cwd()
    assets = list(asset_dirs) if asset_dirs is not None else (models.asset_dirs() if models is not None else [])
    v = _Validator(models, base, assets)
    output, variables = v.program(program)
    _label_steps(v.steps, output, variables)
    source = equation if isinstance(equation, str) else ""
    if not source:
        source = format_equation(program)
    return Plan(source, program, v.steps, output, variables)
