"""The built-in role-play tools, called the way a model or a host app calls them."""

from __future__ import annotations

import random
from importlib.metadata import entry_points

import pytest

from agentmm.tools.builtin import calculate, current_datetime, evaluate, roll, roll_dice


@pytest.mark.parametrize(
    ("notation", "low", "high"),
    [("2d6+1", 3, 13), ("d20", 1, 20), ("4d6kh3", 3, 18), ("3d8-2", 1, 22), ("d%", 1, 100), ("2d6kl1", 1, 6)],
)
def test_roll_stays_in_range(notation: str, low: int, high: int) -> None:
    rng = random.Random(1)
    for _ in range(200):
        result = roll(notation, rng)
        assert low <= result["total"] <= high


def test_keep_highest_keeps_the_highest() -> None:
    result = roll("4d6kh3", random.Random(3))
    assert sorted(result["kept"]) == sorted(result["rolls"])[1:]


@pytest.mark.parametrize("bad", ["", "2x6", "0d6", "2d1", "5000d6", "2d6kh3", "d6+", "1d6; rm -rf /"])
def test_bad_dice_are_a_message_for_the_model(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        roll(bad)
    assert roll_dice.invoke({"notation": bad}) == str(caught.value)


def test_calculator_is_arithmetic_only() -> None:
    assert evaluate("(3 + 4) * 2.5") == 17.5
    assert evaluate("2 ** 10 // 3 % 7") == 341 % 7
    for bad in ["__import__('os').system('id')", "a + 1", "2 ** 100000", "1 / 0", "x" * 300, "[1, 2]"]:
        with pytest.raises(ValueError) as caught:
            evaluate(bad)
        assert calculate.invoke({"expression": bad}) == str(caught.value)  # a message, not a crash


def test_datetime_and_time_zones() -> None:
    assert "2" in current_datetime.invoke({"timezone": "Europe/Lisbon"})
    assert "unknown time zone" in current_datetime.invoke({"timezone": "Mars/Olympus"})


def test_builtins_register_through_the_entry_points() -> None:
    names = {e.name for e in entry_points(group="agentmm.tools")}
    assert {"roll_dice", "current_datetime", "calculate"} <= names


@pytest.mark.parametrize("huge", ["((10**1000)**1000)**1000", "(10**1000)**5", "*".join(["(9**999)"] * 5)])
def test_a_short_expression_with_a_huge_result_is_refused_before_it_is_worked_out(huge: str) -> None:
    """It took minutes holding the GIL (no tool timeout could stop it); refused in no time now."""
    import time

    started = time.perf_counter()
    with pytest.raises(ValueError, match="more than 4,214 digits"):
        evaluate(huge)
    assert time.perf_counter() - started < 1.0
    assert len(str(evaluate("(10**1000)**4"))) == 4001 and evaluate("2**-3") == 0.125


def test_a_float_too_large_is_said_in_words() -> None:
    with pytest.raises(ValueError, match="too large for a decimal number"):
        evaluate("10.0**1000")
