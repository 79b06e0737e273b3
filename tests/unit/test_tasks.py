"""The concurrency helpers: TaskSet (owned background tasks) and Pulse (broadcast wake-up)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from scatterbrained._tasks import Pulse, TaskSet

pytestmark = pytest.mark.timeout(10)

Run = Callable[..., None]


def test_a_pulse_wakes_every_current_waiter_once(arun: Run) -> None:
    async def main() -> None:
        pulse = Pulse()
        waiters = [asyncio.create_task(pulse.wait()) for _ in range(3)]
        await asyncio.sleep(0)

        pulse.fire()
        await asyncio.wait_for(asyncio.gather(*waiters), 1.0)

        assert all(w.done() for w in waiters)

    arun(main)


def test_a_pulse_does_not_stay_set_for_later_waiters(arun: Run) -> None:
    async def main() -> None:
        pulse = Pulse()
        pulse.fire()

        woken = await pulse.wait_until(time.monotonic() + 0.05)

        assert woken is False

    arun(main)


def test_wait_until_returns_true_when_fired_before_the_deadline(arun: Run) -> None:
    async def main() -> None:
        pulse = Pulse()
        asyncio.get_running_loop().call_later(0.02, pulse.fire)

        woken = await pulse.wait_until(time.monotonic() + 2.0)

        assert woken is True

    arun(main)


def test_wait_until_a_past_deadline_returns_at_once(arun: Run) -> None:
    async def main() -> None:
        started = time.monotonic()

        woken = await Pulse().wait_until(started - 1.0)

        assert woken is False
        assert time.monotonic() - started < 0.05

    arun(main)


def test_a_crashing_task_is_logged_and_does_not_stop_the_others(
    arun: Run, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash() -> None:
        raise ValueError("boom")

    async def main() -> None:
        tasks = TaskSet("owner")
        survivor = tasks.spawn(asyncio.sleep(10), "sleeper")
        tasks.spawn(crash(), "crasher")
        await asyncio.sleep(0.01)

        assert not survivor.done()
        await tasks.close()
        assert survivor.cancelled()

    with caplog.at_level(logging.ERROR):
        arun(main)

    assert "owner:crasher crashed" in caplog.text


def test_spawning_after_close_is_refused_and_the_coroutine_closed(arun: Run) -> None:
    async def main() -> None:
        tasks = TaskSet("owner")
        await tasks.close()
        coro = asyncio.sleep(1)

        with pytest.raises(RuntimeError, match="after close"):
            tasks.spawn(coro, "late")

        assert coro.cr_frame is None  # closed, so no "never awaited" warning

    arun(main)
