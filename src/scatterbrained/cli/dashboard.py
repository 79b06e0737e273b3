"""``scatterbrained dashboard`` and the ``--dashboard`` option of demo, simulate and node."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ._deps import require_aiohttp

__all__ = [
    "dashboard",
    "dashboard_options",
    "namespace_dashboard",
    "run_dashboard",
    "serve_until_interrupted",
]


def dashboard_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--dashboard`` and ``--dashboard-port`` to a command."""
    func = click.option(
        "--dashboard-port",
        type=click.IntRange(0, 65535),
        default=0,
        show_default=True,
        help="Port of the dashboard on 127.0.0.1 (0: a free one).",
    )(func)
    return click.option(
        "--dashboard",
        is_flag=True,
        help="Serve a live dashboard on 127.0.0.1 (prints its URL; needs the dashboard extra).",
    )(func)


@contextlib.contextmanager
def run_dashboard(folder: Path, enabled: bool, port: int) -> Iterator[Any]:
    """Serve the dashboard of run folder ``folder`` from a background thread while the
    block runs (nothing when not ``enabled``); yields the server thread or ``None``.

    Raises:
        ConfigurationError: aiohttp is missing or the port cannot be bound.
    """
    if not enabled:
        yield None
        return
    require_aiohttp("--dashboard")
    from ..dashboard.server import DashboardThread

    with DashboardThread(folder, port) as server:
        click.echo(f"dashboard: {server.url}")
        yield server


def serve_until_interrupted(url: str) -> None:
    """Keep the process (and its dashboard thread) up until Ctrl-C; returns normally then."""
    forever = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C right after the line counts too
        click.echo(f"the run is over; the dashboard stays at {url} (Ctrl-C to stop)")
        while not forever.wait(3600):
            pass


@contextlib.asynccontextmanager
async def namespace_dashboard(
    ns: Any, enabled: bool, port: int, epochs: int | None
) -> AsyncIterator[None]:
    """Serve a dashboard of one real node's namespace on this event loop while the block runs.

    Raises:
        ConfigurationError: aiohttp is missing or the port cannot be bound.
    """
    if not enabled:
        yield
        return
    require_aiohttp("--dashboard")
    from ..dashboard.feed import Feed
    from ..dashboard.node_feed import attach_namespace
    from ..dashboard.server import DashboardServer

    feed = Feed()
    async with DashboardServer(feed, port) as server:
        title = f"node {ns.node_id} in namespace {ns.name}"
        unsubscribe = attach_namespace(feed, ns, title=title, epochs=epochs)
        click.echo(f"dashboard: {server.url}")
        try:
            yield
        finally:
            unsubscribe()


@click.command()
@click.argument("path", required=False, default="runs", type=click.Path(path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 (0: a free one).",
)
def dashboard(path: Path, port: int) -> None:
    """Serve the live dashboard of a run on 127.0.0.1 until Ctrl-C.

    PATH is a run folder, or a folder of runs (default runs/: the newest). A running
    simulation is followed as it goes (any backend); a finished one is shown whole.
    """
    require_aiohttp("scatterbrained dashboard")
    from ..dashboard.feed import find_run

    folder = find_run(path)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(folder, port))


async def _serve(folder: Path, port: int) -> None:
    from ..dashboard.feed import Feed, follow_run
    from ..dashboard.server import DashboardServer

    feed = Feed()
    async with DashboardServer(feed, port) as server:
        click.echo(f"dashboard of {folder}: {server.url} (Ctrl-C to stop)")
        await follow_run(folder, feed)  # returns only for a finished run without live.jsonl
        await asyncio.Event().wait()
