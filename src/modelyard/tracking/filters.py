"""The run search language: a filter and an order, compiled to SQL.

A filter compares ``metrics.KEY``, ``params.KEY``, ``tags.KEY`` or a run attribute
(``status``, ``name``, ``start_time``, ...) with a literal, joined by ``and`` / ``or``
and parentheses::

    metrics.auc > 0.8 and params.model = 'hgb'
    (tags.team = 'risk' or tags.team = 'ops') and status != 'FAILED'
    params.model in ('hgb', 'rf') and name like 'nightly-%'

Metrics compare against their latest value, so a search never reads a metric's
history; a NaN latest value matches no comparison and sorts last, like a missing
one. ``like`` is case-sensitive and ``ilike`` is not, on every backend. A filter
nests at most ``MAX_DEPTH`` parentheses and holds at most ``MAX_COMPARISONS``
comparisons (more is refused, not a crash). A filter that does not parse is an
error that points at the token:

>>> parse_filter("metrics.auc >> 0.8")
Traceback (most recent call last):
...
modelyard.errors.FilterSyntaxError: Expected a value after '>', got '>' (column 14)
  metrics.auc >> 0.8
               ^
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, and_, exists, func, literal, not_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.functions import FunctionElement

from modelyard.errors import FilterSyntaxError, InvalidInputError
from modelyard.store.schema import latest_metrics, params, run_tags, runs
from modelyard.tracking.entities import RunStatus

__all__ = [
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "Comparison",
    "compile_filter",
    "compile_order",
    "parse_filter",
    "parse_order",
]

#: the deepest nesting of parentheses a filter may have (the parser recurses per level)
MAX_DEPTH = 32
#: the most comparisons in one filter (SQLite refuses expression trees deeper than 1000)
MAX_COMPARISONS = 256

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<ident>(?:[A-Za-z_][A-Za-z0-9_]*\.)?(?:`[^`]+`|[A-Za-z0-9_\-/:]+(?:\.[A-Za-z0-9_\-/:]+)*))
  | (?P<bad>.)
    """,
    re.VERBOSE,
)

_KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null"}
_PREFIXES = {
    "metrics": "metric",
    "metric": "metric",
    "params": "param",
    "param": "param",
    "tags": "tag",
    "tag": "tag",
    "attributes": "attribute",
    "attribute": "attribute",
    "attr": "attribute",
    "run": "attribute",
}
_ATTRIBUTES: dict[str, str] = {
    "id": "id",
    "run_id": "id",
    "name": "name",
    "run_name": "name",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
    "experiment_id": "experiment_id",
    "parent_run_id": "parent_run_id",
    "git_commit": "git_commit",
    "user": "user",
    "host": "host",
}
_NUMERIC_ATTRIBUTES = {"start_time", "end_time"}
_TEXT_OPS = {"=", "!=", "like", "ilike", "in", "not in"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Comparison:
    """``kind.key op value``; ``kind`` is metric, param, tag or attribute."""

    kind: str
    key: str
    op: str
    value: Any
    pos: int


@dataclass(frozen=True)
class _BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


Node = Comparison | _BoolOp


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "bad"
        value = match.group()
        if kind == "ws":
            continue
        if kind == "bad":
            raise FilterSyntaxError(
                f"Unexpected character {value!r}", text=text, position=match.start()
            )
        if kind == "ident" and value.lower() in _KEYWORDS:
            kind = value.lower()
        tokens.append(_Token(kind, value, match.start()))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.comparisons = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, expected: str, token: _Token | None) -> FilterSyntaxError:
        if token is None:
            return FilterSyntaxError(
                f"Expected {expected}, got the end of the filter",
                text=self.text,
                position=len(self.text),
            )
        return FilterSyntaxError(
            f"Expected {expected}, got {token.text!r}",
            text=self.text,
            position=token.pos,
            length=len(token.text),
        )

    def take(self, kind: str, expected: str) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            raise self.fail(expected, token)
        self.i += 1
        return token

    def parse(self) -> Node:
        node = self.or_expr()
        token = self.peek()
        if token is not None:
            raise self.fail("'and', 'or' or the end of the filter", token)
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.i += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else _BoolOp("or", tuple(items))

    def and_expr(self) -> Node:
        items = [self.atom()]
        while (token := self.peek()) is not None and token.kind == "and":
            self.i += 1
            items.append(self.atom())
        return items[0] if len(items) == 1 else _BoolOp("and", tuple(items))

    def atom(self) -> Node:
        token = self.peek()
        if token is not None and token.kind == "lparen":
            if self.depth >= MAX_DEPTH:
                # one line: echoing a filter this long under a caret helps no one
                raise InvalidInputError(
                    f"Expected a filter with at most {MAX_DEPTH} nested parentheses, "
                    f"got more (column {token.pos + 1})",
                    loc="filter",
                )
            self.i += 1
            self.depth += 1
            node = self.or_expr()
            self.take("rparen", "')'")
            self.depth -= 1
            return node
        token = self.peek()
        if self.comparisons >= MAX_COMPARISONS and token is not None:
            raise InvalidInputError(
                f"Expected a filter with at most {MAX_COMPARISONS} comparisons, "
                f"got more (column {token.pos + 1})",
                loc="filter",
            )
        self.comparisons += 1
        return self.comparison()

    def comparison(self) -> Comparison:
        ident = self.take("ident", "a field such as metrics.auc, params.model or status")
        kind, key = _split_ident(ident, self.text)
        token = self.peek()
        if token is None:
            raise self.fail("a comparison operator (=, !=, <, <=, >, >=, like, in)", token)
        if token.kind == "op":
            self.i += 1
            op = {"==": "=", "<>": "!="}.get(token.text, token.text)
            value = self.value(f"a value after {token.text!r}")
            return _checked(Comparison(kind, key, op, value, ident.pos), token, self.text)
        if token.kind in ("like", "ilike"):
            self.i += 1
            value = self.value(f"a quoted pattern after {token.text!r}")
            return _checked(Comparison(kind, key, token.kind, value, ident.pos), token, self.text)
        if token.kind in ("in", "not"):
            self.i += 1
            op = "in"
            if token.kind == "not":
                self.take("in", "'in' after 'not'")
                op = "not in"
            self.take("lparen", f"'(' after {op!r}")
            values = [self.value("a value in the list")]
            while (sep := self.peek()) is not None and sep.kind == "comma":
                self.i += 1
                values.append(self.value("a value after ','"))
            self.take("rparen", "',' or ')' to close the list")
            return _checked(Comparison(kind, key, op, tuple(values), ident.pos), token, self.text)
        raise self.fail("a comparison operator (=, !=, <, <=, >, >=, like, in)", token)

    def value(self, expected: str) -> _Literal:
        token = self.peek()
        if token is None or token.kind not in ("string", "number"):
            raise self.fail(expected, token)
        self.i += 1
        if token.kind == "number":
            return _Literal(float(token.text), token.text, token.pos)
        body = token.text[1:-1]
        quote = token.text[0]
        body = body.replace(quote * 2, quote) if quote == "'" else body
        return _Literal(re.sub(r"\\(.)", r"\1", body), token.text, token.pos)


@dataclass(frozen=True)
class _Literal:
    value: float | str
    source: str
    pos: int


def _split_ident(token: _Token, text: str) -> tuple[str, str]:
    raw = token.text
    head, dot, rest = raw.partition(".")
    if dot and head.lower() in _PREFIXES:
        kind, key = _PREFIXES[head.lower()], rest.strip("`")
    else:
        kind, key = "attribute", raw.strip("`")
    if kind == "attribute":
        if key.lower() not in _ATTRIBUTES:
            known = ", ".join(sorted(set(_ATTRIBUTES)))
            raise FilterSyntaxError(
                f"Unknown field {raw!r}: use metrics.KEY, params.KEY, tags.KEY or one of {known}",
                text=text,
                position=token.pos,
                length=len(raw),
            )
        key = _ATTRIBUTES[key.lower()]
    return kind, key


def _checked(comp: Comparison, op_token: _Token, text: str) -> Comparison:
    """Type-check a comparison; the error points at the operator or the literal."""
    literals: tuple[_Literal, ...] = comp.value if isinstance(comp.value, tuple) else (comp.value,)
    numeric_field = comp.kind == "metric" or (
        comp.kind == "attribute" and comp.key in _NUMERIC_ATTRIBUTES
    )
    if numeric_field:
        if comp.op in ("like", "ilike"):
            raise FilterSyntaxError(
                f"{comp.op!r} compares text, but {comp.kind} {comp.key!r} is a number",
                text=text,
                position=op_token.pos,
                length=len(op_token.text),
            )
        for lit in literals:
            if isinstance(lit.value, str):
                raise FilterSyntaxError(
                    f"Expected a number to compare {comp.kind} {comp.key!r} with, got {lit.source}",
                    text=text,
                    position=lit.pos,
                    length=len(lit.source),
                )
        values: Any = tuple(float(lit.value) for lit in literals)
    else:
        if comp.op not in _TEXT_OPS:
            raise FilterSyntaxError(
                f"{comp.kind}s are text: compare {comp.kind} {comp.key!r} with "
                f"=, !=, like, ilike or in, not {comp.op!r}",
                text=text,
                position=op_token.pos,
                length=len(op_token.text),
            )
        # a number written in a text comparison means its text as written: params.depth = 6
        values = tuple(
            lit.source if isinstance(lit.value, float) else lit.value for lit in literals
        )
        if comp.kind == "attribute" and comp.key == "status":
            allowed = {s.value for s in RunStatus}
            for lit, value in zip(literals, values, strict=True):
                if comp.op in ("=", "!=", "in", "not in") and str(value).upper() not in allowed:
                    raise FilterSyntaxError(
                        f"Expected a status ({', '.join(sorted(allowed))}), got {lit.source}",
                        text=text,
                        position=lit.pos,
                        length=len(lit.source),
                    )
            if comp.op in ("=", "!=", "in", "not in"):
                values = tuple(str(v).upper() for v in values)
    value = values if isinstance(comp.value, tuple) else values[0]
    return Comparison(comp.kind, comp.key, comp.op, value, comp.pos)


def parse_filter(text: str) -> Node | None:
    """Parse a filter; an empty one is None (every run)."""
    if not text or not text.strip():
        return None
    return _Parser(text).parse()


class _Like(FunctionElement[bool]):
    """``column LIKE pattern``, case-sensitive on every backend.

    SQLite's LIKE ignores case, so there it is ``column GLOB`` the same pattern
    written in GLOB's syntax (the third argument).
    """

    type = Boolean()
    inherit_cache = True
    name = "like"


@compiles(_Like)
def _compile_like(element: _Like, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _ = element.clauses
    return f"({compiler.process(column, **kw)} LIKE {compiler.process(pattern, **kw)})"


@compiles(_Like, "sqlite")
def _compile_glob(element: _Like, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, glob = element.clauses
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(glob, **kw)})"


_GLOB_LITERAL = {"*": "[*]", "?": "[?]", "[": "[[]"}


def _glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, ``\\`` escapes as in PostgreSQL) in GLOB's syntax."""
    out = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            out.append(_GLOB_LITERAL.get(escaped, escaped))
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append(_GLOB_LITERAL.get(char, char))
    return "".join(out)


def _number(column: Any) -> Any:
    """A metric's value with NaN as NULL: PostgreSQL orders NaN above every number
    and finds ``NaN > 0.8`` true; SQLite already stores NaN as NULL."""
    return func.nullif(column, literal(math.nan))


def _apply(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return column != value  # type: ignore[no-any-return]
    if op == "<":
        return column < value  # type: ignore[no-any-return]
    if op == "<=":
        return column <= value  # type: ignore[no-any-return]
    if op == ">":
        return column > value  # type: ignore[no-any-return]
    if op == ">=":
        return column >= value  # type: ignore[no-any-return]
    if op == "like":
        return _Like(column, literal(value), literal(_glob(value)))
    if op == "ilike":
        return column.ilike(value, escape="\\")  # type: ignore[no-any-return]
    if op == "in":
        return column.in_(value)  # type: ignore[no-any-return]
    return not_(column.in_(value))  # type: ignore[no-any-return]


def _compile_node(node: Node) -> ColumnElement[bool]:
    if isinstance(node, _BoolOp):
        parts = [_compile_node(item) for item in node.items]
        return and_(*parts) if node.op == "and" else or_(*parts)
    if node.kind == "attribute":
        return _apply(runs.c[node.key], node.op, node.value)
    table = {"metric": latest_metrics, "param": params, "tag": run_tags}[node.kind]
    value = _number(table.c.value) if node.kind == "metric" else table.c.value
    return exists(
        select(literal(1)).where(
            table.c.run_id == runs.c.id,
            table.c.key == node.key,
            _apply(value, node.op, node.value),
        )
    )


def compile_filter(text: str | None) -> ColumnElement[bool] | None:
    """SQL for a filter over ``runs``; None when the filter is empty."""
    node = parse_filter(text or "")
    return None if node is None else _compile_node(node)


@dataclass(frozen=True)
class OrderTerm:
    kind: str
    key: str
    descending: bool


def parse_order(terms: Sequence[str]) -> list[OrderTerm]:
    """Parse ``["metrics.auc DESC", "start_time"]``; a bad term points at its token."""
    parsed = []
    for term in terms:
        tokens = _tokenize(term)
        if not tokens or tokens[0].kind != "ident":
            raise FilterSyntaxError(
                "Expected a field to order by, such as 'metrics.auc DESC'",
                text=term,
                position=tokens[0].pos if tokens else 0,
            )
        kind, key = _split_ident(tokens[0], term)
        descending = False
        if len(tokens) > 1:
            word = tokens[1]
            if word.kind != "ident" or word.text.upper() not in ("ASC", "DESC"):
                raise FilterSyntaxError(
                    f"Expected ASC or DESC, got {word.text!r}",
                    text=term,
                    position=word.pos,
                    length=len(word.text),
                )
            descending = word.text.upper() == "DESC"
        if len(tokens) > 2:
            extra = tokens[2]
            raise FilterSyntaxError(
                f"Expected the end of the order term, got {extra.text!r}",
                text=term,
                position=extra.pos,
                length=len(extra.text),
            )
        parsed.append(OrderTerm(kind, key, descending))
    return parsed


def compile_order(terms: Sequence[str]) -> list[UnaryExpression[Any]]:
    """ORDER BY clauses over ``runs``; missing values sort last either way."""
    clauses = []
    for term in parse_order(terms):
        if term.kind == "attribute":
            column: Any = runs.c[term.key]
        else:
            table = {"metric": latest_metrics, "param": params, "tag": run_tags}[term.kind]
            value = _number(table.c.value) if term.kind == "metric" else table.c.value
            column = (
                select(value)
                .where(table.c.run_id == runs.c.id, table.c.key == term.key)
                .scalar_subquery()
            )
        clause = column.desc() if term.descending else column.asc()
        clauses.append(clause.nulls_last())
    return clauses
