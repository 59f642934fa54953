"""`--where` expressions for `manifest filter`: a small whitelist over Python's `ast`, evaluated per table row.

Allowed: column names, literals, lists, comparisons (== != < <= > >= in, not in), and/or/not, + - * /, len() and
abs(). Anything else (attributes, subscripts, other calls, unknown columns) is refused, so an expression can only
read the row it is given. Repeating a string or list (`'a' * n`) is capped at MAX_ITEMS items, so an expression
cannot exhaust memory.
"""
from __future__ import annotations

import ast
import operator
from typing import Callable


class WhereError(ValueError):
    """An expression that is not allowed or not valid."""


_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
MAX_ITEMS = 1_000_000


def _times(a, b):
    """a * b, refusing a repeated string or list longer than MAX_ITEMS."""
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list)) and isinstance(n, int) and len(seq) * n > MAX_ITEMS:
            raise WhereError(f"a repeated string or list of {len(seq) * n} items (limit {MAX_ITEMS})")
    return a * b


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _times, ast.Div: operator.truediv}
_FUNCS = {"len": len, "abs": abs}


def compile_where(where: str, columns: list[str]) -> Callable[[dict], object]:
    """A function of a row (dict) from the whitelisted expression; see the module docstring."""
    try:
        tree = ast.parse(where.strip(), mode="eval").body
    except SyntaxError as err:
        raise WhereError(err.msg) from None
    return _compile(tree, set(columns))


def _compile(node: ast.AST, columns: set[str]) -> Callable[[dict], object]:
    sub = lambda n: _compile(n, columns)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return lambda row, v=node.value: v
    if isinstance(node, ast.Name):
        if node.id not in columns:
            raise WhereError(f"unknown column {node.id!r}; columns: {', '.join(sorted(columns))}")
        return lambda row, k=node.id: row[k]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [sub(e) for e in node.elts]
        return lambda row: [f(row) for f in items]
    if isinstance(node, ast.BoolOp):
        parts, test = [sub(v) for v in node.values], all if isinstance(node.op, ast.And) else any
        return lambda row: test(p(row) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        f = sub(node.operand)
        return (lambda row: not f(row)) if isinstance(node.op, ast.Not) else (lambda row: -f(row))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b, op = sub(node.left), sub(node.right), _BIN[type(node.op)]
        return lambda row: op(a(row), b(row))
    if isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
        terms, ops = [sub(node.left)] + [sub(c) for c in node.comparators], [_CMP[type(op)] for op in node.ops]
        return lambda row: all(op(terms[i](row), terms[i + 1](row)) for i, op in enumerate(ops))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        fn, args = _FUNCS[node.func.id], [sub(a) for a in node.args]
        return lambda row: fn(*(a(row) for a in args))
    raise WhereError(f"not allowed in a where expression: {ast.unparse(node)!r}")
