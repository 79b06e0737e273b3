"""DashboardServer over real loopback HTTP: the page, the event stream, bounds and errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scatterbrained.dashboard.feed import Feed
from scatterbrained.dashboard.server import DashboardServer, DashboardThread
from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.live import LIVE_FILE


async def read_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next ``data:`` record of a server-sent event stream (comments skipped)."""
    while True:
        line = (await stream.readline()).decode()
        if line.startswith("data: "):
            record: dict[str, Any] = json.loads(line[len("data: ") :])
            return record


def test_the_page_and_its_files_are_served_on_loopback(arun: Callable[..., None]) -> None:
    async def main() -> None:
        async with DashboardServer(Feed()) as server, aiohttp.ClientSession() as http:
            assert server.url.startswith("http://127.0.0.1:") and server.port > 0
            async with http.get(server.url) as page:
                assert page.status == 200
                assert '<script src="/static/app.js">' in await page.text()
            async with http.get(server.url + "static/app.js") as script:
                assert script.content_type == "text/javascript"
                assert "EventSource" in await script.text()
            async with http.get(server.url + "static/../server.py") as escape:
                assert escape.status == 404

    arun(main)


def test_events_replay_then_stream_and_records_list_the_replay(
    arun: Callable[..., None],
) -> None:
    async def main() -> None:
        feed = Feed()
        feed.publish({"kind": "run", "nodes": ["a"]})
        async with DashboardServer(feed) as server, aiohttp.ClientSession() as http:
            async with http.get(server.url + "events") as events:
                assert events.content_type == "text/event-stream"
                assert (await read_event(events.content))["kind"] == "run"
                feed.publish({"kind": "epoch", "epoch": 1, "rows": []})
                assert (await read_event(events.content))["epoch"] == 1
            async with http.get(server.url + "api/records") as records:
                assert [r["kind"] for r in await records.json()] == ["run", "epoch"]

    arun(main)


def test_connections_past_the_bound_are_refused(arun: Callable[..., None]) -> None:
    async def main() -> None:
        feed = Feed(max_clients=1)
        feed.publish({"kind": "run", "nodes": []})
        async with DashboardServer(feed) as server, aiohttp.ClientSession() as http:
            async with http.get(server.url + "events") as first:
                await read_event(first.content)
                async with http.get(server.url + "events") as second:
                    assert second.status == 503
                    assert "at most 1 connections" in await second.text()

    arun(main)


def test_a_taken_port_is_one_clear_error(arun: Callable[..., None]) -> None:
    async def main() -> None:
        async with DashboardServer(Feed()) as first:
            with pytest.raises(ConfigurationError, match=r"in use.*or 0 for a free one"):
                async with DashboardServer(Feed(), first.port):
                    pass

    arun(main)


def test_the_thread_follows_a_run_folder_and_stops(tmp_path: Path) -> None:
    live = tmp_path / LIVE_FILE
    live.write_text(json.dumps({"kind": "run", "nodes": ["a"]}) + "\n")

    with DashboardThread(tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with live.open("a") as handle:
            handle.write(json.dumps({"kind": "end", "summary": {}}) + "\n")
        kinds = _poll_kinds(server.url, until=lambda k: k == ["run", "end"])
        assert kinds == ["run", "end"]
    assert not server.running


def _poll_kinds(url: str, until: Callable[[list[str]], bool], timeout: float = 10.0) -> list[str]:
    import urllib.request

    deadline = time.monotonic() + timeout
    kinds: list[str] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "api/records", timeout=5) as response:
            kinds = [r["kind"] for r in json.load(response)]
        if until(kinds):
            break
        time.sleep(0.05)
    return kinds
