"""The expression language of ``<class>.get_all_records_where`` (XAPI's ``db_filter``).

Grammar, as in xen-api ``ocaml/database/db_filter_parse.mly``::

    value := "literal" | field "name"
    expr  := value = value | expr and expr | expr or expr | not expr
           | true | false | ( expr )

``and``/``or`` share one precedence and associate to the left; ``not`` binds loosest
(``not A and B`` is ``not (A and B)``). Comparison is string equality on the field's database form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Lexer: whitespace, '=', keywords (matched as prefixes, as ocamllex does), '(' ')', "quoted".
_TOKEN = re.compile(r'\s*(?:(=)|(true|false|field|and|or|not)|([()])|"([^"]*)")')


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Literal:
    text: str


Value = Field | Literal
# Expressions are nested tuples: ("true",), ("false",), ("not", e), ("and", a, b), ("or", a, b),
# ("eq", value, value).
Expr = tuple


class FilterSyntaxError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise FilterSyntaxError(f'Failure("lexing: empty token") at character {pos}')
        eq, keyword, paren, ident = m.groups()
        if eq:
            out.append(("EQ", "="))
        elif keyword:
            out.append((keyword.upper(), keyword))
        elif paren:
            out.append(("LPAREN" if paren == "(" else "RPAREN", paren))
        else:
            out.append(("IDENT", ident))
        pos = m.end()
    out.append(("EOF", ""))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][0]

    def take(self, kind: str) -> str:
        tok, text = self.toks[self.i]
        if tok != kind:
            raise FilterSyntaxError("Parsing.Parse_error")
        self.i += 1
        return text

    def expr(self) -> Expr:
        # not binds loosest: "not" consumes a whole and/or chain
        if self.peek() == "NOT":
            self.take("NOT")
            return ("not", self.expr())
        left = self.atom()
        while self.peek() in ("AND", "OR"):
            op = self.take(self.peek())
            if self.peek() == "NOT":  # "a and not b or c" = "a and not (b or c)"
                self.take("NOT")
                return (op, left, ("not", self.expr()))
            left = (op, left, self.atom())
        return left

    def atom(self) -> Expr:
        kind = self.peek()
        if kind in ("TRUE", "FALSE"):
            self.take(kind)
            return (kind.lower(),)
        if kind == "LPAREN":
            self.take("LPAREN")
            inner = self.expr()
            self.take("RPAREN")
            return inner
        left = self.value()
        self.take("EQ")
        return ("eq", left, self.value())

    def value(self) -> Value:
        if self.peek() == "FIELD":
            self.take("FIELD")
            return Field(self.take("IDENT"))
        return Literal(self.take("IDENT"))


def parse(text: str) -> Expr:
    """Parse ``text``; raises :class:`FilterSyntaxError`."""
    p = _Parser(text)
    e = p.expr()
    p.take("EOF")
    return e


def evaluate(expr: Expr, lookup: Callable[[str], str]) -> bool:
    """``lookup(field)`` returns the row's database form of that field (or raises)."""
    op = expr[0]
    if op == "true":
        return True
    if op == "false":
        return False
    if op == "not":
        return not evaluate(expr[1], lookup)
    if op == "and":
        return evaluate(expr[1], lookup) and evaluate(expr[2], lookup)
    if op == "or":
        return evaluate(expr[1], lookup) or evaluate(expr[2], lookup)

    def val(v: Value) -> str:
        return lookup(v.name) if isinstance(v, Field) else v.text

    return val(expr[1]) == val(expr[2])
