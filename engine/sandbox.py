"""What diagram scripts may do: an allowlist on the syntax tree, and a script engine that enforces it.

SpiffWorkflow runs scripts, conditions, timer expressions and DMN cells with plain exec/eval and full
builtins. A diagram is code, and administrators upload diagrams, so every piece of Python in a diagram
is checked here, once when the diagram is validated and again (cached) before it runs. Checking an
allowlist of syntax rather than a blocklist of builtins matters: `().__class__.__mro__` needs no
builtin at all.

The same check bounds what a piece of diagram code can cost. Python running in-process cannot be
interrupted inside `[0] * 10**9`, so the bound is a grammar checked before anything runs (see "Cost
bounds" below): no `while`, `for` and comprehensions only over literals and small literal ranges,
no `**`, no large integer literals, `*` only where it cannot repeat a sequence by an unknown count,
a size limit per piece, and a static estimate of how large values and how much work can grow.
"""

from __future__ import annotations

import ast
import builtins
import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment

HELPER_PREFIX = "gl_"

SAFE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in (
        "abs",
        "all",
        "any",
        "bool",
        "dict",
        "enumerate",
        "float",
        "int",
        "len",
        "list",
        "max",
        "min",
        "range",
        "round",
        "set",
        "sorted",
        "str",
        "sum",
        "tuple",
        "zip",
    )
}
SAFE_BUILTINS.update({"True": True, "False": False, "None": None})

# Methods of plain data (str, list, dict) that cannot reach the interpreter's internals.
# `format`/`format_map` are left out on purpose: "{0.__class__}".format(x) walks attributes.
SAFE_METHODS = frozenset(
    {
        "get",
        "keys",
        "values",
        "items",
        "lower",
        "upper",
        "strip",
        "startswith",
        "endswith",
        "count",
        "index",
        "append",
        "split",
        "join",
        "replace",
    }
)

ALLOWED_NODES = (
    ast.Module,
    ast.Expression,
    ast.Expr,
    ast.Assign,
    ast.AugAssign,
    ast.If,
    ast.For,
    ast.Pass,
    ast.Name,
    ast.Load,
    ast.Store,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.comprehension,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
    ast.expr_context,
    ast.JoinedStr,
    ast.FormattedValue,
)
_BUILTIN_NAMES = frozenset(dir(builtins))

# ------------------------------------------------------------------ cost bounds
#
# Each piece of diagram code (a script, a condition, a timer expression, a DMN cell) is held to:
#   - at most MAX_CHARS characters and MAX_NODES syntax nodes;
#   - no `while`, `**` or `<<`; integer literals at most MAX_INT in size;
#   - range() only with one to three integer literals and at most MAX_RANGE numbers;
#   - `for` statements only over a literal (list, tuple, set, dict, str), a literal range(), or
#     enumerate/zip/sorted/list/tuple/set of those; comprehensions likewise, or (one `for`) over
#     task data when they read only their own variables and literals and only pick out elements
#     or make a number or bool of each (`[n for n in names if n.startswith("a")]`);
#   - `a * b` only when one side is a float (a float literal, float(...), or arithmetic with one),
#     or one side is an integer literal of at most MAX_REPEAT, or both sides are known numbers
#     (numeric literals, int(), len(), abs(), round(), sum() results and arithmetic on them). Names
#     carry no types: `x * n` between two names could be `"a" * 10**9`, so it is refused; write
#     `float(x) * n` or `int(x) * int(n)`. `%` only with a number on its left (on a str it formats,
#     and "%0999999999d" pads to any width); sum() with one argument; round() with a literal
#     ndigits of at most MAX_ROUND_DIGITS; `.join` with a str literal separator; `.replace` with
#     str literals, the first not empty;
#   - a static estimate (`_Cost`) of every value's size, in units of the largest input (a task-data
#     value, a helper's result or a literal of the code), at most MAX_GROWTH; and of the work done,
#     each operation counted by the sizes it touches and the times it runs, at most MAX_WORK.
#     The estimate follows assignments and loops, so `s = s + s` repeated, or in a loop, is
#     refused as it doubles, and mutation (`.append`, `x[k] = v`, `l += m`) grows every value that
#     could share the mutated object.
# Costs are then polynomial in the size of task data, which the forms bound (maxLength), with
# small constant factors. Helpers (gl_*) are trusted Python and bound their own cost.
MAX_CHARS = 2000
MAX_NODES = 400
MAX_INT = 1_000_000
MAX_RANGE = 1000
MAX_REPEAT = 1000
MAX_GROWTH = 1000
MAX_WORK = 50_000
MAX_ROUND_DIGITS = 20
REPR_GROWTH = 10  # str(), repr and ascii of a container or str: quotes, separators, escapes
CASE_GROWTH = 3  # str.upper/lower: one character can map to three ("ΐ".upper())


class UnsafeScript(ValueError):
    """A piece of diagram Python uses something outside the allowlist."""


def check_source(source: str, mode: str = "exec", helpers: frozenset[str] = frozenset()) -> None:
    """Raise UnsafeScript (or SyntaxError) unless `source` uses only allowed syntax and names.

    Names may be task-data variables (anything not starting with an underscore and not a builtin),
    the safe builtins, or helpers (prefixed `gl_`). Calls may go to safe builtins, helpers and the
    safe methods of data.
    """
    _check_cached(source, mode, helpers)


@lru_cache(maxsize=4096)
def _check_cached(source: str, mode: str, helpers: frozenset[str]) -> None:
    if len(source) > MAX_CHARS:
        raise UnsafeScript(
            f"a piece of diagram code may have at most {MAX_CHARS} characters; "
            f"this one has {len(source)}"
        )
    tree = ast.parse(source, mode=mode)
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise UnsafeScript(
            f"a piece of diagram code may have at most {MAX_NODES} syntax nodes; "
            f"this one has {len(nodes)}: split it over several tasks"
        )
    for node in nodes:
        if isinstance(node, ast.While):
            raise UnsafeScript(
                "`while` is not allowed in diagram scripts: its cost has no bound; "
                f"loop with `for` over a literal list or range() of at most {MAX_RANGE} numbers"
            )
        if not isinstance(node, ALLOWED_NODES):
            raise UnsafeScript(f"{type(node).__name__} is not allowed in diagram scripts")
        if isinstance(node, ast.Name):
            _check_name(node.id, helpers)
            if isinstance(node.ctx, ast.Store) and (node.id in SAFE_BUILTINS or node.id in helpers):
                raise UnsafeScript(f"'{node.id}' may not be assigned in diagram scripts")
        elif isinstance(node, ast.Attribute):
            if node.attr not in SAFE_METHODS:
                raise UnsafeScript(f"attribute '.{node.attr}' is not allowed in diagram scripts")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                if func.id not in SAFE_BUILTINS and func.id not in helpers:
                    raise UnsafeScript(f"calling '{func.id}' is not allowed in diagram scripts")
            elif not isinstance(func, ast.Attribute):
                raise UnsafeScript("only named functions may be called in diagram scripts")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow | ast.LShift):
            raise UnsafeScript("** and << are not allowed in diagram scripts (unbounded cost)")
        elif isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            raise UnsafeScript("format specs are not allowed in diagram scripts")
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            if abs(node.value) > MAX_INT:
                raise UnsafeScript(
                    f"integer literal {node.value} is larger than {MAX_INT}, the largest "
                    "allowed in diagram scripts"
                )
    _Cost(helpers).run(tree)


def _check_name(name: str, helpers: frozenset[str]) -> None:
    if name.startswith("_"):
        raise UnsafeScript(f"name '{name}' is not allowed in diagram scripts")
    if name in _BUILTIN_NAMES and name not in SAFE_BUILTINS:
        raise UnsafeScript(f"name '{name}' is not allowed in diagram scripts")
    if name.startswith(HELPER_PREFIX) and name not in helpers:
        raise UnsafeScript(f"unknown helper '{name}'")


_NUMBER = frozenset({"int", "float", "num", "bool"})
_CHEAP_METHODS = frozenset({"get", "keys", "values", "items", "append"})
_BUILDS = (
    ast.BinOp,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.JoinedStr,
    ast.FormattedValue,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


@dataclass(frozen=True)
class _Size:
    """What the cost check knows of a value. `size` bounds it (characters of a str, elements of a
    container, machine words of an int) and `item` bounds one of its elements, both in units of the
    largest input; `kind` is "int", "float", "num" (int or float), "bool", "str" or "" (unknown)."""

    size: int = 1
    kind: str = ""
    item: int = 1


_UNIT = _Size()
_ITERABLE_HINT = (
    f"loop over a literal list, tuple, set, dict or str, or range() of at most {MAX_RANGE} "
    "integer literals"
)


def _kind(*values: _Size) -> str:
    kinds = {v.kind for v in values}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= _NUMBER:
        return "float" if "float" in kinds else "num"
    return ""


def _number_kind(a: _Size, b: _Size, divide: bool = False) -> str:
    if divide or "float" in (a.kind, b.kind):
        return "float"
    if a.kind in ("int", "bool") and b.kind in ("int", "bool"):
        return "int"
    return "num"


def _joined(values: list[_Size]) -> _Size:
    if not values:
        return _UNIT
    return _Size(max(v.size for v in values), _kind(*values), max(v.item for v in values))


def _int_literal(node: ast.AST) -> int | None:
    """The value of an integer literal, signed or not; None for anything else."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sign * node.value
    return None


def _str_literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _range_len(node: ast.Call) -> int:
    values = [_int_literal(a) for a in node.args]
    if node.keywords or not 1 <= len(values) <= 3 or None in values:
        raise UnsafeScript(
            "range() takes one to three integer literals in diagram scripts, e.g. range(10): "
            "a bound that comes from data could be any size"
        )
    if len(values) == 3 and values[2] == 0:
        raise UnsafeScript("range() step must not be zero")
    count = len(range(*values))  # type: ignore[arg-type]
    if count > MAX_RANGE:
        raise UnsafeScript(
            f"range() may cover at most {MAX_RANGE} numbers in diagram scripts; "
            f"this one covers {count}"
        )
    return count


def _target_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _picks(node: ast.AST, targets: set[str]) -> bool:
    """Does the expression only pick out (a part of) a loop variable, without building anything
    that grows with the data? `x`, `(k, v)`, `x["key"]`, `x.get("key")`, a literal."""
    if isinstance(node, ast.Name):
        return node.id in targets
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple | ast.List):
        return all(_picks(e, targets) for e in node.elts)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and _picks(node.value, targets)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return (
            node.func.attr == "get"
            and not node.keywords
            and all(isinstance(a, ast.Constant) for a in node.args)
            and _picks(node.func.value, targets)
        )
    return False


def _reads_only(node: ast.AST, targets: set[str]) -> bool:
    """Does the expression read no variable but the loop's own (and call only safe builtins)?"""
    return all(
        n.id in targets or n.id in SAFE_BUILTINS for n in ast.walk(node) if isinstance(n, ast.Name)
    )


def _scan_refused() -> UnsafeScript:
    return UnsafeScript(
        "a comprehension over task data may read only its own variables and literals, and may "
        'only pick out its elements (x, (k, v), x["key"], x.get("key")) or make a number or bool '
        f"of each (x == 1, len(x)) in diagram scripts; otherwise {_ITERABLE_HINT}"
    )


class _Cost:
    """A static estimate of what a piece of diagram code can cost, refusing it (UnsafeScript) when
    a value could grow beyond MAX_GROWTH units of the largest input or the work beyond MAX_WORK.

    It interprets the code over sizes instead of values: `env` holds what is known of each variable
    it assigns (anything else is task data or a helper: one unit), `grown` how much mutation could
    have added to any object that variables share, and `mult` how many times the expression being
    looked at runs (inside comprehensions). A `for` statement is followed iteration by iteration
    until nothing changes from one iteration to the next; `if` keeps the larger of its branches.
    """

    def __init__(self, helpers: frozenset[str]):
        self.helpers = helpers
        self.env: dict[str, _Size] = {}
        self.grown = 0
        self.work = 0
        self.mult = 1

    def run(self, tree: ast.AST) -> None:
        if isinstance(tree, ast.Expression):
            self.expr(tree.body)
        else:
            self.block(tree.body)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ bookkeeping

    def charge(self, amount: int) -> None:
        self.work += max(amount, 1) * self.mult
        if self.work > MAX_WORK:
            raise UnsafeScript(
                f"diagram code may do at most {MAX_WORK} units of work; this piece may do more "
                "(loops and comprehensions multiply what their body does)"
            )

    def bounded(self, value: _Size) -> _Size:
        if value.size > MAX_GROWTH:
            raise UnsafeScript(
                f"a value in this diagram code may grow to {value.size} times the largest input; "
                f"at most {MAX_GROWTH} is allowed (repetition, concatenation in a loop, or "
                "a comprehension over a large range)"
            )
        return value

    def lookup(self, name: str) -> _Size:
        value = self.env.get(name, _UNIT)
        if value.kind in _NUMBER or value.kind == "str":
            return value  # immutable: no mutation elsewhere reaches it
        return self.bounded(_Size(value.size + self.grown, value.kind, value.item + self.grown))

    def mutate(self, amount: int) -> None:
        """Some object grew by `amount`, and any variable may share it."""
        self.grown += max(amount, 0) * self.mult
        if self.grown > MAX_GROWTH:
            raise UnsafeScript(
                f"this diagram code may add {self.grown} times the largest input to its values "
                f"(append, item assignment, in-place +=); at most {MAX_GROWTH} is allowed"
            )

    def state(self) -> tuple[dict[str, _Size], int]:
        return dict(self.env), self.grown

    # ------------------------------------------------------------------ statements

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.stmt(statement)

    def stmt(self, node: ast.stmt) -> None:
        self.charge(1)
        if isinstance(node, ast.Expr):
            self.expr(node.value)
        elif isinstance(node, ast.Assign):
            value = self.expr(node.value)
            for target in node.targets:
                self.store(target, value)
        elif isinstance(node, ast.AugAssign):
            before = self.expr(node.target)
            value = self.binop(node.op, node.target, node.value, before, self.expr(node.value))
            if value.kind not in _NUMBER and value.kind != "str":
                self.mutate(value.size - before.size)  # list += and |= change the object itself
            self.store(node.target, value)
        elif isinstance(node, ast.If):
            self.expr(node.test)
            start = self.state()
            self.block(node.body)
            then_env, then_grown = self.state()
            self.env, self.grown = dict(start[0]), start[1]
            self.block(node.orelse)
            for name in set(then_env) | set(self.env):
                self.env[name] = _joined([then_env.get(name, _UNIT), self.env.get(name, _UNIT)])
            self.grown = max(self.grown, then_grown)
        elif isinstance(node, ast.For):
            self.for_loop(node)
        elif not isinstance(node, ast.Pass):
            raise UnsafeScript(f"{type(node).__name__} is not allowed in diagram scripts")

    def for_loop(self, node: ast.For) -> None:
        known = self.iterable(node.iter)
        if known is None:
            raise UnsafeScript(
                f"`for` over anything but a literal is not allowed: {_ITERABLE_HINT}"
            )
        count, item = known
        last = None
        for done in range(count):
            work = self.work
            self.store(node.target, item)
            self.block(node.body)
            now = self.state()
            if now == last:  # the body maps this state to itself: later iterations repeat it
                self.charge((count - done - 1) * (self.work - work))
                break
            last = now
        self.block(node.orelse)

    def store(self, target: ast.AST, value: _Size) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.store(element, _Size(value.item, "", value.item))
        else:  # x[k] = v, x.attr = v: the object x refers to grows by at most v
            if isinstance(target, ast.Subscript):
                self.expr(target.slice)
            self.mutate(value.size)

    # ------------------------------------------------------------------ expressions

    def expr(self, node: ast.AST) -> _Size:
        self.charge(1)
        handler = getattr(self, "_" + type(node).__name__, None)
        value = handler(node) if handler is not None else _UNIT
        if isinstance(node, _BUILDS):
            self.charge(value.size)  # a new value: building it costs its size
        return self.bounded(value)

    def _Constant(self, node: ast.Constant) -> _Size:
        value = node.value
        if isinstance(value, bool):
            return _Size(1, "bool")
        if isinstance(value, int):
            return _Size(1, "int")
        if isinstance(value, float):
            return _Size(1, "float")
        if isinstance(value, str):
            return _Size(1, "str")
        return _UNIT

    def _Name(self, node: ast.Name) -> _Size:
        return self.lookup(node.id)

    def _Attribute(self, node: ast.Attribute) -> _Size:
        return _Size(self.expr(node.value).size)

    def _Subscript(self, node: ast.Subscript) -> _Size:
        value = self.expr(node.value)
        self.expr(node.slice)
        kind = "str" if value.kind == "str" else ""
        if isinstance(node.slice, ast.Slice):
            self.charge(value.size)  # a copy
            return _Size(value.size, kind, value.item)
        return _Size(value.item, kind, value.item)

    def _Slice(self, node: ast.Slice) -> _Size:
        for part in (node.lower, node.upper, node.step):
            if part is not None:
                self.expr(part)
        return _Size(1, "int")

    def _container(self, parts: list[ast.AST | None]) -> _Size:
        values = [self.expr(p) for p in parts if p is not None]
        return _Size(
            max(1, sum(v.size for v in values)), "", max((v.size for v in values), default=1)
        )

    def _List(self, node: ast.List) -> _Size:
        return self._container(list(node.elts))

    _Tuple = _Set = _List

    def _Dict(self, node: ast.Dict) -> _Size:
        return self._container([*node.keys, *node.values])

    def _BinOp(self, node: ast.BinOp) -> _Size:
        left, right = self.expr(node.left), self.expr(node.right)
        return self.binop(node.op, node.left, node.right, left, right)

    def binop(self, op: ast.operator, lnode, rnode, left: _Size, right: _Size) -> _Size:
        self.charge(left.size + right.size)
        if isinstance(op, ast.Mult):
            return self.times(lnode, rnode, left, right)
        if isinstance(op, ast.Mod) and left.kind not in _NUMBER:
            raise UnsafeScript(
                "`%` is allowed only with a number on its left in diagram scripts: on a str it "
                "formats, and a width such as '%0999999999d' makes a string of any length; "
                "write int(x) % n"
            )
        arithmetic = ast.Add | ast.Sub | ast.Div | ast.FloorDiv | ast.Mod
        if isinstance(op, arithmetic) and (left.kind in _NUMBER or right.kind in _NUMBER):
            # with a number on either side this is arithmetic (a str or list would raise)
            kind = _number_kind(left, right, isinstance(op, ast.Div))
            return _Size(max(left.size, right.size), kind)
        if isinstance(op, ast.Sub | ast.Div | ast.FloorDiv | ast.Mod):
            return _Size(max(left.size, right.size), "", max(left.item, right.item))
        # + of sequences, | & ^ of sets and dicts, >> of ints: at most both sides
        kind = "str" if left.kind == right.kind == "str" else ""
        return _Size(left.size + right.size, kind, max(left.item, right.item))

    def times(self, lnode, rnode, left: _Size, right: _Size) -> _Size:
        if "float" in (left.kind, right.kind):
            return _Size(1, "float")  # a sequence times a float raises: this is arithmetic
        if left.kind in _NUMBER and right.kind in _NUMBER:
            self.charge(left.size * right.size)
            return _Size(left.size + right.size, _number_kind(left, right))
        for literal, other in ((lnode, right), (rnode, left)):
            factor = _int_literal(literal)
            if factor is None:
                continue
            if abs(factor) > MAX_REPEAT:
                raise UnsafeScript(
                    f"`*` by {factor} is not allowed in diagram scripts: the other side could be "
                    f"a str or list repeated {abs(factor)} times; a literal factor may be at most "
                    f"{MAX_REPEAT} (write float(x) * {factor} or int(x) * {factor} for arithmetic)"
                )
            return _Size(max(1, other.size * abs(factor)), other.kind, other.item)
        raise UnsafeScript(
            "`*` is allowed in diagram scripts only with a float on one side, an integer literal "
            f"of at most {MAX_REPEAT} on one side, or numbers on both sides (literals, int(), "
            "float(), len() ...): either side of this one could be a str or list repeated an "
            "unknown number of times; write float(a) * b or int(a) * int(b)"
        )

    def _UnaryOp(self, node: ast.UnaryOp) -> _Size:
        value = self.expr(node.operand)
        if isinstance(node.op, ast.Not):
            return _Size(1, "bool")
        kind = value.kind if value.kind in ("int", "float", "num") else "num"
        return _Size(value.size, "int" if value.kind == "bool" else kind)

    def _BoolOp(self, node: ast.BoolOp) -> _Size:
        return _joined([self.expr(v) for v in node.values])

    def _Compare(self, node: ast.Compare) -> _Size:
        values = [self.expr(node.left), *(self.expr(c) for c in node.comparators)]
        self.charge(sum(v.size for v in values))
        return _Size(1, "bool")

    def _IfExp(self, node: ast.IfExp) -> _Size:
        self.expr(node.test)
        return _joined([self.expr(node.body), self.expr(node.orelse)])

    def _JoinedStr(self, node: ast.JoinedStr) -> _Size:
        values = [self.expr(v) for v in node.values]
        return _Size(max(1, sum(v.size for v in values)), "str")

    def _FormattedValue(self, node: ast.FormattedValue) -> _Size:
        value = self.expr(node.value)
        plain = node.conversion in (-1, ord("s")) and (value.kind in _NUMBER or value.kind == "str")
        return _Size(value.size if plain else value.size * REPR_GROWTH, "str")

    # ------------------------------------------------------------------ calls

    def _Call(self, node: ast.Call) -> _Size:
        func = node.func
        args = [self.expr(a) for a in node.args]
        keywords = {k.arg: self.expr(k.value) for k in node.keywords}
        given = args + list(keywords.values())
        if isinstance(func, ast.Attribute):
            receiver = self.expr(func.value)
            value = self.method(node, func, receiver, args)
            if func.attr not in _CHEAP_METHODS:  # these walk the receiver and build a value
                self.charge(receiver.size + sum(v.size for v in given) + value.size)
            return value
        name = func.id  # type: ignore[attr-defined]
        if name in self.helpers:
            self.charge(sum(v.size for v in given))
            return _UNIT  # helpers are trusted Python that bounds its own cost and result
        value = self.builtin(node, name, args, given)
        if name != "len":
            self.charge(sum(v.size for v in given) + value.size)
        return value

    def builtin(self, node: ast.Call, name: str, args: list[_Size], given: list[_Size]) -> _Size:
        first = args[0] if args else _UNIT
        if name == "range":
            return _Size(max(1, _range_len(node)), "", 1)
        if name == "sum":
            if len(node.args) != 1 or node.keywords:
                raise UnsafeScript(
                    "sum() takes exactly one argument in diagram scripts: with a start value it "
                    "concatenates lists, in time that grows with the square of their length"
                )
            return _Size(first.item, "num")
        if name == "round":
            digits = node.args[1:] + [k.value for k in node.keywords]
            for nd in digits:
                value = _int_literal(nd)
                if value is None or abs(value) > MAX_ROUND_DIGITS:
                    raise UnsafeScript(
                        "round() takes its ndigits as an integer literal of at most "
                        f"{MAX_ROUND_DIGITS} in diagram scripts (round(5, -10**6) computes "
                        "10**(10**6))"
                    )
            return _Size(first.size, "num")
        if name == "len":
            return _Size(1, "int")
        if name in ("bool", "any", "all"):
            return _Size(1, "bool")
        if name == "float":
            return _Size(1, "float")
        if name in ("int", "abs"):
            return _Size(first.size, "int" if name == "int" else "num")
        if name == "str":
            plain = first.kind in _NUMBER or first.kind == "str"
            return _Size(first.size if plain else first.size * REPR_GROWTH, "str")
        if name in ("max", "min"):
            return _Size(first.item, "") if len(args) == 1 else _joined(given)
        # list, tuple, set, sorted, dict, enumerate, zip: containers of what they are given
        total = max(1, sum(v.size for v in given))
        if name in ("enumerate", "zip"):
            total *= 2  # a tuple per element
        return _Size(total, "", max((v.size for v in given), default=1))

    def method(self, node: ast.Call, func: ast.Attribute, receiver: _Size, args) -> _Size:
        attr = func.attr
        if attr == "get":
            default = args[1] if len(args) > 1 else _UNIT
            return _Size(max(receiver.item, default.size), "", max(receiver.item, default.item))
        if attr in ("keys", "values", "items"):
            return _Size(receiver.size, "", receiver.item)
        if attr in ("lower", "upper"):
            return _Size(receiver.size * CASE_GROWTH, "str")
        if attr == "strip":
            return _Size(receiver.size, "str")
        if attr in ("startswith", "endswith"):
            return _Size(1, "bool")
        if attr in ("count", "index"):
            return _Size(1, "int")
        if attr == "split":
            return _Size(2 * receiver.size, "", receiver.size)  # pieces are at least as many
        if attr == "join":
            separator = _str_literal(func.value)
            if separator is None:
                raise UnsafeScript(
                    "`.join` needs a str literal as its separator in diagram scripts "
                    '(", ".join(names)): the separator is repeated between every element'
                )
            items = args[0] if args else _UNIT
            return _Size(max(1, items.size * (1 + len(separator))), "str")
        if attr == "replace":
            old, new = (_str_literal(a) for a in (node.args + [None, None])[:2])  # type: ignore
            if not old or new is None:
                raise UnsafeScript(
                    "`.replace` takes two str literals in diagram scripts, the first not empty: "
                    'x.replace("", y) puts y between every character'
                )
            return _Size(receiver.size * max(1, math.ceil(len(new) / len(old))), "str")
        if attr == "append":
            self.mutate(args[0].size if args else 1)
            return _UNIT
        return _UNIT

    # ------------------------------------------------------------------ loops

    def iterable(self, node: ast.AST) -> tuple[int, _Size] | None:
        """(number of elements, an element) of an iterable whose length is known at deploy."""
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            values = [self.expr(e) for e in node.elts]
            return len(values), _joined(values)
        if isinstance(node, ast.Dict) and None not in node.keys:
            keys = [self.expr(k) for k in node.keys if k is not None]
            for value in node.values:
                self.expr(value)
            return len(keys), _joined(keys)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return len(node.value), _Size(1, "str")
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("keys", "values", "items"):
            inner = func.value
            if node.args or not isinstance(inner, ast.Dict) or None in inner.keys:
                return None
            keys = [self.expr(k) for k in inner.keys if k is not None]
            values = [self.expr(v) for v in inner.values]
            parts = {"keys": keys, "values": values, "items": keys + values}[func.attr]
            item = _joined(parts)
            return len(keys), _Size(item.size * (2 if func.attr == "items" else 1), item.kind)
        if not isinstance(func, ast.Name):
            return None
        if func.id == "range":
            return _range_len(node), _Size(1, "int")
        if func.id not in ("enumerate", "zip", "sorted", "list", "tuple", "set") or not node.args:
            return None
        sources = node.args if func.id == "zip" else node.args[:1]
        inner = [self.iterable(a) for a in sources]
        if any(i is None for i in inner):
            return None
        for extra in [*node.args[len(sources) :], *(k.value for k in node.keywords)]:
            self.expr(extra)
        counts = [i[0] for i in inner]  # type: ignore[index]
        items = [i[1] for i in inner]  # type: ignore[index]
        if func.id == "enumerate":
            return counts[0], _Size(items[0].size + 1, "", items[0].size)
        if func.id == "zip":
            return min(counts), _Size(sum(i.size for i in items), "", max(i.size for i in items))
        return counts[0], items[0]

    def comprehension(self, node: ast.AST, parts: list[ast.expr]) -> _Size:
        generators: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        names = set().union(*(_target_names(g.target) for g in generators))
        saved = {n: self.env.get(n) for n in names}
        outer_mult, count = self.mult, 1
        scan: _Size | None = None
        for generator in generators:
            known = self.iterable(generator.iter)
            if known is None:
                # A scan of task data: allowed when it reads nothing but its own variables and
                # literals, and only picks out the data's elements or makes a number or bool of
                # each, so that what it builds and the work it does grow with the data.
                targets = _target_names(generator.target)
                if len(generators) != 1:
                    raise UnsafeScript(
                        "a comprehension over task data may have only one `for` in diagram "
                        f"scripts; otherwise {_ITERABLE_HINT}"
                    )
                if not all(_reads_only(n, targets) for n in [*parts, *generator.ifs]):
                    raise _scan_refused()
                scan = self.expr(generator.iter)
                known = (scan.size, _UNIT)
            elements, item = known
            self.store(generator.target, item)
            self.mult *= max(elements, 1)
            count *= max(elements, 1)
            for condition in generator.ifs:
                self.expr(condition)
        values = [self.expr(p) for p in parts]
        if scan is not None and not all(
            _picks(p, names) or v.kind in _NUMBER for p, v in zip(parts, values, strict=True)
        ):
            raise _scan_refused()
        self.mult = outer_mult
        for name, value in saved.items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        if scan is not None:
            return _Size(scan.size, "", scan.item)
        element = max(1, sum(v.size for v in values))
        return _Size(count * element, "", element)

    def _ListComp(self, node: ast.ListComp) -> _Size:
        return self.comprehension(node, [node.elt])

    _SetComp = _GeneratorExp = _ListComp

    def _DictComp(self, node: ast.DictComp) -> _Size:
        return self.comprehension(node, [node.key, node.value])


class RestrictedEnvironment(TaskDataEnvironment):
    """Task-data environment whose scripts see only safe builtins and the given helpers."""

    def __init__(self, helpers: Mapping[str, Callable[..., Any]]):
        super().__init__({**helpers, "__builtins__": SAFE_BUILTINS})
        self.helper_names = frozenset(helpers)

    # TaskDataEnvironment's evaluate and execute, but on code compiled once per text: a step
    # evaluates every cell of its DMN tables and every gateway condition, and compiling them
    # again each time was a good part of a step's cost.
    def evaluate(self, expression, context, external_context=None):
        check_source(expression, "eval", self.helper_names | frozenset(external_context or ()))
        names = copy.copy(self.globals)  # else one evaluation's names leak into the next
        names.update(external_context or {})
        names.update(context)
        return eval(_compiled(expression, "eval"), names)  # noqa: S307 - checked above

    def execute(self, script, context, external_context=None):
        check_source(script, "exec", self.helper_names | frozenset(external_context or ()))
        self.check_for_overwrite(context, external_context or {})
        context.update(copy.copy(self.globals))
        context.update(external_context or {})
        try:
            exec(_compiled(script, "exec"), context)  # noqa: S102 - checked above
        finally:
            self._remove_globals_and_functions_from_context(context, external_context)
        return True


@lru_cache(maxsize=4096)
def _compiled(source: str, mode: str):
    """A diagram's expression or script, compiled (the same text, the same code object)."""
    return compile(source, "<string>", mode)


class RestrictedScriptEngine(PythonScriptEngine):
    def __init__(self, helpers: Mapping[str, Callable[..., Any]]):
        super().__init__(environment=RestrictedEnvironment(helpers))

    def validate(self, expression):
        """Whether the text parses (SyntaxError if not), remembered per text: SpiffWorkflow's DMN
        engine asks it of each input and each cell it evaluates, on every evaluation."""
        problem = _syntax_error(expression)
        if problem is not None:
            raise SyntaxError(problem)


@lru_cache(maxsize=4096)
def _syntax_error(expression: str) -> str | None:
    try:
        ast.parse(expression)
    except SyntaxError as exc:
        return str(exc)
    return None
