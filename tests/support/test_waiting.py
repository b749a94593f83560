"""The shared wait helpers: they retry exactly the failures of a check that is not yet true, and
a wait that never ends says what it waited for and why the last try failed."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import eventually, eventually_async, wait_until


class ThirdTimeLucky:
    """A check that fails twice with `failure` and passes on the third call."""

    def __init__(self, failure: Exception) -> None:
        self.calls = 0
        self.failure = failure

    def __call__(self) -> str:
        self.calls += 1
        if self.calls < 3:
            raise self.failure
        return "done"


def test_eventually_returns_what_the_check_returned_once_it_passes() -> None:
    check = ThirdTimeLucky(AssertionError("not yet"))
    assert eventually(check, "the third call", timeout=5, interval=0) == "done"
    assert check.calls == 3


def test_a_check_that_never_passes_names_what_was_awaited_and_the_last_failure() -> None:
    calls: list[int] = []

    def never() -> None:
        calls.append(1)
        assert len(calls) < 0, f"call number {len(calls)}"

    with pytest.raises(AssertionError) as raised:
        eventually(never, "the impossible", timeout=0.05, interval=0.01)
    message = str(raised.value)
    assert message.startswith("waited 0.05 s for the impossible")
    assert f"call number {len(calls)}" in message  # the last failure, not the first
    assert isinstance(raised.value.__cause__, AssertionError)


def test_a_value_error_from_unpacking_a_late_result_is_retried() -> None:
    found: list[list[str]] = [[], [], ["span"]]

    def the_one_span() -> str:
        (span,) = found.pop(0)
        return span

    assert eventually(the_one_span, "the span", timeout=5, interval=0) == "span"
    assert found == []


@pytest.mark.parametrize("failure", [KeyError("trace"), IndexError("no such span")])
def test_lookups_that_miss_are_retried(failure: Exception) -> None:
    assert eventually(ThirdTimeLucky(failure), "the lookup", timeout=5, interval=0) == "done"


def test_any_other_error_is_a_bug_and_is_raised_at_once() -> None:
    check = ThirdTimeLucky(TypeError("a bug"))
    with pytest.raises(TypeError, match="a bug"):
        eventually(check, "something", timeout=5, interval=0)
    assert check.calls == 1


def test_the_async_variant_retries_until_the_awaited_check_passes() -> None:
    check = ThirdTimeLucky(ValueError("too many values to unpack"))

    async def awaited() -> str:
        return check()

    assert asyncio.run(eventually_async(awaited, "the third await", interval=0)) == "done"
    assert check.calls == 3


def test_the_async_variant_names_what_was_awaited_when_it_never_passes() -> None:
    async def never() -> None:
        raise AssertionError("still empty")

    with pytest.raises(AssertionError, match="waited 0.05 s for the sample; .*still empty"):
        asyncio.run(eventually_async(never, "the sample", timeout=0.05, interval=0.01))


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="waited 0.05 s for the flag"):
        wait_until(lambda: False, "the flag", timeout=0.05, interval=0.01)
