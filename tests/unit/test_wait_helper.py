"""tests/helpers/wait.py: what a failed wait says is what a CI log shows."""

from __future__ import annotations

import itertools
import time

import pytest
from helpers.wait import WaitTimeout, wait_until


def test_returns_the_first_observed_value_that_is_done():
    counter = itertools.count()
    assert wait_until("three", lambda: next(counter), lambda n: n >= 3, timeout=5, interval=0) == 3


def test_a_timeout_names_what_was_awaited_the_last_state_and_the_context():
    with pytest.raises(WaitTimeout) as failed:
        wait_until(
            "alice's server to be ready",
            lambda: {"ready": False, "pending": "spawn"},
            lambda model: model["ready"],
            timeout=0.05,
            interval=0.01,
            context=lambda: "the hub's log: 500 GET /hub/api",
        )
    message = str(failed.value)
    assert message.startswith("timed out after 0.05s waiting for alice's server to be ready;")
    assert "last seen: {'ready': False, 'pending': 'spawn'}" in message
    assert message.endswith("\nthe hub's log: 500 GET /hub/api")


def test_an_ignored_exception_is_the_last_state_and_a_dead_source_ends_the_wait_at_once():
    def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"ended\) waiting for the page; last seen: Connection"):
        wait_until("the page", refused, timeout=30, alive=lambda: False)
    assert time.monotonic() - started < 5


def test_an_exception_not_ignored_is_raised_as_it_is():
    with pytest.raises(KeyError):
        wait_until("a key", lambda: {}["missing"], timeout=5)
