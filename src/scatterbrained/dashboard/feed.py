"""What the dashboard shows: a bounded buffer of live-log records, fanned out to its clients.

Records are the lines of a run's ``live.jsonl`` (see :mod:`scatterbrained.sim.live`) plus two
kinds a real node adds (``members``: the nodes and modes it sees now; ``log``: one line for
the event log). A :class:`Feed` keeps the last ``run`` record and the records after it (the
oldest dropped past ``max_records``); each browser connection gets that replay, then every
new record. :func:`follow_run` fills a feed from a run folder, while or after the run goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..sim.live import LIVE_FILE, records_from_run_folder

__all__ = ["Client", "Feed", "FeedFullError", "find_run", "follow_run"]

logger = logging.getLogger(__name__)

#: Records kept for a browser that connects late (the run record is always kept).
DEFAULT_MAX_RECORDS = 5000
#: Browser connections served at once.
DEFAULT_MAX_CLIENTS = 16
#: Records a slow connection may lag behind before it is closed (the browser reconnects
#: and gets the replay).
DEFAULT_CLIENT_QUEUE = 1024
#: Bytes read from a live log per poll.
READ_CHUNK = 1 << 20
#: Longest live-log line accepted (bytes); a longer one is skipped.
MAX_LINE = 16 << 20


class FeedFullError(ConfigurationError):
    """The feed already serves its maximum number of clients."""


@dataclass(eq=False)
class Client:
    """One connection's queue of records (``None`` wakes it up to close)."""

    queue: asyncio.Queue[dict[str, Any] | None]
    lagged: bool = False
    replay: list[dict[str, Any]] = field(default_factory=list)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next record, or ``None`` after ``timeout`` seconds or when told to close."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        try:
            done, _ = await asyncio.wait({getter}, timeout=timeout)
        finally:
            if not getter.done():
                getter.cancel()
        return getter.result() if done else None


class Feed:
    """A bounded replay buffer of records with fan-out to clients (loop-bound).

    Args:
        max_records: records kept after the ``run`` record.
        max_clients: connections served at once.
        client_queue: records one connection may lag behind.
    """

    def __init__(
        self,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
    ) -> None:
        self._run: dict[str, Any] | None = None
        self._records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self._clients: set[Client] = set()
        self._max_clients = max_clients
        self._client_queue = client_queue
        self.closed = False

    @property
    def clients(self) -> int:
        """Connections open now."""
        return len(self._clients)

    def replay(self) -> list[dict[str, Any]]:
        """The ``run`` record (if any) and the records kept after it, oldest first."""
        head = [self._run] if self._run is not None else []
        return head + list(self._records)

    def publish(self, record: dict[str, Any]) -> None:
        """Add a record and send it to every client; a ``run`` record starts afresh.

        A record without a string ``kind`` is ignored (logged). Never raises.
        """
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            logger.warning("dashboard: ignoring a record without a kind: %.80r", record)
            return
        if record["kind"] == "run":
            self._run = record
            self._records.clear()
        else:
            self._records.append(record)
        for client in list(self._clients):
            try:
                client.queue.put_nowait(record)
            except asyncio.QueueFull:
                self._drop(client)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """Register a connection; its ``replay`` holds what came before, its queue what
        comes after (nothing lost or doubled in between).

        Raises:
            FeedFullError: ``max_clients`` connections are open already.
        """
        if len(self._clients) >= self._max_clients:
            raise FeedFullError(
                f"the dashboard serves at most {self._max_clients} connections at once; "
                "close a browser tab and reload"
            )
        client = Client(asyncio.Queue(self._client_queue), replay=self.replay())
        self._clients.add(client)
        try:
            yield client
        finally:
            self._clients.discard(client)

    def close(self) -> None:
        """Wake every client up so that its connection ends (the server is stopping)."""
        self.closed = True
        for client in list(self._clients):
            self._drop(client)

    def _drop(self, client: Client) -> None:
        client.lagged = True
        self._clients.discard(client)
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)
        if client.queue.full():  # make room for the wake-up
            client.queue.get_nowait()
            client.queue.put_nowait(None)


def find_run(path: Path) -> Path:
    """The run folder to show for ``path``: ``path`` itself when it is a run folder (it has
    ``live.jsonl`` or ``config.json``), else its newest run sub-folder (``runs/``).

    Raises:
        ConfigurationError: ``path`` does not exist or holds no run.
    """
    if not path.is_dir():
        raise ConfigurationError(
            f"{path} is not a folder; pass a run folder (runs/<time>) or a folder of runs (runs/)"
        )
    if _run_marker(path) is not None:
        return path
    runs = [(marker.stat().st_mtime, sub) for sub in path.iterdir() if (marker := _run_marker(sub))]
    if not runs:
        raise ConfigurationError(
            f"{path} holds no run (no live.jsonl or config.json in it or its sub-folders); "
            "start one with 'scatterbrained simulate' or 'scatterbrained demo'"
        )
    return max(runs)[1]


def _run_marker(folder: Path) -> Path | None:
    for name in (LIVE_FILE, "config.json"):
        if (folder / name).is_file():
            return folder / name
    return None


async def follow_run(folder: Path, feed: Feed, poll_s: float = 0.25) -> None:
    """Publish a run folder's records to ``feed``, following ``live.jsonl`` as it grows
    (from the start again when it is rewritten) until cancelled.

    A run folder without ``live.jsonl`` (an older, finished run) is read once from its
    ``config.json`` and ``metrics.jsonl``. Bad lines are skipped and logged; never raises
    (but cancellation).
    """
    live = folder / LIVE_FILE
    if not live.exists() and (folder / "metrics.jsonl").is_file():
        try:
            for record in records_from_run_folder(folder):
                feed.publish(record)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("dashboard: cannot read the run in %s: %s", folder, exc)
        return
    tail = _Tail(live)
    while True:
        for record in tail.read():
            feed.publish(record)
        await asyncio.sleep(poll_s)


class _Tail:
    """Reads the complete new lines of a file that grows (and may be rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            stat = self.path.stat()
            if stat.st_ino != self.inode or stat.st_size < self.offset:
                self.inode, self.offset, self.partial = stat.st_ino, 0, b""
            if stat.st_size == self.offset:
                return []
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read(READ_CHUNK)
        except OSError:
            return []  # not there yet, or being replaced
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            logger.warning("dashboard: skipping a live-log line over %d bytes", MAX_LINE)
            self.partial = b""
        return [r for r in (_parse(line) for line in lines if line.strip()) if r is not None]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        logger.warning("dashboard: skipping a live-log line that is not JSON: %.80r", line)
        return None
    return record if isinstance(record, dict) else None
