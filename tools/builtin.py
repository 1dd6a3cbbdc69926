"""Small built-in tools for role-play: dice in standard notation, the date and time, arithmetic.

Each is a LangChain tool (schema from the type hints and docstring) and registers through the
same ``agentmm.tools`` entry points as plugins do. Bad input comes back as a ``ToolException``
message for the model, never a crash.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.tools import ToolException, tool
from pydantic import BaseModel, WithJsonSchema

MAX_DICE = 1000
MAX_SIDES = 1_000_000
_DICE = re.compile(r"^\s*(\d*)\s*d\s*(\d+|%)\s*(?:(k[hl]?)\s*(\d+))?\s*(?:([+-])\s*(\d+))?\s*$", re.IGNORECASE)


def roll(notation: str, rng: random.Random | None = None) -> dict[str, object]:
    """Roll ``NdS[kh|kl K][+/-M]`` (``2d6+1``, ``d20``, ``4d6kh3``, ``d%``); raises ValueError."""
    match = _DICE.match(notation)
    if not match:
        raise ValueError(f"not dice notation: {notation!r} (try 2d6+1, d20 or 4d6kh3)")
    count = int(match.group(1) or 1)
    sides = 100 if match.group(2) == "%" else int(match.group(2))
    if not 1 <= count <= MAX_DICE or not 2 <= sides <= MAX_SIDES:
        raise ValueError(f"between 1 and {MAX_DICE} dice of 2 to {MAX_SIDES} sides, please")
    rng = rng or random.SystemRandom()
    rolls = [rng.randint(1, sides) for _ in range(count)]
    kept = rolls
    if match.group(3):
        keep = int(match.group(4))
        if not 1 <= keep <= count:
            raise ValueError(f"cannot keep {keep} of {count} dice")
        kept = sorted(rolls, reverse=match.group(3).lower() != "kl")[:keep]
    modifier = int(match.group(6) or 0) * (-1 if match.group(5) == "-" else 1)
    return {"notation": notation.strip(), "rolls": rolls, "kept": kept, "modifier": modifier,
            "total": sum(kept) + modifier}  # fmt: skip


# The JSON schema's pattern: a model constrained by it can only write notation this tool reads.
# Up to 99 of the usual dice; a 135M model given looser bounds wrote things like 1234d567890.
DICE_PATTERN = r"^[1-9][0-9]?d(2|3|4|6|8|10|12|20|100|%)(k[hl]?[1-9][0-9]?)?([+-][0-9]{1,3})?$"


class DiceArgs(BaseModel):
    # The pattern is in the schema only: it steers a constrained model to plain notation,
    # while the tool itself reads any notation ``roll`` does (``d20``, ``3d7``) and explains
    # what it cannot read.
    notation: Annotated[str, WithJsonSchema({"type": "string", "description": "the dice", "pattern": DICE_PATTERN})]


@tool(args_schema=DiceArgs)
def roll_dice(notation: str) -> str:
    """Roll dice: NdS is N dice of S sides (3d8), kh/kl keeps the highest/lowest (4d6kh3), +/- adds a modifier."""
    try:
        result = roll(notation)
    except ValueError as exc:
        raise ToolException(str(exc)) from exc
    return f"{result['notation']}: rolled {result['rolls']}, total {result['total']}"


@tool(parse_docstring=True)
def current_datetime(timezone: str = "UTC") -> str:
    """The current date and time, in an IANA time zone such as Europe/Lisbon.

    Args:
        timezone: IANA time zone name.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolException(f"unknown time zone {timezone!r}") from exc
    return datetime.now(zone).strftime("%A %d %B %Y, %H:%M %Z")


_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}  # fmt: skip
MAX_EXPRESSION = 200
MAX_EXPONENT = 1000
# Python prints no int of more than 4,300 digits (sys.int_info.default_max_str_digits); a
# bigger one is refused before it is made: ((10**1000)**1000)**1000 (24 characters) would take
# minutes, holding the GIL, so no timeout could stop it.
MAX_RESULT_BITS = 14_000


def evaluate(expression: str) -> float | int:
    """Arithmetic on numbers only (+ - * / // % ** and parentheses), no names or calls."""
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not arithmetic: {expression!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent above {MAX_EXPONENT}")
        if _result_bits(node.op, left, right) > MAX_RESULT_BITS:
            raise ValueError(f"the result would have more than {MAX_RESULT_BITS * 30103 // 100000:,} digits")
        try:
            return _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ValueError("division by zero") from exc
        except OverflowError as exc:  # 10.0**1000 says "(34, 'Numerical result out of range')"
            raise ValueError("the result is too large for a decimal number") from exc
    raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


def _result_bits(op: ast.operator, left: float | int, right: float | int) -> int:
    """About how many bits an integer result of ``left op right`` takes (0: a float or small)."""
    if not isinstance(left, int) or not isinstance(right, int):
        return 0
    if isinstance(op, ast.Pow) and right > 0:
        return max(left.bit_length() - 1, abs(left) > 1) * right
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length()
    return 0


@tool(parse_docstring=True)
def calculate(expression: str) -> str:
    """Work out an arithmetic expression such as (3 + 4) * 2.5 or 2 ** 10.

    Args:
        expression: numbers with + - * / // % ** and parentheses.
    """
    try:
        return f"{expression} = {evaluate(expression)}"
    except (ValueError, OverflowError) as exc:
        raise ToolException(str(exc)) from exc


# A bad argument comes back to the model as the tool's message, so it can correct itself.
for _tool in (roll_dice, current_datetime, calculate):
    _tool.handle_tool_error = True
