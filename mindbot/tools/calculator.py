"""Arithmetic for the LLM, which is bad at it: a safe evaluator, never ``eval``.

The expression is parsed with Python's ``ast`` and only numbers, + - * / // % **, unary signs,
parentheses and a few named functions are allowed; exponents and results are bounded, so a
hostile expression ("9**9**9", "__import__('os')") gets a clear error instead of a hung process.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from mindbot.tools.base import ToolContext, ToolError, tool

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e100

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


@tool(label="the calculator")
async def calculate(ctx: ToolContext, expression: str) -> dict:
    """Work out an arithmetic expression exactly, instead of doing the sum in your head.

    Args:
        expression: The expression, e.g. "(12.5 * 3) + 4", "17 % 5", "2 ** 10", "sqrt(2)".
            Percentages as arithmetic: "15% of 80" is "0.15 * 80".
    """
    value = evaluate(expression)
    if isinstance(value, float):
        value = round(value, 10)
        if value.is_integer() and abs(value) < 1e15:
            value = int(value)
    return {"expression": expression, "result": value}


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression.

    Raises:
        ToolError: ``bad_arguments`` for anything that is not plain arithmetic, or out of range.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(
            f"An expression must be 1 to {MAX_EXPRESSION_CHARS} characters.", kind="bad_arguments"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(
            f"I can't read {expression!r} as arithmetic.", kind="bad_arguments"
        ) from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("That divides by zero.", kind="bad_arguments") from None
    except (OverflowError, ValueError) as e:
        raise ToolError(f"That can't be worked out: {e}.", kind="bad_arguments") from None
    if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
        raise ToolError("The result is out of range.", kind="bad_arguments")
    return value


def _checked(value: float) -> float:
    """Every intermediate value stays in range, so nesting cannot build a giant number."""
    if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
        raise OverflowError("the numbers get too large")
    return value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT and abs(left) > 1:
            raise OverflowError("the power is too large")
        return _checked(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and 1 <= len(node.args) <= 2
    ):
        return _checked(_FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args)))
    raise ToolError(
        "Only numbers, + - * / // % **, brackets and sqrt, abs, round, log, sin, cos, tan, "
        "floor, ceil are allowed.",
        kind="bad_arguments",
    )
