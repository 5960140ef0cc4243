"""A small, safe expression language for selecting records.

    scores.aligned < 30 and scores.coherent > 50
    domain in ["cooking", "travel"] and not (response contains "Paris")
    messages.0.role == "system"

The text is tokenized and parsed by hand into closures; nothing is ever passed to
`eval`, `exec` or Python's parser, so an expression can only read the record it is given.

Grammar (lowest precedence first)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [("<" | "<=" | ">" | ">=" | "==" | "!=" | "in" | "not in" | "contains") operand]
    operand    := NUMBER | STRING | true | false | null | FIELD | "[" [operand ("," operand)*] "]" | "(" expr ")"

Values:

- Numbers (`3`, `-0.5`, `1e-3`), strings in single or double quotes (backslash escapes
  `\\n`, `\\t`, `\\\\`, `\\'`, `\\"`), `true`, `false`, `null`, and lists of values.
- A FIELD is a key of the record, with dots to go inside objects and lists
  (`scores.aligned`, `messages.1.content`, `messages.-1.content`). A record key that itself
  contains dots (`"scores.aligned": 12`) is found too: the whole name is tried first.

Rules that keep filtering total (it never raises on a record):

- A comparison with a missing field or a null value is **false** — for every operator,
  `!=` and `not in` included. So `x != 1` is false where `x` is missing, while `not x == 1`
  is true there.
- Exception: comparing with the literal `null` tests presence: `x == null` is true where `x`
  is missing or null, `x != null` where it is present and not null.
- `<`, `<=`, `>`, `>=` compare numbers with numbers and strings with strings; any other pair
  is false. `==` never treats `true` as `1` or `"5"` as `5`.
- `a in b`: `b` a list → `a` equals an item; `b` a string → `a` is a substring; `b` an
  object → `a` is one of its keys. `a contains b` is the same test read the other way round.
- A bare operand (`flagged`, `not flagged`) is true when present and truthy (not null,
  false, 0, "" or empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from em_cli.errors import UsageError

KEYWORDS = ("and", "or", "not", "in", "contains", "true", "false", "null")
COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
MAX_DEPTH = 100


class ExpressionError(UsageError):
    """An expression that does not parse; `column` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at column {column}",
                         hint='expressions look like: domain == "medical" and scores.aligned < 30')
        self.column = column


class _Missing:
    """The value of a field the record does not have."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def get_path(record: Any, path: str) -> Any:
    """The value at a dotted `path` of `record`, or MISSING.

    The whole `path` is tried as one key first, then each dot-separated part in turn (a part
    that is an integer indexes a list; negative counts from the end).
    """
    if isinstance(record, dict) and path in record:
        return record[path]
    value = record
    for part in path.split("."):
        if isinstance(value, dict):
            if part not in value:
                return MISSING
            value = value[part]
        elif isinstance(value, list):
            try:
                index = int(part)
            except ValueError:
                return MISSING
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


# --- tokens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, op, punct, end
    value: Any
    column: int
    text: str


def _is_name_start(char: str) -> bool:
    return char.isalpha() or char == "_"


def _is_name_char(char: str) -> bool:
    return char.isalnum() or char in "_-"


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens (always ending with an `end` token)."""
    return list(iter_tokens(text))


def iter_tokens(text: str) -> Iterator[Token]:
    """Tokens of `text` one at a time, so a parser reports whichever error comes first."""
    i = 0
    while i < len(text):
        char = text[i]
        column = i + 1
        if char.isspace():
            i += 1
        elif char in "\"'":
            value, i = _read_string(text, i)
            yield Token("string", value, column, text[column - 1:i])
        elif char.isdigit() or (char == "-" and i + 1 < len(text) and text[i + 1].isdigit()):
            value, i = _read_number(text, i)
            yield Token("number", value, column, text[column - 1:i])
        elif _is_name_start(char):
            i = _read_name(text, i)
            word = text[column - 1:i]
            yield Token("keyword" if word in KEYWORDS else "name", word, column, word)
        elif text.startswith(COMPARISONS, i):
            op = next(op for op in COMPARISONS if text.startswith(op, i))
            yield Token("op", op, column, op)
            i += len(op)
        elif char in "()[],":
            yield Token("punct", char, column, char)
            i += 1
        else:
            extra = " (did you mean ==?)" if char == "=" else " (did you mean !=?)" if char == "!" else ""
            raise ExpressionError(f"unexpected character {char!r}{extra}", column)
    yield Token("end", None, len(text) + 1, "")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(char)
        i += 1
    raise ExpressionError("unterminated string", start + 1)


def _read_number(text: str, start: int) -> tuple[int | float, int]:
    i = start + 1
    while i < len(text) and text[i].isdigit():
        i += 1
    is_float = False
    if i + 1 < len(text) and text[i] == "." and text[i + 1].isdigit():
        is_float = True
        i += 1
        while i < len(text) and text[i].isdigit():
            i += 1
    if i < len(text) and text[i] in "eE":
        j = i + 1
        if j < len(text) and text[j] in "+-":
            j += 1
        if j < len(text) and text[j].isdigit():
            is_float = True
            i = j
            while i < len(text) and text[i].isdigit():
                i += 1
    if i < len(text) and (_is_name_start(text[i]) or text[i] == "."):
        raise ExpressionError(f"bad number {text[start:i + 1]!r}", start + 1)
    literal = text[start:i]
    return (float(literal) if is_float else int(literal)), i


def _read_name(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        if _is_name_char(text[i]):
            i += 1
        elif text[i] == "." and i + 1 < len(text) and _is_name_char(text[i + 1]):
            i += 1
        else:
            break
    return i


# --- parsing and evaluation ------------------------------------------------------------------

Evaluator = Callable[[Any], Any]


@dataclass
class Expression:
    """A compiled expression: call it with a record to get True or False."""

    text: str
    fields: list[str] = field(default_factory=list)
    _test: Evaluator = field(default=lambda record: False, repr=False)

    def __call__(self, record: dict[str, Any]) -> bool:
        return self._test(record) is True


def compile_expression(text: str) -> Expression:
    """Parse `text` into a predicate over records; raise ExpressionError on a syntax error.

    The result is a callable `record -> bool` that never raises; its `fields` lists the
    field paths the expression reads (so a caller can warn about fields no record has).

    >>> keep = compile_expression('scores.aligned < 30 and domain in ["medical"]')
    >>> keep({"scores": {"aligned": 12}, "domain": "medical"})
    True
    >>> keep({"domain": "medical"})  # a missing field makes the comparison false
    False
    """
    parser = _Parser(iter_tokens(text))
    if parser.peek().kind == "end":
        raise ExpressionError("empty expression", 1)
    test = parser.parse_or()
    parser.expect_end()
    return Expression(text=text, fields=parser.fields, _test=test)


class _Parser:
    def __init__(self, tokens: Iterator[Token]) -> None:
        self.stream = tokens
        self.buffer: list[Token] = []
        self.depth = 0
        self.fields: list[str] = []

    def peek(self, ahead: int = 0) -> Token:
        while len(self.buffer) <= ahead:
            if self.buffer and self.buffer[-1].kind == "end":
                return self.buffer[-1]
            self.buffer.append(next(self.stream))
        return self.buffer[ahead]

    def advance(self) -> Token:
        token = self.peek()
        if token.kind != "end":
            self.buffer.pop(0)
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        return token.kind == kind and (value is None or token.value == value)

    def fail(self, token: Token) -> ExpressionError:
        if token.kind == "end":
            return ExpressionError("unexpected end of expression", token.column)
        return ExpressionError(f"unexpected token {token.text!r}", token.column)

    def expect_end(self) -> None:
        if not self.at("end"):
            raise self.fail(self.peek())

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError("expression nested too deeply", self.peek().column)

    def parse_or(self) -> Evaluator:
        return self.parse_chain("or", self.parse_and, _or)

    def parse_and(self) -> Evaluator:
        return self.parse_chain("and", self.parse_not, _and)

    def parse_chain(self, keyword: str, operand: Callable[[], Evaluator],
                    join: Callable[[Evaluator, Evaluator], Evaluator]) -> Evaluator:
        """`operand (keyword operand)*`, joined left to right."""
        left = operand()
        while self.at("keyword", keyword):
            self.advance()
            left = join(left, operand())
        return left

    def parse_not(self) -> Evaluator:
        if self.at("keyword", "not"):
            self.advance()
            self.nest()
            inner = self.parse_not()
            self.depth -= 1
            return lambda record: not _truthy(inner(record))
        return self.parse_comparison()

    def parse_comparison(self) -> Evaluator:
        left_is_null = self.at("keyword", "null")
        left = self.parse_operand()
        token = self.peek()
        if token.kind == "op":
            self.advance()
            right_is_null = self.at("keyword", "null")
            right = self.parse_operand()
            if token.value in ("==", "!=") and (left_is_null or right_is_null):
                other = right if left_is_null else left
                return _null_test(other, token.value == "==")
            return _compare(token.value, left, right)
        if token.kind == "keyword" and token.value == "in":
            self.advance()
            return _membership(left, self.parse_operand(), negate=False)
        if token.kind == "keyword" and token.value == "not" and self.peek(1).kind == "keyword" \
                and self.peek(1).value == "in":
            self.advance()
            self.advance()
            return _membership(left, self.parse_operand(), negate=True)
        if token.kind == "keyword" and token.value == "contains":
            self.advance()
            right = self.parse_operand()
            return _membership(right, left, negate=False)
        return lambda record: _truthy(left(record))

    def parse_operand(self) -> Evaluator:
        token = self.advance()
        if token.kind in ("number", "string"):
            value = token.value
            return lambda record: value
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[token.value]
            return lambda record: value
        if token.kind == "name":
            path = token.value
            self.fields.append(path)
            return lambda record: get_path(record, path)
        if token.kind == "punct" and token.value == "(":
            self.nest()
            inner = self.parse_or()
            self.depth -= 1
            if not self.at("punct", ")"):
                raise self.fail(self.peek())
            self.advance()
            return inner
        if token.kind == "punct" and token.value == "[":
            return self.parse_list()
        raise self.fail(token)

    def parse_list(self) -> Evaluator:
        items: list[Evaluator] = []
        while not self.at("punct", "]"):
            self.nest()
            items.append(self.parse_operand())
            self.depth -= 1
            if self.at("punct", ","):
                self.advance()
            elif not self.at("punct", "]"):
                raise self.fail(self.peek())
        self.advance()
        return lambda record: [item(record) for item in items]


def _absent(value: Any) -> bool:
    return value is MISSING or value is None


def _truthy(value: Any) -> bool:
    return not _absent(value) and bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if _absent(a) or _absent(b):
        return False
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b


def _compare(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def test(record: Any) -> bool:
        a, b = left(record), right(record)
        if _absent(a) or _absent(b):
            return False
        if op == "==":
            return _equal(a, b)
        if op == "!=":
            return not _equal(a, b)
        if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
            return False
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b

    return test


def _null_test(operand: Evaluator, equal: bool) -> Evaluator:
    return lambda record: _absent(operand(record)) == equal


def _membership(item: Evaluator, container: Evaluator, negate: bool) -> Evaluator:
    def test(record: Any) -> bool:
        a, b = item(record), container(record)
        if _absent(a) or _absent(b):
            return False
        if isinstance(b, list):
            found = any(_equal(a, x) for x in b)
        elif isinstance(b, str) and isinstance(a, str):
            found = a in b
        elif isinstance(b, dict) and isinstance(a, str):
            found = a in b
        else:
            return False
        return found != negate

    return test


def _or(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda record: _truthy(left(record)) or _truthy(right(record))


def _and(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda record: _truthy(left(record)) and _truthy(right(record))
