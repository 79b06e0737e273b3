"""Message dataclasses exchanged between nodes.

Every message travels as a :class:`Message`: routing fields (sender, namespace, session,
sequence number) plus one body. Bodies that carry arrays (model weights) keep them as NumPy
arrays; the codec (:mod:`.codec`) turns them into one raw frame each, zero-copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PROTOCOL_VERSION",
    "Architecture",
    "Body",
    "Bye",
    "Hello",
    "Message",
    "ModelOffer",
    "ModelRequest",
    "ModelUnavailable",
    "ModelUpdate",
    "NamespaceInfo",
    "Raw",
]

#: Version of the wire protocol; a message with another version is dropped.
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class NamespaceInfo:
    """A namespace a node is in, as told in a :class:`Hello`.

    Attributes:
        name: the namespace's name.
        mode: the node's operating mode there (``OperatingMode`` value).
        version: its model version.
        has_model: False while it has no model (a newcomer before ``sync_model``): it sends
            no weights whatever its mode, so it takes no place among the senders.
    """

    name: str
    mode: str
    version: int = 0
    has_model: bool = True


@dataclass(frozen=True)
class Hello:
    """Introduces the sender (and refreshes liveness).

    Attributes:
        address: the sender's inbound address, ``tcp://host:port``.
        namespaces: the namespaces the sender is in (OFFLINE ones omitted).
        public_key: the sender's public key (Z85) when keys are configured.
        want_reply: ask the receiver to answer with its own Hello.
        challenge: a cookie the sender made for the address it sent this Hello to (0: none);
            the receiver echoes it back in its Hellos.
        echo: the last challenge the sender received from the receiver (0: none). A peer
            becomes a member only once it echoed a challenge sent to its claimed address,
            so a Hello naming somebody else's address makes nobody a member there.
    """

    address: str
    namespaces: tuple[NamespaceInfo, ...] = ()
    public_key: str | None = None
    want_reply: bool = False
    challenge: int = 0
    echo: int = 0


@dataclass(frozen=True)
class Bye:
    """The sender leaves the message's namespace (or every namespace when it is empty)."""

    reason: str = ""


@dataclass(frozen=True)
class Raw:
    """Opaque user payload sent with ``ns.send_to``: one frame per item."""

    payload: tuple[bytes | memoryview, ...]


@dataclass(frozen=True)
class ModelUpdate:
    """Weights pushed to a neighbour after local training.

    Attributes:
        version: the sender's model version (epochs/rounds completed).
        samples: local training samples behind these weights (for FedAvg weighting).
        mode: the sender's operating mode when it sent this.
        arrays: named weights (C-contiguous arrays).
        round: the sender's round this update belongs to (-1: order by version).
        weight: the push-sum weight share these weights carry (directed graphs, see
            :mod:`scatterbrained.learning.push_sum`), or 0 when the sender does not use
            push-sum.
    """

    version: int
    samples: int
    mode: str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    round: int = -1
    weight: float = 0.0


@dataclass(frozen=True)
class ModelRequest:
    """Asks a peer for its model (``sync_model``).

    Attributes:
        request_id: echoed in the answer.
        include_architecture: also send the architecture (the requester has no model code).
    """

    request_id: int
    include_architecture: bool = True


@dataclass(frozen=True)
class Architecture:
    """A model's architecture in a format that cannot execute code on load.

    Attributes:
        format: ``"torch.export"`` (payload is a serialized ``torch.export`` program) or
            ``"factory"`` (``factory`` names a registered factory called with ``kwargs``).
        payload: the serialized program (empty for ``"factory"``).
        factory: registered factory name for ``"factory"``.
        kwargs: JSON-like keyword arguments of the factory (str, int, float, bool, None,
            and lists of those).
    """

    format: str
    payload: bytes = b""
    factory: str | None = None
    kwargs: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelOffer:
    """Answer to a :class:`ModelRequest`: weights (and architecture when asked).

    Attributes:
        request_id: the request this answers.
        version: the sender's model version.
        samples: local training samples behind these weights.
        arrays: named weights.
        digest: SHA-256 over the array frames in manifest order, checked on receipt.
        architecture: the architecture, when requested and available.
        round: the sender's synchronous round counter (-1 when unknown): a node that
            catches up from it joins the round its neighbours are in.
    """

    request_id: int
    version: int
    samples: int
    arrays: Mapping[str, np.ndarray]
    digest: bytes = b""
    architecture: Architecture | None = None
    round: int = -1


@dataclass(frozen=True)
class ModelUnavailable:
    """Negative answer to a :class:`ModelRequest` (no model yet, or the mode forbids serving).

    Attributes:
        request_id: the request answered.
        reason: why, in words.
        final: True when asking this peer again cannot help (e.g. its architecture cannot be
            exported); False for a passing state (no model yet, a mode that does not serve).
    """

    request_id: int
    reason: str = ""
    final: bool = False


Body = Hello | Bye | Raw | ModelUpdate | ModelRequest | ModelOffer | ModelUnavailable


@dataclass(frozen=True)
class Message:
    """A body with its routing fields.

    Attributes:
        sender: the sender's node id as it claims it (checked against the authenticated key
            when keys are configured).
        namespace: the namespace the message belongs to ("" for node-level Hello/Bye).
        session: the sender's session id (changes on restart; used against replays).
        seq: per-session sequence number, strictly increasing per sender.
        body: the message body.
    """

    sender: str
    namespace: str
    session: int
    seq: int
    body: Body
