"""When a read-your-writes pin is released: only by a poll that saw the write, once the
outbox has delivered everything up to the mark that poll took."""

from __future__ import annotations

import time

from proxy.ryw import ReadYourWrites
from strangler.phases import Side

M, S = Side.MONOLITH, Side.SERVICE


def test_a_poll_that_started_before_the_write_releases_nothing() -> None:
    ryw = ReadYourWrites(max_pins=10, max_seconds=30)
    before = time.monotonic() - 1
    ryw.pin("products", "u", M)
    ryw.settle("products", M, before, first_pending_id=None, last_id=None)
    assert ryw.side_for("products", "u") is M


def test_the_pin_holds_until_everything_up_to_the_mark_is_delivered() -> None:
    ryw = ReadYourWrites(max_pins=10, max_seconds=30)
    ryw.pin("products", "u", M)
    first_poll = time.monotonic()
    ryw.settle("products", M, first_poll, first_pending_id=40, last_id=45)  # mark 45
    assert ryw.side_for("products", "u") is M
    ryw.settle("products", M, time.monotonic(), first_pending_id=45, last_id=60)
    assert ryw.side_for("products", "u") is M  # 45 is still undelivered
    ryw.settle("products", S, time.monotonic(), first_pending_id=None, last_id=None)
    assert ryw.side_for("products", "u") is M  # a poll of the other side says nothing
    ryw.settle("products", M, time.monotonic(), first_pending_id=46, last_id=70)
    assert ryw.side_for("products", "u") is None
    assert ryw.snapshot()["settled"] == 1


def test_nothing_pending_releases_at_once_and_a_new_write_pins_again() -> None:
    ryw = ReadYourWrites(max_pins=10, max_seconds=30)
    ryw.pin("products", "u", M)
    ryw.settle("products", M, time.monotonic(), first_pending_id=None, last_id=12)
    assert ryw.side_for("products", "u") is None
    ryw.pin("products", "u", S)
    assert ryw.side_for("products", "u") is S


def test_pins_are_bounded_in_age_and_number() -> None:
    ryw = ReadYourWrites(max_pins=2, max_seconds=0.05)
    for user in ("a", "b", "c"):
        ryw.pin("products", user, M)
    assert ryw.side_for("products", "a") is None  # evicted, the oldest
    assert ryw.snapshot()["evicted"] == 1
    time.sleep(0.06)  # outlives max_seconds: the pins' age bound is the subject here
    assert ryw.side_for("products", "b") is None
    ryw.settle("products", M, time.monotonic(), first_pending_id=1, last_id=9)
    assert not ryw.has_pins("products")
    assert ryw.snapshot()["expired"] == 2


def test_older_pins_release_first_and_newer_ones_wait_for_their_own_mark() -> None:
    ryw = ReadYourWrites(max_pins=10, max_seconds=30)
    ryw.pin("products", "a", M)
    poll_1 = time.monotonic()
    ryw.pin("products", "b", M)
    ryw.settle("products", M, poll_1, first_pending_id=5, last_id=10)  # a: mark 10
    poll_2 = time.monotonic()
    ryw.settle("products", M, poll_2, first_pending_id=11, last_id=20)  # b: mark 20
    assert ryw.side_for("products", "a") is None
    assert ryw.side_for("products", "b") is M
    assert ryw.pinned() == {"products": {M}}
    ryw.settle("products", M, time.monotonic(), first_pending_id=None, last_id=20)
    assert ryw.pinned() == {}
