"""Tokeniser and recursive-descent parser for equations. The grammar (docs/EQUATIONS.md has the user's guide):

    program  := { "let" NAME "=" expr [";"] } expr [";"]
    expr     := ["-"] term { ("+" | "-") term }          # more than one term, a weight or a "-": a WeightedSum
    term     := [NUMBER "*"] primary
    primary  := "(" expr ")" | NAME "(" [args] ")" | NAME | "_" | PATH | STRING | "@" STRING
    args     := arg { "," arg } [","]
    arg      := NAME "=" expr | expr                      # keyword arguments (slot names) after positional ones

A bare word is a NUMBER if it reads as one, a NAME if it is an identifier, else a PATH (letters, digits and
`_ . / ~ -`, not starting with `-`): `cat.png`, `imgs/wood-2.jpg`, `../emb/t.safetensors`. Other paths are written
`@"my photos/cat 1.png"`. STRING is "…" or '…' with the escapes \\ \" \' \n \t \r. `#` starts a comment.
Line breaks are whitespace: `let` statements end where their expression cannot go on, `;` is optional.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pops.equation.ast import Call, Drop, File, Let, Node, Pos, Program, Text, Var, WeightedSum
from pops.equation.diagnostics import EquationError

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./~-")
PUNCT = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA", ";": "SEMI", "=": "EQUALS", "*": "STAR", "+": "PLUS", "-": "MINUS"}
ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
KEYWORDS = frozenset({"let"})
# Deeper nesting than this is certainly a mistake, and would otherwise exhaust Python's recursion limit.
MAX_DEPTH = 64


@dataclass(frozen=True)
class Token:
    type: str  # NUMBER NAME PATH STRING PATHSTRING LPAREN RPAREN COMMA SEMI EQUALS STAR PLUS MINUS EOF
    text: str  # the source text, for error messages
    value: object  # float for NUMBER, the decoded string for STRING / PATHSTRING, else the text
    pos: Pos


def tokenize(source: str) -> list[Token]:
    if not isinstance(source, str):
        raise EquationError(f"an equation is a string, got {type(source).__name__}")
    tokens: list[Token] = []
    i, line, line_start = 0, 1, 0
    n = len(source)
    while i < n:
        ch = source[i]
        pos = Pos(line, i - line_start + 1)
        if ch == "\n":
            i, line, line_start = i + 1, line + 1, i + 1
        elif ch in " \t\r\f\v":
            i += 1
        elif ch == "#":
            while i < n and source[i] != "\n":
                i += 1
        elif ch in PUNCT:
            tokens.append(Token(PUNCT[ch], ch, ch, pos))
            i += 1
        elif ch in "\"'" or (ch == "@" and i + 1 < n and source[i + 1] in "\"'"):
            token_type = "STRING"
            if ch == "@":
                token_type, i = "PATHSTRING", i + 1
            start = i
            value, i, line, line_start = _read_string(source, i, line, line_start, pos)
            tokens.append(Token(token_type, source[start - (token_type == "PATHSTRING") : i], value, pos))
        elif ch in WORD_CHARS:
            start = i
            number = NUMBER.match(source, i) if (ch.isdigit() or ch == ".") else None
            if number and not (number.end() < n and source[number.end()] in WORD_CHARS):
                i = number.end()
                value = float(source[start:i])
                if not math.isfinite(value):
                    raise EquationError("number out of range", *pos, source[start:i])
                tokens.append(Token("NUMBER", source[start:i], value, pos))
                continue
            while i < n and source[i] in WORD_CHARS:
                i += 1
            word = source[start:i]
            tokens.append(Token("NAME" if IDENT.match(word) else "PATH", word, word, pos))
        else:
            raise EquationError(f"unexpected character {ch!r}", *pos, ch)
    tokens.append(Token("EOF", "", "", Pos(line, n - line_start + 1)))
    return tokens


def _read_string(source: str, i: int, line: int, line_start: int, pos: Pos) -> tuple[str, int, int, int]:
    """Decode the quoted string starting at source[i]; returns (value, index after it, line, line_start)."""
    opening = i
    quote, i = source[i], i + 1
    out = []
    while True:
        if i >= len(source):
            raise EquationError("unterminated string (missing closing quote)", *pos, source[opening : opening + 20])
        ch = source[i]
        if ch == quote:
            return "".join(out), i + 1, line, line_start
        if ch == "\\":
            if i + 1 >= len(source) or source[i + 1] not in ESCAPES:
                bad = source[i : i + 2]
                raise EquationError(
                    "unknown escape in string (use \\\\ \\\" \\' \\n \\t \\r)", line, i - line_start + 1, bad
                )
            out.append(ESCAPES[source[i + 1]])
            i += 2
            continue
        if ch == "\n":
            line, line_start = line + 1, i + 1
        out.append(ch)
        i += 1


class _Parser:
    def __init__(self, source: str):
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def error(self, message: str, tok: Token | None = None) -> EquationError:
        tok = tok or self.tok
        return EquationError(message, tok.pos.line, tok.pos.column, tok.text or None)

    def expect(self, token_type: str, what: str) -> Token:
        if self.tok.type != token_type:
            found = "end of input" if self.tok.type == "EOF" else repr(self.tok.text)
            raise self.error(f"expected {what}, found {found}")
        return self.advance()

    # -- grammar
    def program(self) -> Program:
        start = self.tok.pos
        lets = []
        while self.tok.type == "NAME" and self.tok.text == "let":
            let_tok = self.advance()
            name = self.expect("NAME", "a variable name after 'let'")
            if name.text in KEYWORDS or name.text == "_":
                raise self.error(f"{name.text!r} is reserved and cannot be a variable name", name)
            self.expect("EQUALS", f"'=' after 'let {name.text}'")
            lets.append(Let(name.text, self.expr(), let_tok.pos))
            if self.tok.type == "SEMI":
                self.advance()
        if self.tok.type == "EOF":
            raise self.error("expected an expression to evaluate" + (" after the 'let' statements" if lets else ""))
        result = self.expr()
        if self.tok.type == "SEMI":
            self.advance()
        if self.tok.type != "EOF":
            hint = " (a 'let' or the result must come first; one result expression per equation)"
            raise self.error(f"unexpected {self.tok.text!r} after the result expression{hint}")
        return Program(tuple(lets), result, start)

    def expr(self) -> Node:
        start = self.tok.pos
        terms, weighted = [], False
        sign = 1.0
        if self.tok.type == "MINUS":
            self.advance()
            sign, weighted = -1.0, True
        while True:
            weight, node, has_weight = self.term()
            terms.append((sign * weight, node))
            weighted = weighted or has_weight
            if self.tok.type not in ("PLUS", "MINUS"):
                break
            sign = 1.0 if self.advance().type == "PLUS" else -1.0
        if len(terms) == 1 and not weighted:
            return terms[0][1]
        return WeightedSum(tuple(terms), start)

    def term(self) -> tuple[float, Node, bool]:
        if self.tok.type == "NUMBER":
            number = self.advance()
            if self.tok.type != "STAR":
                raise self.error("a number must weight an input, as in 0.5*cat.png", number)
            self.advance()
            return number.value, self.primary(), True
        node = self.primary()
        if self.tok.type == "STAR":
            raise self.error("write the weight first, as in 0.5*cat.png")
        return 1.0, node, False

    def primary(self) -> Node:
        tok = self.tok
        if tok.type == "LPAREN":
            self.advance()
            with self._nested(tok):
                node = self.expr()
            self.expect("RPAREN", "')'")
            return node
        if tok.type == "STRING":
            self.advance()
            return Text(tok.value, tok.pos)
        if tok.type in ("PATH", "PATHSTRING"):
            self.advance()
            return File(tok.value, tok.pos)
        if tok.type == "NAME":
            if tok.text in KEYWORDS:
                raise self.error(f"'{tok.text}' starts a statement; statements come before the result expression")
            self.advance()
            if tok.text == "_":
                return Drop(tok.pos)
            if self.tok.type == "LPAREN":
                return self.call(tok)
            return Var(tok.text, tok.pos)
        if tok.type == "EOF":
            raise self.error("unexpected end of input: an input is missing")
        raise self.error(f"unexpected {tok.text!r}: expected an image, a name, a call, '_' or a quoted word")

    def call(self, name: Token) -> Call:
        open_paren = self.advance()
        args, kwargs = [], []
        with self._nested(open_paren):
            while self.tok.type != "RPAREN":
                if self.tok.type == "NAME" and self.peek().type == "EQUALS":
                    key = self.advance()
                    if key.text in KEYWORDS or key.text == "_":
                        raise self.error(f"{key.text!r} is reserved and cannot name a slot", key)
                    self.advance()
                    kwargs.append((key.text, self.expr()))
                elif kwargs:
                    raise self.error("positional arguments must come before keyword (slot=…) arguments")
                else:
                    args.append(self.expr())
                if self.tok.type == "COMMA":
                    self.advance()
                elif self.tok.type != "RPAREN":
                    found = "end of input" if self.tok.type == "EOF" else repr(self.tok.text)
                    raise self.error(f"expected ',' or ')' in the arguments of {name.text}(…), found {found}")
        self.advance()
        return Call(name.text, tuple(args), tuple(kwargs), name.pos)

    def _nested(self, tok: Token):
        parser = self

        class _Depth:
            def __enter__(self):
                parser.depth += 1
                if parser.depth > MAX_DEPTH:
                    raise parser.error(f"nested more than {MAX_DEPTH} levels deep", tok)

            def __exit__(self, *exc):
                parser.depth -= 1

        return _Depth()


def parse(source: str) -> Program:
    """Parse an equation into a `Program`; raises `EquationError` (with line and column) on bad syntax."""
    return _Parser(source).program()
