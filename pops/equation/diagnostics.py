"""The one error type of the equation language: what went wrong, and where (line, column, offending token)."""

from __future__ import annotations


class EquationError(ValueError):
    """A syntax or validation error in an equation.

    `str(err)` is one line ("line 2, column 14 (near 'textur'): unknown operator …") so the CLI can print it as is;
    `err.pretty(source)` adds the source line and a caret under the offending token (what the UI shows).
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None, token: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.token = token
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        where = ""
        if self.line is not None:
            where = f"line {self.line}, column {self.column}"
            if self.token:
                shown = self.token if len(self.token) <= 40 else self.token[:37] + "..."
                where += f" (near {shown!r})"
            where += ": "
        return where + self.message.replace("\n", " ")

    def pretty(self, source: str) -> str:
        """The one-line message, then the offending source line with a caret under the column."""
        if self.line is None:
            return str(self)
        lines = source.splitlines() or [""]
        text = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        width = max(1, len(self.token or "") if self.token and "\n" not in self.token else 1)
        caret = " " * max(0, (self.column or 1) - 1) + "^" * min(width, max(1, len(text) - (self.column or 1) + 1))
        return f"{self}\n  {text}\n  {caret}"


class EquationFileError(EquationError, FileNotFoundError):
    """A file named in an equation does not exist (also a FileNotFoundError, for API callers)."""
