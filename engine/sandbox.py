"""What diagram scripts may do: an allowlist on the syntax tree, and a script engine that enforces it.

SpiffWorkflow runs scripts, conditions, timer expressions and DMN cells with plain exec/eval and full
builtins. A diagram is code, and administrators upload diagrams, so every piece of Python in a diagram
is checked here, once when the diagram is validated and again (cached) before it runs. Checking an
allowlist of syntax rather than a blocklist of builtins matters: `().__class__.__mro__` needs no
builtin at all.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Mapping
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
    tree = ast.parse(source, mode=mode)
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            raise UnsafeScript(f"{type(node).__name__} is not allowed in diagram scripts")
        if isinstance(node, ast.Name):
            _check_name(node.id, helpers)
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


def _check_name(name: str, helpers: frozenset[str]) -> None:
    if name.startswith("_"):
        raise UnsafeScript(f"name '{name}' is not allowed in diagram scripts")
    if name in _BUILTIN_NAMES and name not in SAFE_BUILTINS:
        raise UnsafeScript(f"name '{name}' is not allowed in diagram scripts")
    if name.startswith(HELPER_PREFIX) and name not in helpers:
        raise UnsafeScript(f"unknown helper '{name}'")


class RestrictedEnvironment(TaskDataEnvironment):
    """Task-data environment whose scripts see only safe builtins and the given helpers."""

    def __init__(self, helpers: Mapping[str, Callable[..., Any]]):
        super().__init__({**helpers, "__builtins__": SAFE_BUILTINS})
        self.helper_names = frozenset(helpers)

    def evaluate(self, expression, context, external_context=None):
        check_source(expression, "eval", self.helper_names | frozenset(external_context or ()))
        return super().evaluate(expression, context, external_context)

    def execute(self, script, context, external_context=None):
        check_source(script, "exec", self.helper_names | frozenset(external_context or ()))
        return super().execute(script, context, external_context)


class RestrictedScriptEngine(PythonScriptEngine):
    def __init__(self, helpers: Mapping[str, Callable[..., Any]]):
        super().__init__(environment=RestrictedEnvironment(helpers))
