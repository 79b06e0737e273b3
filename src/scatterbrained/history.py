"""Per-epoch training history returned by ``Namespace.train``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EpochRecord", "History", "metric_row"]


@dataclass(frozen=True)
class EpochRecord:
    """What happened in one local epoch.

    Attributes:
        epoch: 1-based epoch number (continues across restarts restored from a checkpoint).
        train_loss: mean training loss of the epoch.
        val_loss: validation loss after federating, or ``None`` without a validation loader.
        val_accuracy: validation accuracy (0..1) after federating, or ``None`` when there is
            no validation loader or the targets are not class labels.
        mode: the operating mode during the exchange (``OperatingMode`` value).
        merged_from: ids of the peers whose weights were merged into this node's model.
        bytes_sent: bytes this node sent in the namespace during the epoch.
        bytes_received: bytes received in the namespace during the epoch.
        samples: local training samples seen in the epoch.
        version: model version after the epoch.
        peers: number of peers present at the end of the epoch.
        wall_s: seconds the epoch took (training + federation).
        mode_switches: mode changes during the epoch, as ``"old->new (reason)"`` strings.
        epsilon: with a ``privacy`` mechanism, the epsilon spent so far (at its delta), from
            the ``dp-accounting`` RDP accountant; ``None`` without one.
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    mode: str
    merged_from: tuple[str, ...]
    bytes_sent: int
    bytes_received: int
    samples: int
    version: int
    peers: int
    wall_s: float
    mode_switches: tuple[str, ...] = ()
    epsilon: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        data = asdict(self)
        data["merged_from"] = list(self.merged_from)
        data["mode_switches"] = list(self.mode_switches)
        return data


@dataclass
class History:
    """The records of ``Namespace.train``, in order. Iterable and indexable."""

    records: list[EpochRecord] = field(default_factory=list)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> EpochRecord:
        return self.records[index]

    @property
    def last(self) -> EpochRecord | None:
        """The latest record, or ``None`` before the first epoch."""
        return self.records[-1] if self.records else None

    def append(self, record: EpochRecord) -> None:
        """Add a record."""
        self.records.append(record)

    def to_dicts(self) -> list[dict[str, Any]]:
        """All records as JSON-serialisable dicts."""
        return [r.as_dict() for r in self.records]


def metric_row(node: str, record: EpochRecord) -> dict[str, Any]:
    """One node's epoch as a ``metrics.jsonl`` row (the simulator's, the exporters' and the
    dashboard's rows share these keys; ``accuracy`` is ``val_accuracy``, ``loss`` is
    ``val_loss``, ``event`` is a fault the simulator adds).

    Args:
        node: the node id.
        record: the epoch's record.
    """
    return {
        "node": node,
        "epoch": record.epoch,
        "alive": True,
        "event": None,
        "accuracy": record.val_accuracy,
        "loss": record.val_loss,
        "train_loss": record.train_loss,
        "mode": record.mode,
        "merged_from": list(record.merged_from),
        "bytes_sent": record.bytes_sent,
        "bytes_received": record.bytes_received,
        "wall_s": record.wall_s,
        "peers": record.peers,
        "version": record.version,
    }
