"""The live log of a run: ``live.jsonl``, written while the run goes (what the dashboard reads).

One JSON object per line, each with a ``kind``:

* ``run``: written first: ``nodes`` (ids), ``modes`` (id -> initial mode), ``edges``
  (``[sender, receiver]`` pairs of the configured topology over every node), ``epochs``
  (planned), ``title`` and ``config`` (the run's ``config.json``).
* ``epoch``: after every epoch: ``epoch``, ``rows`` (the ``metrics.jsonl`` rows of that
  epoch, one per node) and ``edges`` (the topology over the nodes alive then).
* ``end``: when the run is over: ``summary`` (``summary.json``).

Writing never raises into the run: a failed write is logged once and the log stops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..federation.topology import Topology, topology_from_spec

__all__ = [
    "LIVE_FILE",
    "MAX_EDGES",
    "LiveLog",
    "records_from_run_folder",
    "run_title",
    "topology_edges",
]

logger = logging.getLogger(__name__)

#: The live log's file name in a run folder.
LIVE_FILE = "live.jsonl"
#: Most edges one record carries (a fully-connected 1,000-node graph has ~10**6).
MAX_EDGES = 20_000


def topology_edges(topology: Topology, members: Collection[str], epoch: int) -> list[list[str]]:
    """The topology's directed edges over ``members`` at ``epoch``, sorted, at most
    :data:`MAX_EDGES` (an empty list when the rule cannot draw them)."""
    try:
        edges = sorted(topology.edges(list(members), epoch=epoch))
    except Exception as exc:  # a drawing aid only: never fail the run for it
        logger.warning("cannot compute the topology's edges for the live log: %s", exc)
        return []
    return [[a, b] for a, b in edges[:MAX_EDGES]]


class LiveLog:
    """Appends the records of one run to ``live.jsonl`` (flushed after every record).

    Args:
        path: the file (created or truncated by :meth:`start`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failed = False

    def start(
        self,
        nodes: Sequence[str],
        modes: dict[str, str],
        edges: list[list[str]],
        *,
        epochs: int | None,
        title: str,
        config: dict[str, Any],
    ) -> None:
        """Write the ``run`` record (truncating an older log in the same folder)."""
        record = {
            "kind": "run",
            "nodes": list(nodes),
            "modes": modes,
            "edges": edges,
            "epochs": epochs,
            "title": title,
            "config": config,
        }
        self._write(record, mode="w")

    def epoch(self, epoch: int, rows: list[dict[str, Any]], edges: list[list[str]]) -> None:
        """Write one ``epoch`` record."""
        self._write({"kind": "epoch", "epoch": epoch, "rows": rows, "edges": edges})

    def end(self, summary: dict[str, Any]) -> None:
        """Write the ``end`` record."""
        self._write({"kind": "end", "summary": summary})

    def _write(self, record: dict[str, Any], mode: str = "a") -> None:
        if self._failed:
            return
        try:
            with self.path.open(mode, encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
        except (OSError, TypeError, ValueError) as exc:
            self._failed = True
            logger.warning("live log %s stopped (the run goes on): %s", self.path, exc)


def records_from_run_folder(folder: Path) -> Iterator[dict[str, Any]]:
    """The live-log records of a finished run that has no ``live.jsonl`` (older runs):
    rebuilt from ``config.json``, ``metrics.jsonl`` and ``summary.json``.

    Raises:
        OSError: a file cannot be read.
        ValueError: a file is not valid JSON.
    """
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    count = int(config.get("nodes", 0))
    ids = [f"n{i:03d}" for i in range(count)]
    default_mode = str(config.get("mode", "peer"))
    modes = {n: str(config.get("modes", {}).get(str(i), default_mode)) for i, n in enumerate(ids)}
    try:
        topology: Topology | None = topology_from_spec(str(config.get("topology", "ring")))
    except Exception:
        topology = None
    edges = topology_edges(topology, ids, 0) if topology is not None else []
    yield {
        "kind": "run",
        "nodes": ids,
        "modes": modes,
        "edges": edges,
        "epochs": config.get("epochs"),
        "title": run_title(config),
        "config": config,
    }
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                by_epoch.setdefault(int(row["epoch"]), []).append(row)
    for epoch in sorted(by_epoch):
        yield {"kind": "epoch", "epoch": epoch, "rows": by_epoch[epoch], "edges": edges}
    summary = folder / "summary.json"
    if summary.is_file():
        yield {"kind": "end", "summary": json.loads(summary.read_text(encoding="utf-8"))}


def run_title(config: dict[str, Any]) -> str:
    """The dashboard's title line for a run with ``config`` (its ``config.json``)."""
    return (
        f"{config.get('nodes')} nodes, {config.get('topology')}, {config.get('dataset')} "
        f"({config.get('backend')} backend)"
    )
