"""The dashboard's web server (aiohttp): the page, its script and a server-sent event stream.

It binds 127.0.0.1 only (the page has no login; see docs/dashboard.md for viewing it from
another machine over SSH). Routes:

* ``GET /``: the page; ``GET /static/<file>``: its script and style (package data);
* ``GET /events``: server-sent events, one ``data:`` line per record (the replay first);
* ``GET /api/records``: the replay as one JSON list (scripts, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ..errors import ConfigurationError
from .feed import Client, Feed, FeedFullError, follow_run

__all__ = ["HOST", "DashboardServer", "DashboardThread"]

logger = logging.getLogger(__name__)

#: The only interface the dashboard binds.
HOST = "127.0.0.1"
#: Seconds between keep-alive comments on an idle event stream.
HEARTBEAT_S = 15.0
#: Seconds the server waits for open connections when it stops.
SHUTDOWN_S = 2.0
_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


def _load_static() -> dict[str, bytes]:
    folder = resources.files("scatterbrained.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


class DashboardServer:
    """Serve ``feed`` on ``http://127.0.0.1:<port>/`` (an async context manager).

    Args:
        feed: the records to show.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        heartbeat_s: seconds between keep-alive comments on idle streams.
    """

    def __init__(self, feed: Feed, port: int = 0, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.feed = feed
        self.port = port
        self.heartbeat_s = heartbeat_s
        self._static = _load_static()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The page's address (valid once started)."""
        return f"http://{HOST}:{self.port}/"

    async def __aenter__(self) -> DashboardServer:
        """Start serving.

        Raises:
            ConfigurationError: the port is taken or cannot be bound.
        """
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/records", self._records)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            hint = " (in use)" if exc.errno == errno.EADDRINUSE else ""
            raise ConfigurationError(
                f"cannot serve the dashboard on {HOST}:{self.port}{hint}: {exc.strerror}; "
                "choose another port, or 0 for a free one"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving (open event streams end)."""
        self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._static[name],
            content_type=_STATIC[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def _records(self, request: web.Request) -> web.Response:
        return web.json_response(self.feed.replay())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        try:
            async with self.feed.client() as client:
                response = web.StreamResponse(
                    headers={
                        "Content-Type": "text/event-stream",
                        "Cache-Control": "no-cache",
                        "X-Accel-Buffering": "no",
                    }
                )
                await response.prepare(request)
                await _stream(response, client, self.feed, self.heartbeat_s)
                return response
        except FeedFullError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None


async def _stream(
    response: web.StreamResponse, client: Client, feed: Feed, heartbeat: float
) -> None:
    """Write the replay, then every new record (a comment when idle) until the browser goes,
    the client lags too far behind, or the server stops."""
    try:
        await response.write(b"retry: 1000\n\n")
        for record in client.replay:
            await response.write(_event(record))
        while not client.lagged and not feed.closed:
            update = await client.next(heartbeat)
            await response.write(b": ping\n\n" if update is None else _event(update))
    except ConnectionResetError:  # the browser went away
        logger.debug("dashboard: a browser disconnected")


def _event(record: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(record, default=str).encode() + b"\n\n"


class DashboardThread:
    """A dashboard for a run folder, served from a background thread (for code that blocks,
    like the simulator). A failure after start is logged; it never reaches the caller's work.

    Args:
        folder: the run folder to follow (it may not exist yet).
        port: TCP port; 0 picks a free one.
        start_timeout_s: seconds to wait for the server to listen.
    """

    def __init__(self, folder: Path, port: int = 0, *, start_timeout_s: float = 30.0) -> None:
        self.folder = folder
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="dashboard", daemon=True)

    @property
    def running(self) -> bool:
        """True while the server's thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> DashboardThread:
        """Start serving; returns once the server listens.

        Raises:
            ConfigurationError: the port cannot be bound, or the server did not start.
        """
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise ConfigurationError(
                f"the dashboard did not start within {self.start_timeout_s:.0f} s"
            )
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and wait (a few seconds at most) for its thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=SHUTDOWN_S + 5.0)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                logger.warning("dashboard stopped (the run goes on): %s", exc)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        feed = Feed()
        async with DashboardServer(feed, self.port) as server:
            self.url = server.url
            follower = asyncio.ensure_future(_logged(follow_run, self.folder, feed))
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower


async def _logged(func: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    try:
        await func(*args)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("dashboard: following the run failed (the run goes on)")
