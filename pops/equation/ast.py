"""The syntax tree of an equation.

Nodes are frozen dataclasses that compare by content only: the source position (`pos`) is carried for error
messages but excluded from equality, so `parse(format_equation(tree)) == tree` holds for any tree.

    Program(lets=(Let("t", Call("texture", (File("a.png"), File("wood.png")))),),
            result=Call("scene", (Var("t"), File("beach.png"))))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import NamedTuple

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".pth")


class Pos(NamedTuple):
    """1-based line and column of a node's first token."""

    line: int
    column: int


NOWHERE = Pos(0, 0)


def _pos() -> Pos:
    return field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class File:
    """An image (encoded by the operators' image encoder) or a saved embedding file, told apart by the suffix."""

    path: str
    pos: Pos = _pos()

    @property
    def modality(self) -> str:
        """'image', 'embedding' or 'unknown' (an error at validation)."""
        suffix = PurePath(self.path).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return "image"
        if suffix in EMBEDDING_SUFFIXES:
            return "embedding"
        return "unknown"


@dataclass(frozen=True)
class Text:
    """A quoted word for a text slot (instruct's word)."""

    value: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Drop:
    """`_`: a dropped slot (zeros in normalised space) — sample variations that keep only the other inputs."""

    pos: Pos = _pos()


@dataclass(frozen=True)
class Var:
    """A name: a variable bound by an earlier `let`, else an asset image looked up in the models' assets folder."""

    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Call:
    """`name(arg, …, slot=arg, …)`: an operator (or `mean`) applied to positional then keyword arguments."""

    name: str
    args: tuple[Node, ...] = ()
    kwargs: tuple[tuple[str, Node], ...] = ()
    pos: Pos = _pos()


@dataclass(frozen=True)
class WeightedSum:
    """`w1*x1 + w2*x2 - …`: a weighted sum of embeddings (the paper's averaging baseline). Weights are kept as
    written (not renormalised); `mean(x, y)` is the equal-weight case."""

    terms: tuple[tuple[float, Node], ...]
    pos: Pos = _pos()


Node = File | Text | Drop | Var | Call | WeightedSum


@dataclass(frozen=True)
class Let:
    """`let name = value`: binds a variable for the statements after it."""

    name: str
    value: Node
    pos: Pos = _pos()


@dataclass(frozen=True)
class Program:
    """Zero or more `let` statements, then the result expression."""

    lets: tuple[Let, ...]
    result: Node
    pos: Pos = _pos()


def children(node: Node) -> list[Node]:
    """The direct sub-expressions of a node, in source order."""
    if isinstance(node, Call):
        return [*node.args, *(value for _, value in node.kwargs)]
    if isinstance(node, WeightedSum):
        return [term for _, term in node.terms]
    return []
