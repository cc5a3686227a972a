"""Chat templates: the Jinja snippet in a model's tokenizer_config.json that turns messages into a prompt.

An instruction-tuned model was fine-tuned on conversations written in one exact format (chapter 7 of
the book uses Alpaca's "### Instruction:" format; Llama 3 writes <|start_header_id|>user<|end_header_id|>,
Qwen and SmolLM2 write <|im_start|>user). The model folder ships that format as a template in Jinja,
a small template language, which ``transformers``' ``apply_chat_template`` renders:

    {% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']
    + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}

This is not a Jinja engine: it renders the part of the language that chat templates use (the templates
of Llama 3 and 3.2, Qwen3 and SmolLM2 among them, tested against ``transformers``), with Jinja's
results, whitespace control and scoping, and the environment transformers gives templates
(``trim_blocks``, ``lstrip_blocks``, ``namespace``, ``raise_exception``, ``strftime_now``, a
``tojson`` that does not escape HTML):

    statements   {% if/elif/else %}, {% for x in xs [if cond] %} with loop.index0/first/last/...,
                 {% else %} and {% break/continue %}, {% set x = ... %}, {% set ns.x = ... %},
                 {% generation %}, {# comments #}
    expressions  literals, names, a.b, a[i], a[i:j:k], calls, not/and/or, == != < <= > >= in,
                 + - * / // % ** ~, x if c else y, filters (FILTERS) and tests (TESTS), and the
                 string and dict methods in METHODS

Anything else (macros, includes, other filters, tests or methods) is refused in one line when the
template is compiled: ``ChatTemplateError``, after which a caller falls back to a plain prompt. A
template comes from a downloaded file, so it is data, never code: it reaches no Python attribute beyond
the methods listed, and rendering is bounded (loop steps, string and list sizes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

MAX_TEMPLATE_CHARS = 1 << 20
MAX_TEXT_CHARS = 1 << 22          # any string or list the template builds, and its output
MAX_LOOP_STEPS = 1 << 20          # loop iterations in one rendering, all loops together
MAX_RANGE = 100_000               # range(n), as Jinja's sandbox allows


class ChatTemplateError(ValueError):
    """A chat template that uses what this renderer does not support, or that fails while rendering."""


class Undefined:
    """What a missing variable, attribute or item is: false, empty, printed as "" (Jinja's Undefined).
    Adding to it, comparing it, or reaching into it is an error, as in Jinja."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Undefined)

    def __hash__(self) -> int:
        return 0


class Namespace:
    """``namespace(a=1)``: the one object a template may change, so a loop can leave a result behind."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __repr__(self) -> str:
        return f"<Namespace {self.values!r}>"


class _Loop:
    """The ``loop`` variable of a for loop."""

    def __init__(self, items: list, index0: int) -> None:
        n = len(items)
        self.attributes = {
            "index0": index0, "index": index0 + 1, "revindex0": n - index0 - 1, "revindex": n - index0,
            "first": index0 == 0, "last": index0 == n - 1, "length": n, "depth": 1, "depth0": 0,
            "previtem": items[index0 - 1] if index0 > 0 else Undefined("loop.previtem"),
            "nextitem": items[index0 + 1] if index0 < n - 1 else Undefined("loop.nextitem")}


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _fail(problem: str, line: int | None = None) -> ChatTemplateError:
    return ChatTemplateError(f"chat template{f' line {line}' if line else ''}: {problem}")


def _bounded(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_TEXT_CHARS:
        raise _fail(f"a value of {len(value):,} items or characters is more than a chat prompt needs "
                    f"(at most {MAX_TEXT_CHARS:,})")
    return value


def _text(value: Any) -> str:
    """A value as Jinja prints it (Python's str; Undefined prints as nothing)."""
    return _bounded(str(value))


# -------------------------------------------------------------------------------- filters, tests
def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    """transformers' tojson filter (json.dumps; Jinja's own escapes <, >, & and ')."""
    def plain(v: Any) -> Any:
        if isinstance(v, Undefined):
            raise _fail(f"tojson of the undefined {v.name!r}")
        if isinstance(v, Namespace):
            raise _fail("tojson of a namespace")
        return v
    try:
        return _bounded(json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                                   sort_keys=sort_keys, default=plain))
    except (TypeError, ValueError) as exc:
        raise _fail(f"tojson: {exc}") from None


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    return default_value if isinstance(value, Undefined) or (boolean and not value) else value


def _first(value: Any) -> Any:
    return next(iter(value), Undefined("first"))


def _last(value: Any) -> Any:
    items = list(value)
    return items[-1] if items else Undefined("last")


def _reverse(value: Any) -> Any:
    return value[::-1] if isinstance(value, str) else list(reversed(list(value)))


def _join(value: Any, separator: str = "", attribute: str | None = None) -> str:
    items = [item.get(attribute, Undefined(attribute)) if attribute is not None and isinstance(item, dict)
             else item for item in value]
    return _bounded(str(separator).join(map(str, items)))


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


FILTERS: dict[str, Callable[..., Any]] = {
    "trim": lambda s, chars=None: str(s).strip(chars),
    "length": len, "count": len,
    "tojson": _tojson,
    "lower": lambda s: str(s).lower(), "upper": lambda s: str(s).upper(),
    "capitalize": lambda s: str(s).capitalize(), "title": lambda s: str(s).title(),
    "string": str, "safe": lambda s: s,
    "default": _default, "d": _default,
    "join": _join, "first": _first, "last": _last, "reverse": _reverse,
    "list": lambda v: _bounded(list(v)),
    "items": lambda v: list(v.items()) if isinstance(v, dict) else [],
    "replace": lambda s, old, new, count=None: _bounded(
        str(s).replace(str(old), str(new), -1 if count is None else count)),
    "int": _int, "float": _float, "abs": abs,
}

TESTS: dict[str, Callable[..., bool]] = {
    "defined": lambda v: not isinstance(v, Undefined),
    "undefined": lambda v: isinstance(v, Undefined),
    "none": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "boolean": lambda v: isinstance(v, bool),
    "true": lambda v: v is True, "false": lambda v: v is False,
    "mapping": lambda v: isinstance(v, dict),
    "iterable": lambda v: isinstance(v, (str, list, tuple, dict, Undefined)),
    "sequence": lambda v: isinstance(v, (str, list, tuple, dict)),
    "odd": lambda v: v % 2 == 1, "even": lambda v: v % 2 == 0,
    "divisibleby": lambda v, n: v % n == 0,
    "eq": lambda a, b: a == b, "equalto": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "sameas": lambda a, b: a is b,
    "in": lambda a, b: a in b,
}

# Methods a template may call, by the type of the value (Jinja's ImmutableSandboxedEnvironment allows
# more; these are the ones chat templates use). Dict methods that change the dict are refused.
METHODS: dict[type, frozenset[str]] = {
    str: frozenset({"startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "lower",
                    "upper", "title", "capitalize", "replace", "find", "rfind", "count", "splitlines",
                    "join", "isdigit", "isspace", "isalpha"}),
    dict: frozenset({"get", "items", "keys", "values"}),
}


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _raise_exception(message: Any) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


def _range(*args: int) -> list[int]:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise _fail(f"range of {len(values):,} numbers (at most {MAX_RANGE:,})")
    return list(values)


GLOBALS: dict[str, Callable[..., Any]] = {
    "namespace": lambda *args, **kwargs: Namespace(dict(*args, **kwargs)),
    "raise_exception": _raise_exception, "strftime_now": _strftime_now,
    "range": _range, "dict": lambda *args, **kwargs: dict(*args, **kwargs),
}


# -------------------------------------------------------------------------------- lexing
_NEWLINE = re.compile(r"\r\n|\r|\n")
_TAG_START = re.compile(r"(\{\{|\{%|\{#)([-+]?)")
_COMMENT_END = re.compile(r"(.*?)(?:\+#\}|-#\}\s*|#\}\n?)", re.S)
_BLOCK_END = re.compile(r"\+%\}|-%\}\s*|%\}\n?")
_VARIABLE_END = re.compile(r"-\}\}\s*|\}\}")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>//|\*\*|==|!=|>=|<=|[-+/*%~\[\](){}<>=.:|,;])
""", re.S | re.X)
_CLOSING = {"(": ")", "[": "]", "{": "}"}


def _lex(source: str) -> list[tuple[str, Any, int]]:
    """The template as ("data", text, line), ("output", tokens, line) and ("block", tokens, line) items,
    with Jinja's whitespace rules applied (trim_blocks, lstrip_blocks, "-" and "+" markers, newlines
    made "\\n", one trailing newline dropped). A token is (kind, value)."""
    lines = _NEWLINE.split(source)
    if lines[-1] == "":
        lines.pop()
    source = "\n".join(lines)
    items: list[tuple[str, Any, int]] = []
    pos, line, line_starting = 0, 1, True
    while pos < len(source):
        start = _TAG_START.search(source, pos)
        if start is None:
            items.append(("data", source[pos:], line))
            break
        text, kind, sign = source[pos:start.start()], start.group(1), start.group(2)
        if sign == "-":
            text = text.rstrip()
        elif sign != "+" and kind != "{{":                  # lstrip_blocks: a tag alone on its line
            line_start = text.rfind("\n") + 1
            if (line_start > 0 or line_starting) and re.fullmatch(r"\s+", text[line_start:]):
                text = text[:line_start]
        items.append(("data", text, line))
        line += source.count("\n", pos, start.end())
        pos = start.end()
        if kind == "{#":
            end = _COMMENT_END.match(source, pos)
            if end is None:
                raise _fail("a comment {# is never closed", line)
        else:
            tokens, pos = _lex_tag(source, pos, _BLOCK_END if kind == "{%" else _VARIABLE_END, line)
            end = (_BLOCK_END if kind == "{%" else _VARIABLE_END).match(source, pos)
            items.append(("block" if kind == "{%" else "output", tokens, line))
        line += source.count("\n", pos, end.end())
        line_starting = end.group().endswith("\n")
        pos = end.end()
    return [item for item in items if item[0] != "data" or item[1]]


def _lex_tag(source: str, pos: int, end_pattern: re.Pattern, line: int) -> tuple[list[tuple[str, Any]], int]:
    """The tokens of one {{ }} or {% %} tag, up to (not including) its end marker."""
    tokens: list[tuple[str, Any]] = []
    open_brackets: list[str] = []
    while True:
        if not open_brackets and end_pattern.match(source, pos):
            return tokens, pos
        match = _TOKEN.match(source, pos)
        if match is None:
            if pos >= len(source):
                raise _fail("the template ends inside a tag", line)
            raise _fail(f"cannot read {source[pos:pos + 20]!r}", line)
        kind, value = match.lastgroup, match.group()
        pos = match.end()
        if kind == "space":
            continue
        if kind == "string":
            try:
                value = value[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
            except UnicodeDecodeError as exc:
                raise _fail(f"a string literal has a bad escape: {exc}", line) from None
        elif kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "op" and value in _CLOSING:
            open_brackets.append(_CLOSING[value])
        elif kind == "op" and value in ")]}":
            if not open_brackets or open_brackets.pop() != value:
                raise _fail(f"unbalanced {value!r}", line)
        tokens.append((kind, value))


# -------------------------------------------------------------------------------- parsing
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_CONSTANTS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b}


class _Parser:
    """Recursive descent over one tag's tokens, with Jinja's precedence (lowest first): x if c else y,
    or, and, not, comparisons and in, + -, ~, * / // %, **, unary - +, then filters | and tests is,
    which bind to the primary before them. Expressions become nested tuples (kind, ...)."""

    def __init__(self, tokens: list[tuple[str, Any]], line: int) -> None:
        self.tokens, self.pos, self.line = tokens, 0, line

    def fail(self, problem: str) -> ChatTemplateError:
        return _fail(problem, self.line)

    def peek(self, offset: int = 0) -> tuple[str, Any]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", None)

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        self.pos += 1
        return token

    def at(self, kind: str, value: Any = None, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token[0] == kind and (value is None or token[1] == value)

    def skip(self, kind: str, value: Any = None) -> bool:
        if self.at(kind, value):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> Any:
        if not self.at(kind, value):
            raise self.fail(f"expected {value or kind!r}, found {self.peek()[1]!r}")
        return self.take()[1]

    def done(self) -> None:
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected {self.peek()[1]!r}")

    def name(self) -> str:
        return self.expect("name")

    # ---------------------------------------------------------------- expressions
    def expression(self, with_condition: bool = True) -> tuple:
        node = self.or_()
        while with_condition and self.skip("name", "if"):
            test = self.or_()
            otherwise = self.expression() if self.skip("name", "else") else ("const", Undefined("if"))
            node = ("cond", test, node, otherwise)
        return node

    def or_(self) -> tuple:
        node = self.and_()
        while self.skip("name", "or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.not_()
        while self.skip("name", "and"):
            node = ("and", node, self.not_())
        return node

    def not_(self) -> tuple:
        return ("not", self.not_()) if self.skip("name", "not") else self.compare()

    def compare(self) -> tuple:
        node = self.sum_()
        operations = []
        while True:
            if self.at("op") and self.peek()[1] in _COMPARE:
                operations.append((self.take()[1], self.sum_()))
            elif self.skip("name", "in"):
                operations.append(("in", self.sum_()))
            elif self.at("name", "not") and self.at("name", "in", 1):
                self.pos += 2
                operations.append(("not in", self.sum_()))
            else:
                return ("compare", node, operations) if operations else node

    def sum_(self) -> tuple:
        node = self.concat()
        while self.at("op", "+") or self.at("op", "-"):
            node = ("binop", self.take()[1], node, self.concat())
        return node

    def concat(self) -> tuple:
        parts = [self.product()]
        while self.skip("op", "~"):
            parts.append(self.product())
        return ("concat", parts) if len(parts) > 1 else parts[0]

    def product(self) -> tuple:
        node = self.power()
        while self.at("op") and self.peek()[1] in ("*", "/", "//", "%"):
            node = ("binop", self.take()[1], node, self.power())
        return node

    def power(self) -> tuple:
        node = self.unary()
        while self.skip("op", "**"):
            node = ("binop", "**", node, self.unary())
        return node

    def unary(self, with_filters: bool = True) -> tuple:
        if self.at("op", "-") or self.at("op", "+"):
            sign = self.take()[1]
            node = ("binop", sign, ("const", 0), self.unary(with_filters=False))
        else:
            node = self.postfix(self.primary())
        return self.filters(node) if with_filters else node

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "name":
            if value in _CONSTANTS:
                return ("const", _CONSTANTS[value])
            return ("name", value)
        if kind == "string":
            while self.at("string"):                      # "a" "b" is "ab", as in Jinja
                value += self.take()[1]
            return ("const", value)
        if kind in ("int", "float"):
            return ("const", value)
        if (kind, value) == ("op", "("):
            if self.skip("op", ")"):
                return ("tuple", [])
            items = [self.expression()]
            tuple_ = False
            while self.skip("op", ","):
                tuple_ = True
                if self.at("op", ")"):
                    break
                items.append(self.expression())
            self.expect("op", ")")
            return ("tuple", items) if tuple_ else items[0]
        if (kind, value) == ("op", "["):
            items = []
            while not self.skip("op", "]"):
                items.append(self.expression())
                if not self.skip("op", ","):
                    self.expect("op", "]")
                    break
            return ("list", items)
        if (kind, value) == ("op", "{"):
            pairs = []
            while not self.skip("op", "}"):
                key = self.expression()
                self.expect("op", ":")
                pairs.append((key, self.expression()))
                if not self.skip("op", ","):
                    self.expect("op", "}")
                    break
            return ("dict", pairs)
        raise self.fail(f"unexpected {value!r}" if kind != "end" else "an expression ends too early")

    def postfix(self, node: tuple) -> tuple:
        while True:
            if self.skip("op", "."):
                if self.at("int"):
                    node = ("item", node, ("const", self.take()[1]))
                elif self.at("name") and self.peek()[1].startswith("_"):
                    raise self.fail(f"the attribute {self.peek()[1]!r} is refused (a template reaches data, "
                                    f"not Python's insides)")
                else:
                    node = ("attr", node, self.name())
            elif self.skip("op", "["):
                node = ("item", node, self.subscript())
            elif self.at("op", "("):
                node = self.call(node)
            else:
                return node

    def subscript(self) -> tuple:
        parts: list[tuple | None] = [None]
        while not self.skip("op", "]"):
            if self.skip("op", ":"):
                parts.append(None)
            elif parts[-1] is None:
                parts[-1] = self.expression()
            else:
                raise self.fail(f"unexpected {self.peek()[1]!r} in a subscript")
        if len(parts) == 1:
            if parts[0] is None:
                raise self.fail("an empty subscript []")
            return parts[0]
        if len(parts) > 3:
            raise self.fail("a slice has at most three parts")
        return ("slice", [p if p is not None else ("const", None) for p in (parts + [None])[:3]])

    def arguments(self) -> tuple[list[tuple], list[tuple[str, tuple]]]:
        self.expect("op", "(")
        args: list[tuple] = []
        kwargs: list[tuple[str, tuple]] = []
        while not self.skip("op", ")"):
            if self.at("op", "*") or self.at("op", "**"):
                raise self.fail("*args and **kwargs are not supported")
            if self.at("name") and self.at("op", "=", 1):
                key = self.name()
                self.pos += 1
                kwargs.append((key, self.expression()))
            else:
                args.append(self.expression())
            if not self.skip("op", ","):
                self.expect("op", ")")
                break
        return args, kwargs

    def call(self, node: tuple) -> tuple:
        if node[0] == "name" and node[1] not in GLOBALS:
            raise self.fail(f"the function {node[1]!r} is not supported (only {', '.join(sorted(GLOBALS))})")
        if node[0] == "attr" and not any(node[2] in methods for methods in METHODS.values()):
            raise self.fail(f"the method .{node[2]}() is not supported")
        if node[0] not in ("name", "attr"):
            raise self.fail("only functions and methods by name can be called")
        return ("call", node, *self.arguments())

    def filters(self, node: tuple) -> tuple:
        while True:
            if self.skip("op", "|"):
                name = self.name()
                if name not in FILTERS:
                    raise self.fail(f"the filter {name!r} is not supported")
                args, kwargs = self.arguments() if self.at("op", "(") else ([], [])
                node = ("filter", name, node, args, kwargs)
            elif self.skip("name", "is"):
                negate = self.skip("name", "not")
                name = self.name()
                if name not in TESTS:
                    raise self.fail(f"the test 'is {name}' is not supported")
                if self.at("op", "("):
                    args, _ = self.arguments()
                elif self.peek()[0] in ("name", "string", "int", "float") and not any(
                        self.at("name", word) for word in ("else", "or", "and", "if", "is", "not", "in")) \
                        or self.at("op", "[") or self.at("op", "{"):
                    args = [self.postfix(self.primary())]
                else:
                    args = []
                node = ("test", name, node, args, negate)
            elif self.at("op", "("):
                node = self.call(node)
            else:
                return node


def _statement(tokens: list[tuple[str, Any]], line: int) -> tuple:
    """One {% %} tag as (keyword, line, arguments...)."""
    parser = _Parser(tokens, line)
    keyword = parser.name() if parser.at("name") else None
    if keyword in ("if", "elif"):
        node = (keyword, line, parser.expression())
    elif keyword == "for":
        targets = [parser.name()]
        while parser.skip("op", ","):
            targets.append(parser.name())
        parser.expect("name", "in")
        iterable = parser.expression(with_condition=False)
        condition = parser.expression() if parser.skip("name", "if") else None
        if parser.at("name", "recursive"):
            raise parser.fail("recursive loops are not supported")
        node = ("for", line, targets, iterable, condition)
    elif keyword == "set":
        target = parser.name()
        attribute = parser.name() if parser.skip("op", ".") else None
        if not parser.skip("op", "="):
            raise parser.fail("only {% set name = value %} and {% set ns.name = value %} are supported")
        node = ("set", line, target, attribute, parser.expression())
    elif keyword in ("else", "endif", "endfor", "generation", "endgeneration", "break", "continue"):
        node = (keyword, line)
    else:
        raise parser.fail(f"{{% {keyword or (tokens[0][1] if tokens else '')} %}} is not supported (a chat "
                          f"template renderer, not a Jinja engine)")
    parser.done()
    return node


def _parse(items: list[tuple[str, Any, int]]) -> list[tuple]:
    """The items as a tree: ("text", s), ("output", expr), ("if", [(test, body)...], else_body),
    ("for", targets, iterable, condition, body, else_body, line), ("set", ...), ("generation", body)."""
    position = 0

    def block(ends: tuple[str, ...]) -> tuple[list[tuple], tuple | None]:
        nonlocal position
        body: list[tuple] = []
        while position < len(items):
            kind, value, line = items[position]
            position += 1
            if kind == "data":
                body.append(("text", value))
                continue
            if kind == "output":
                parser = _Parser(value, line)
                body.append(("output", parser.expression()))
                parser.done()
                continue
            statement = _statement(value, line)
            keyword = statement[0]
            if keyword in ends:
                return body, statement
            if keyword == "if":
                branches, otherwise, end = [(statement[2], None)], [], statement
                while True:
                    inner, end = block(("elif", "else", "endif"))
                    branches[-1] = (branches[-1][0], inner)
                    if end[0] == "elif":
                        branches.append((end[2], None))
                    elif end[0] == "else":
                        otherwise, _ = block(("endif",))
                        break
                    else:
                        break
                body.append(("if", branches, otherwise))
            elif keyword == "for":
                inner, end = block(("else", "endfor"))
                otherwise = block(("endfor",))[0] if end[0] == "else" else []
                body.append(("for", statement[2], statement[3], statement[4], inner, otherwise, line))
            elif keyword == "generation":
                body.append(("generation", block(("endgeneration",))[0]))
            elif keyword in ("set", "break", "continue"):
                body.append(statement)
            else:
                raise _fail(f"{{% {keyword} %}} without its opening tag", line)
        if ends:
            raise _fail(f"the template ends before {{% {ends[-1]} %}}")
        return body, None

    return block(())[0]


# -------------------------------------------------------------------------------- rendering
class _Scope:
    """Variables: a dict and the enclosing scope (a for loop's body gets a fresh one each iteration,
    so what it sets is gone at the next iteration and after the loop, as in Jinja)."""

    def __init__(self, values: dict[str, Any], parent: _Scope | None = None) -> None:
        self.values, self.parent = values, parent

    def get(self, name: str) -> Any:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.parent
        return Undefined(name)


class _Renderer:
    def __init__(self) -> None:
        self.output: list[str] = []
        self.size = 0
        self.steps = 0

    # ---------------------------------------------------------------- statements
    def run(self, body: list[tuple], scope: _Scope) -> None:
        for node in body:
            kind = node[0]
            if kind == "text":
                self.emit(node[1])
            elif kind == "output":
                self.emit(_text(self.eval(node[1], scope)))
            elif kind == "if":
                for test, inner in node[1]:
                    if self.eval(test, scope):
                        self.run(inner, scope)
                        break
                else:
                    self.run(node[2], scope)
            elif kind == "for":
                self.loop(node, scope)
            elif kind == "set":
                _, line, target, attribute, expression = node
                value = self.eval(expression, scope)
                if attribute is None:
                    scope.values[target] = value
                elif isinstance(namespace := scope.get(target), Namespace):
                    namespace.values[attribute] = value
                else:
                    raise _fail(f"{{% set {target}.{attribute} %}}: {target!r} is not a namespace", line)
            elif kind == "generation":
                self.run(node[1], scope)
            elif kind == "break":
                raise _Break
            elif kind == "continue":
                raise _Continue

    def loop(self, node: tuple, scope: _Scope) -> None:
        _, targets, iterable, condition, body, otherwise, line = node
        value = self.eval(iterable, scope)
        if isinstance(value, dict):
            value = list(value)
        elif not isinstance(value, (list, tuple, str, Undefined)):
            raise _fail(f"cannot loop over {type(value).__name__}", line)

        def bind(item: Any, inner: _Scope) -> None:
            if len(targets) == 1:
                inner.values[targets[0]] = item
            elif isinstance(item, (list, tuple)) and len(item) == len(targets):
                inner.values.update(zip(targets, item, strict=True))
            else:
                raise _fail(f"cannot unpack {item!r:.40} into {', '.join(targets)}", line)

        items = list(value)
        if condition is not None:
            kept = []
            for item in items:
                inner = _Scope({}, scope)
                bind(item, inner)
                if self.eval(condition, inner):
                    kept.append(item)
            items = kept
        for index0, item in enumerate(items):
            self.steps += 1
            if self.steps > MAX_LOOP_STEPS:
                raise _fail(f"more than {MAX_LOOP_STEPS:,} loop steps", line)
            inner = _Scope({"loop": _Loop(items, index0)}, scope)
            bind(item, inner)
            try:
                self.run(body, inner)
            except _Continue:
                continue
            except _Break:
                break
        if not items:
            self.run(otherwise, scope)

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT_CHARS:
            raise _fail(f"the prompt grows past {MAX_TEXT_CHARS:,} characters")
        self.output.append(text)

    # ---------------------------------------------------------------- expressions
    def eval(self, node: tuple, scope: _Scope) -> Any:
        kind = node[0]
        if kind == "const":
            return node[1]
        if kind == "name":
            return scope.get(node[1])
        if kind == "attr":
            return _attribute(self.eval(node[1], scope), node[2])
        if kind == "item":
            return _item(self.eval(node[1], scope), self.eval(node[2], scope))
        if kind == "slice":
            return slice(*(self.eval(part, scope) for part in node[1]))
        if kind == "call":
            return self.call(node, scope)
        if kind == "filter":
            _, name, operand, args, kwargs = node
            operand = self.eval(operand, scope)
            return self.apply(f"filter {name!r}", FILTERS[name], operand, args, kwargs, scope)
        if kind == "test":
            _, name, operand, args, negate = node
            operand = self.eval(operand, scope)
            return bool(self.apply(f"test {name!r}", TESTS[name], operand, args, [], scope)) != negate
        if kind == "not":
            return not self.eval(node[1], scope)
        if kind == "and":
            left = self.eval(node[1], scope)
            return self.eval(node[2], scope) if left else left
        if kind == "or":
            left = self.eval(node[1], scope)
            return left if left else self.eval(node[2], scope)
        if kind == "cond":
            return self.eval(node[2] if self.eval(node[1], scope) else node[3], scope)
        if kind == "compare":
            return self.compare(node, scope)
        if kind == "binop":
            return _binop(node[1], self.eval(node[2], scope), self.eval(node[3], scope))
        if kind == "concat":
            return _bounded("".join(_text(self.eval(part, scope)) for part in node[1]))
        if kind == "list":
            return [self.eval(item, scope) for item in node[1]]
        if kind == "tuple":
            return tuple(self.eval(item, scope) for item in node[1])
        if kind == "dict":
            return {self.eval(key, scope): self.eval(value, scope) for key, value in node[1]}
        raise _fail(f"cannot evaluate {kind}")

    def compare(self, node: tuple, scope: _Scope) -> bool:
        left = self.eval(node[1], scope)
        for op, right_node in node[2]:
            right = self.eval(right_node, scope)
            if op in ("<", "<=", ">", ">=") and (isinstance(left, Undefined) or isinstance(right, Undefined)):
                raise _fail(f"cannot compare {op} with an undefined value")
            try:
                result = _COMPARISONS[op](left, right)
            except TypeError as exc:
                raise _fail(f"cannot compare: {exc}") from None
            if not result:
                return False
            left = right
        return True

    def call(self, node: tuple, scope: _Scope) -> Any:
        _, function, args, kwargs = node
        if function[0] == "name":
            name = function[1]
            return self.apply(f"{name}()", GLOBALS[name], None, args, kwargs, scope, bound=False)
        owner = self.eval(function[1], scope)
        if isinstance(owner, Undefined):
            raise _fail(f"{owner.name!r} is undefined, so it has no method .{function[2]}()")
        allowed = METHODS.get(type(owner), frozenset())
        if function[2] not in allowed:
            raise _fail(f"the method .{function[2]}() of a {type(owner).__name__} is not supported")
        return self.apply(f".{function[2]}()", getattr(owner, function[2]), None, args, kwargs, scope,
                          bound=False)

    def apply(self, what: str, function: Callable[..., Any], operand: Any, args: list[tuple],
              kwargs: list[tuple[str, tuple]], scope: _Scope, bound: bool = True) -> Any:
        values = [self.eval(arg, scope) for arg in args]
        named = {key: self.eval(value, scope) for key, value in kwargs}
        try:
            result = function(operand, *values, **named) if bound else function(*values, **named)
        except ChatTemplateError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as exc:
            raise _fail(f"{what}: {exc}") from None
        return _bounded(result)


def _attribute(value: Any, name: str) -> Any:
    """``value.name`` as Jinja reads it: a listed method, an attribute, else the item, else Undefined."""
    if isinstance(value, Undefined):
        raise _fail(f"{value.name!r} is undefined, so it has no attribute {name!r}")
    if isinstance(value, Namespace):
        return value.values.get(name, Undefined(name))
    if isinstance(value, _Loop):
        return value.attributes.get(name, Undefined(f"loop.{name}"))
    if name in METHODS.get(type(value), ()):
        return getattr(value, name)
    if isinstance(value, dict):
        return value.get(name, Undefined(name))
    return Undefined(name)


def _item(value: Any, key: Any) -> Any:
    """``value[key]`` as Jinja reads it (a slice when ``key`` is a list of three parts)."""
    if isinstance(value, Undefined):
        raise _fail(f"{value.name!r} is undefined, so it has no item {key!r:.30}")
    try:
        return value[key]
    except ValueError as exc:                                # a slice step of 0
        raise _fail(f"cannot slice: {exc}") from None
    except (KeyError, IndexError, TypeError):
        return _attribute(value, key) if isinstance(key, str) else Undefined(str(key))


def _binop(op: str, left: Any, right: Any) -> Any:
    if isinstance(left, Undefined) or isinstance(right, Undefined):
        name = (left if isinstance(left, Undefined) else right).name
        raise _fail(f"{name!r} is undefined, so it cannot take part in {op}")
    if op != "+" and not all(isinstance(v, (int, float)) for v in (left, right)):
        raise _fail(f"{op} works on numbers here, not {type(left).__name__} and {type(right).__name__}")
    if op == "**" and abs(right) > 1000:
        raise _fail("an exponent above 1000")
    try:
        result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                  "/": lambda: left / right, "//": lambda: left // right, "%": lambda: left % right,
                  "**": lambda: left ** right}[op]()
    except (TypeError, ZeroDivisionError, OverflowError) as exc:
        raise _fail(f"{left!r:.30} {op} {right!r:.30}: {exc}") from None
    return _bounded(result)


def _plain(value: Any, where: str) -> Any:
    """A deep copy of the caller's data in JSON types (the messages, tools and extra variables)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, where) for item in value]
    raise ChatTemplateError(f"chat template: {where} holds a {type(value).__name__}; only JSON-like values "
                            f"(str, numbers, bool, None, lists, dicts) can go into a chat template")


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as transformers hands them to a template: keys whose value is None dropped, and a
    message's reasoning under all three names it goes by ("reasoning_content" first)."""
    prepared = []
    for n, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"chat template: message {n} is a {type(message).__name__}, not a dict")
        message = {key: value for key, value in _plain(message, f"message {n}").items() if value is not None}
        reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


class ChatTemplate:
    """A compiled chat template. ``ChatTemplate(source)`` raises ChatTemplateError for what is not
    supported; ``render(messages, add_generation_prompt=True, bos_token=..., ...)`` returns the prompt."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str) or len(source) > MAX_TEMPLATE_CHARS:
            raise ChatTemplateError(f"chat template: expected a string of at most {MAX_TEMPLATE_CHARS:,} "
                                    f"characters")
        self.source = source
        try:
            self.body = _parse(_lex(source))
        except RecursionError:
            raise ChatTemplateError("chat template: nested too deeply") from None

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None, **variables: Any) -> str:
        """The prompt for ``messages`` (dicts with "role" and "content"). ``variables`` reach the template
        by name: bos_token, eos_token, and whatever it asks for (Qwen3's enable_thinking, Llama 3.2's
        date_string); as in transformers, ``tools`` and ``documents`` are None unless given."""
        values = {**{key: _plain(value, key) for key, value in variables.items()},
                  "messages": _messages(messages), "tools": _plain(tools, "tools"),
                  "documents": _plain(documents, "documents"), "add_generation_prompt": add_generation_prompt}
        renderer = _Renderer()
        try:
            renderer.run(self.body, _Scope(values, _Scope(dict(GLOBALS))))
        except (_Break, _Continue):
            raise ChatTemplateError("chat template: {% break %} or {% continue %} outside a loop") from None
        except RecursionError:
            raise ChatTemplateError("chat template: nested too deeply") from None
        return "".join(renderer.output)
