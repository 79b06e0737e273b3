"""The ZeroMQ transport's helpers: endpoint hosts, milliseconds, settling socket futures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import zmq

from scatterbrained.errors import ConfigurationError
from scatterbrained.transport.zmq_support import bracketed, check_settings, milliseconds, settle

pytestmark = pytest.mark.timeout(10)

Run = Callable[..., None]


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"), ("node.lan", "node.lan")],
)
def test_ipv6_hosts_are_bracketed_in_endpoints(host: str, expected: str) -> None:
    assert bracketed(host) == expected


def test_milliseconds_round_and_never_reach_zero() -> None:
    assert milliseconds(1.5) == 1500
    assert milliseconds(0.0001) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", 1, 1, 1, 1), "host"),
        (("h", 70000, 1, 1, 1), "port"),
        (("h", None, 0, 1, 1), "max_frame_bytes"),
        (("h", None, 1, 0, 1), "send_hwm"),
    ],
)
def test_bad_settings_are_configuration_errors(
    arguments: tuple[str, int | None, int, int, int], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_settings(*arguments)


def test_settle_reports_success_timeout_and_socket_errors(arun: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        failed: asyncio.Future[None] = loop.create_future()
        failed.set_exception(zmq.ZMQError(zmq.EAGAIN))
        pending: asyncio.Future[None] = loop.create_future()

        assert await settle(done, 1.0) is True
        assert await settle(failed, 1.0) is False
        assert await settle(pending, 0.01) is False
        assert pending.cancelled()  # a timed-out send is withdrawn

    arun(main)


def test_settle_raises_errors_that_are_not_socket_errors(arun: Run) -> None:
    async def main() -> None:
        broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        broken.set_exception(ValueError("bug"))

        with pytest.raises(ValueError, match="bug"):
            await settle(broken, 1.0)

    arun(main)
