"""Canonical text of a syntax tree: `parse(format_equation(tree)) == tree` for every tree (tested with hypothesis)."""

from __future__ import annotations

import math

from pops.equation.ast import Call, Drop, File, Let, Node, Program, Text, Var, WeightedSum
from pops.equation.parser import IDENT, KEYWORDS, NUMBER, WORD_CHARS

_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """A double-quoted string literal that the tokeniser decodes back to `text`."""
    return '"' + "".join(_STRING_ESCAPES.get(ch, ch) for ch in text) + '"'


def _is_bare_path(path: str) -> bool:
    """Whether `path` lexes back, unquoted, as one PATH token (not a number, a name or something else)."""
    if not path or path[0] == "-" or any(ch not in WORD_CHARS for ch in path):
        return False
    if IDENT.match(path):
        return False
    number = NUMBER.match(path)
    return not (number and number.end() == len(path))


def format_path(path: str) -> str:
    return path if _is_bare_path(path) else "@" + quote(path)


def format_name(name: str) -> str:
    if not IDENT.match(name) or name in KEYWORDS or name == "_":
        raise ValueError(f"{name!r} cannot be written as a name in an equation")
    return name


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"weights must be finite, got {value}")
    return repr(float(value))


def format_node(node: Node) -> str:
    if isinstance(node, File):
        return format_path(node.path)
    if isinstance(node, Text):
        return quote(node.value)
    if isinstance(node, Drop):
        return "_"
    if isinstance(node, Var):
        return format_name(node.name)
    if isinstance(node, Call):
        parts = [format_node(arg) for arg in node.args]
        parts += [f"{format_name(key)}={format_node(value)}" for key, value in node.kwargs]
        return f"{format_name(node.name)}({', '.join(parts)})"
    if isinstance(node, WeightedSum):
        return _format_sum(node)
    raise TypeError(f"not an equation node: {node!r}")


def _format_sum(node: WeightedSum) -> str:
    if not node.terms:
        raise ValueError("a weighted sum needs at least one term")
    out = []
    single = len(node.terms) == 1  # a lone term keeps its weight, or it would read back as the bare term
    for i, (weight, term) in enumerate(node.terms):
        negative = math.copysign(1.0, weight) < 0
        magnitude = abs(weight)
        text = format_node(term)
        if isinstance(term, WeightedSum):
            text = f"({text})"
        body = text if (magnitude == 1.0 and not single) else f"{_number(magnitude)}*{text}"
        if i == 0:
            out.append(("-" if negative else "") + body)
        else:
            out.append((" - " if negative else " + ") + body)
    return "".join(out)


def format_equation(tree: Program | Node, *, multiline: bool = False) -> str:
    """The canonical text of a program (or of one expression). `multiline` puts each `let` on its own line."""
    if isinstance(tree, Let):
        return f"let {format_name(tree.name)} = {format_node(tree.value)}"
    if not isinstance(tree, Program):
        return format_node(tree)
    statements = [format_equation(let) for let in tree.lets] + [format_node(tree.result)]
    return (";\n" if multiline else "; ").join(statements)
