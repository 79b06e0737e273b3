"""Feed: bounded replay and fan-out; following a live log as it grows; finding a run."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scatterbrained.dashboard.feed import Feed, FeedFullError, find_run, follow_run
from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.live import LIVE_FILE


def run_record(*nodes: str) -> dict[str, Any]:
    return {"kind": "run", "nodes": list(nodes), "modes": {}, "edges": [], "epochs": 3}


def epoch_record(epoch: int) -> dict[str, Any]:
    return {"kind": "epoch", "epoch": epoch, "rows": []}


def test_replay_starts_at_the_last_run_and_keeps_only_the_newest_records() -> None:
    feed = Feed(max_records=2)

    feed.publish(run_record("a"))
    feed.publish(epoch_record(1))
    feed.publish(run_record("b"))  # a new run starts afresh
    for epoch in (1, 2, 3):
        feed.publish(epoch_record(epoch))
    feed.publish({"no": "kind"})  # ignored

    assert feed.replay() == [run_record("b"), epoch_record(2), epoch_record(3)]


def test_a_client_gets_the_replay_then_every_new_record(arun: Callable[..., None]) -> None:
    async def main() -> None:
        feed = Feed()
        feed.publish(run_record("a"))
        async with feed.client() as client:
            feed.publish(epoch_record(1))
            assert client.replay == [run_record("a")]
            assert await client.next(1.0) == epoch_record(1)
            assert await client.next(0.01) is None  # idle: the caller sends a heartbeat
        assert feed.clients == 0

    arun(main)


def test_a_lagging_client_is_dropped_and_woken(arun: Callable[..., None]) -> None:
    async def main() -> None:
        feed = Feed(client_queue=2)
        async with feed.client() as client:
            for epoch in range(5):
                feed.publish(epoch_record(epoch))
            assert client.lagged
            assert feed.clients == 0
            seen = [await client.next(0.01) for _ in range(2)]
            assert None in seen  # the wake-up that ends its connection

    arun(main)


def test_clients_are_bounded(arun: Callable[..., None]) -> None:
    async def main() -> None:
        feed = Feed(max_clients=1)
        async with feed.client():
            with pytest.raises(FeedFullError, match="at most 1 connections"):
                async with feed.client():
                    pass
        async with feed.client():  # the slot is free again
            pass

    arun(main)


def test_close_wakes_every_client(arun: Callable[..., None]) -> None:
    async def main() -> None:
        feed = Feed()
        async with feed.client() as client:
            feed.close()
            assert await client.next(1.0) is None
            assert client.lagged and feed.closed

    arun(main)


def test_follow_run_reads_complete_lines_as_the_log_grows_and_restarts_when_rewritten(
    tmp_path: Path, arun: Callable[..., None], eventually: Any
) -> None:
    live = tmp_path / LIVE_FILE

    async def main() -> None:
        feed = Feed()
        follower = asyncio.ensure_future(follow_run(tmp_path, feed, poll_s=0.01))
        try:
            await asyncio.sleep(0.05)  # the log does not exist yet: nothing, no error
            assert feed.replay() == []
            with live.open("w") as handle:
                handle.write(json.dumps(run_record("a")) + "\n")
                handle.write("not json\n")
                handle.write(json.dumps(epoch_record(1))[:10])  # half a line
                handle.flush()
                await eventually(lambda: len(feed.replay()) == 1, what="the run record")
                handle.write(json.dumps(epoch_record(1))[10:] + "\n")
            await eventually(lambda: len(feed.replay()) == 2, what="the completed line")
            assert feed.replay() == [run_record("a"), epoch_record(1)]
            replacement = tmp_path / "new.jsonl"
            replacement.write_text(json.dumps(run_record("b")) + "\n")
            os.replace(replacement, live)  # a new run in the same folder
            await eventually(lambda: feed.replay() == [run_record("b")], what="the new run")
        finally:
            follower.cancel()

    arun(main)


def test_follow_run_shows_a_finished_run_without_a_live_log(
    tmp_path: Path, arun: Callable[..., None]
) -> None:
    config = {"nodes": 2, "epochs": 1, "topology": "ring", "modes": {"1": "seeding"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    rows = [
        {"node": "n000", "epoch": 1, "alive": True, "accuracy": 0.5},
        {"node": "n001", "epoch": 1, "alive": True, "accuracy": 0.6},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps({"mean_accuracy": 0.55}))

    async def main() -> None:
        feed = Feed()
        await follow_run(tmp_path, feed)  # returns: nothing more will come
        kinds = [r["kind"] for r in feed.replay()]
        assert kinds == ["run", "epoch", "end"]
        run = feed.replay()[0]
        assert run["modes"] == {"n000": "peer", "n001": "seeding"}
        assert sorted(map(tuple, run["edges"])) == [("n000", "n001"), ("n001", "n000")]
        assert feed.replay()[1]["rows"] == rows

    arun(main)


def test_find_run_takes_a_run_folder_or_the_newest_run_of_a_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for index, folder in enumerate((old, new)):
        folder.mkdir()
        (folder / LIVE_FILE).write_text("")
        os.utime(folder / LIVE_FILE, (1000 + index, 1000 + index))
    (tmp_path / "not-a-run").mkdir()

    assert find_run(old) == old
    assert find_run(tmp_path) == new
    with pytest.raises(ConfigurationError, match="holds no run"):
        find_run(tmp_path / "not-a-run")
    with pytest.raises(ConfigurationError, match="is not a folder"):
        find_run(tmp_path / "missing")
