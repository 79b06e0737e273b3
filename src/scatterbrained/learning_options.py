"""Options of a namespace's learning behaviour (keywords of ``node.namespace``)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .roster import check_sessions

__all__ = ["LearningOptions", "check_share_every"]


def check_share_every(every: object) -> None:
    """Check a ``share_every`` value: ``None`` or a whole number of steps >= 1.

    Raises:
        ConfigurationError: anything else (a float, a bool, a string, 0).
    """
    if every is None:
        return
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigurationError(f"share_every must be a whole number of steps >= 1, got {every!r}")


@dataclass
class LearningOptions:
    """How a namespace trains and federates. Every field is a keyword of ``node.namespace``.

    Attributes:
        sync: synchronous rounds instead of asynchronous gossip. With a topology that has a
            centre (``Star``) this is classic centralized FedAvg.
        round_timeout: seconds a synchronous round waits for the expected peers.
        min_peers: the fewest peer updates a synchronous round needs to merge. A round ends
            when every expected peer has sent or at ``round_timeout`` (a node never stalls);
            with fewer than ``min_peers`` updates (or than the expected peers, if fewer) it
            keeps its own weights for that round.
        share_every: federate every this many optimizer steps instead of once per epoch.
        gossip_wait: in gossip, the most seconds a sync point waits for the same round
            from the in-neighbours that keep up, before merging what is there. ``None``
            (the default) adapts it to how long they usually take, between 0.1 and 5 s
            (see :mod:`scatterbrained.learning.pacing`); ``0`` merges what has arrived.
        max_staleness_s: updates older than this (seconds) are never merged.
        sessions: whom a node keeps sessions (handshake, heartbeats) with: ``"all"`` the
            namespace's nodes, ``"neighbours"`` its topology neighbours only (and those that
            greet it), ``"auto"`` (the default) all up to 64 nodes and neighbours past that;
            see :mod:`scatterbrained.roster`.
        push_sum: merge with push-sum (weights travel with a scalar, so every node reaches
            the same uniform average on a directed graph; see
            :mod:`scatterbrained.learning.push_sum`). ``None`` (the default): on when the
            topology is directed and the aggregator is the default ``FedAvg``.
        consensus_rounds: exchanges without training that end every ``train`` call (of at
            least one epoch), so that the nodes of a sparse graph end close to one model.
            ``None`` (the default): as many as the graph needs to shrink the nodes'
            disagreement to 2 % (none on a complete graph or a centralized star, 18 on an
            8-node ring), fewer than the epochs of the call (so ``train(1)`` in a loop gets
            none: call ``train(total)`` once) and at most
            :data:`~scatterbrained.learning.learner.MAX_CONSENSUS_ROUNDS`; ``0``: none.
            See :mod:`scatterbrained.federation.consensus`.
        privacy: a ``ClipAndNoise`` applied to the weights this node sends.
        pairing: the paper's pairing rule: never send to and receive from the same partner
            in the same epoch.
        checkpoint_dir: folder for automatic checkpoints after every epoch; a namespace that
            finds its checkpoint there on start resumes from it.
        on_bad_checkpoint: what a namespace does when the checkpoint in ``checkpoint_dir`` is
            unreadable or does not fit: ``"raise"`` (a ``CheckpointError`` naming the file)
            or ``"fresh"`` (log a warning naming it and start from the model as given).
        example_input: an example input batch, used to export a PyTorch architecture for
            ``sync_model`` (by default the first training batch is used).
        factory: ``(name, kwargs)`` of a registered model factory, the alternative to
            ``torch.export`` for sending the architecture.
        adapter_options: extra keywords for the model adapter (e.g. ``classes`` and
            ``n_features`` for scikit-learn models).
        request_timeout: seconds ``sync_model`` waits for one peer's answer before asking
            another.
        serve_interval: seconds between federation passes in ``serve``.
    """

    sync: bool = False
    round_timeout: float = 30.0
    min_peers: int = 1
    share_every: int | None = None
    gossip_wait: float | None = None
    max_staleness_s: float | None = 120.0
    push_sum: bool | None = None
    sessions: str = "auto"
    consensus_rounds: int | None = None
    privacy: Any = None
    pairing: bool = False
    checkpoint_dir: str | Path | None = None
    on_bad_checkpoint: str = "raise"
    example_input: Any = None
    factory: tuple[str, dict[str, Any]] | None = None
    adapter_options: dict[str, Any] = field(default_factory=dict)
    request_timeout: float = 30.0
    serve_interval: float = 0.5

    def __post_init__(self) -> None:
        for name in ("round_timeout", "request_timeout", "serve_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
        check_sessions(self.sessions)
        if self.on_bad_checkpoint not in ("raise", "fresh"):
            raise ConfigurationError(
                f"on_bad_checkpoint must be 'raise' or 'fresh', got {self.on_bad_checkpoint!r}"
            )
        if self.gossip_wait is not None and self.gossip_wait < 0:
            raise ConfigurationError(f"gossip_wait must be >= 0 s, got {self.gossip_wait!r}")
        if self.min_peers < 0:
            raise ConfigurationError(f"min_peers must be >= 0, got {self.min_peers!r}")
        if self.consensus_rounds is not None and (
            isinstance(self.consensus_rounds, bool)
            or not isinstance(self.consensus_rounds, int)
            or self.consensus_rounds < 0
        ):
            raise ConfigurationError(
                f"consensus_rounds must be None or an integer >= 0, got {self.consensus_rounds!r}"
            )
        check_share_every(self.share_every)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> LearningOptions:
        """Build options from keyword arguments.

        Raises:
            ConfigurationError: an unknown keyword (with the closest valid name) or an
                invalid value.
        """
        valid = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(
                    f"unknown namespace option {key!r}{hint} "
                    f"(valid: topology, mode, policy, aggregator, loss, peer_filter, "
                    f"{', '.join(valid)})"
                )
        return cls(**kwargs)
