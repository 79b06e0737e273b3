"""TensorBoard event files through tensorboardX's ``SummaryWriter``.

Layout under ``logdir``: one TensorBoard *run* (sub-folder) per node, named by the node id,
and one run ``all`` with the aggregated series, all with the same tags (``accuracy``,
``loss``, ``bytes_sent``, ...; see :mod:`.base`), so TensorBoard draws the nodes' curves and
the mean on one chart per tag. The step is the epoch. View with
``tensorboard --logdir LOGDIR``.

tensorboardX is used rather than ``torch.utils.tensorboard``: it writes the same event files
without needing PyTorch (an optional dependency of scatterbrained) or TensorFlow.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .base import AGGREGATE_RUN, ClosedOnExit, aggregate_scalars, node_scalars

__all__ = ["DEFAULT_MAX_NODES", "TENSORBOARD_INSTALL", "TensorBoardLogger", "run_name"]

logger = logging.getLogger(__name__)

#: How to install the optional TensorBoard dependencies.
TENSORBOARD_INSTALL = "pip install 'scatterbrained[tensorboard]'"
#: Nodes that get their own run (and writer thread); later nodes only count in ``all``.
DEFAULT_MAX_NODES = 256

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_name(node: str) -> str:
    """The sub-folder of ``node``: its id with anything but ``A-Za-z0-9._-`` replaced by ``_``
    (``node-all`` for a node called ``all``, so it never mixes with the aggregate)."""
    name = _UNSAFE.sub("_", node).strip(".") or "_"
    return f"node-{name}" if name == AGGREGATE_RUN else name


def _summary_writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ConfigurationError(
            f"TensorBoard export needs tensorboardX, which cannot be imported ({exc}); "
            f"install it with {TENSORBOARD_INSTALL}"
        ) from None
    return SummaryWriter


class TensorBoardLogger(ClosedOnExit):
    """Writes metric rows as TensorBoard scalars (a :class:`~.base.MetricsLogger`).

    Files are created at the first epoch logged, not before (a run that fails to start leaves
    no folder behind).

    Args:
        logdir: the folder TensorBoard is pointed at (created when needed).
        aggregate: write the ``all`` run; ``None`` (default) writes it for epochs with rows
            of two or more nodes.
        per_node: write one run per node.
        max_nodes: at most this many per-node runs (each holds an open file and a writer
            thread); further nodes are left out of the per-node runs, with one warning.
        flush_secs: seconds between tensorboardX's background flushes.

    Raises:
        ConfigurationError: tensorboardX is not installed (says how to install it).
    """

    def __init__(
        self,
        logdir: str | Path,
        *,
        aggregate: bool | None = None,
        per_node: bool = True,
        max_nodes: int = DEFAULT_MAX_NODES,
        flush_secs: int = 10,
    ) -> None:
        self._writer_class = _summary_writer_class()
        self.logdir = Path(logdir)
        self.aggregate = aggregate
        self.per_node = per_node
        self.max_nodes = max_nodes
        self.flush_secs = flush_secs
        self._writers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._warned_full = False
        self._closed = False

    def _writer(self, run: str) -> Any:
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writer_class(
                logdir=str(self.logdir / run), flush_secs=self.flush_secs, max_queue=64
            )
            self._writers[run] = writer
        return writer

    def _node_writer(self, node: str) -> Any | None:
        run = run_name(node)
        nodes = len(self._writers) - (AGGREGATE_RUN in self._writers)
        if run not in self._writers and nodes >= self.max_nodes:
            if not self._warned_full:
                self._warned_full = True
                logger.warning(
                    "TensorBoard export: more than %d nodes; node %s and later ones only "
                    "count in the %r run",
                    self.max_nodes,
                    node,
                    AGGREGATE_RUN,
                )
            return None
        return self._writer(run)

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write each node's scalars, then the aggregate, at step ``epoch``."""
        with self._lock:
            if self._closed:
                return
            if self.per_node:
                for row in rows:
                    writer = self._node_writer(str(row["node"]))
                    if writer is not None:
                        for tag, value in node_scalars(row).items():
                            writer.add_scalar(tag, value, epoch)
            nodes = {row["node"] for row in rows}
            if self.aggregate or (self.aggregate is None and len(nodes) >= 2):
                writer = self._writer(AGGREGATE_RUN)
                for tag, value in aggregate_scalars(rows).items():
                    writer.add_scalar(tag, value, epoch)

    def flush(self) -> None:
        """Write every pending event to disk now."""
        with self._lock:
            for writer in self._writers.values():
                writer.flush()

    def close(self) -> None:
        """Flush and close every event file (and its writer thread). Idempotent."""
        with self._lock:
            self._closed = True
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.close()
