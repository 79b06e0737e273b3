"""A hostile node in the simulator: the same Node code, with an attack on its wire.

:class:`AttackingTransport` wraps a node's transport. Every model update and offer the node
sends in the simulation's namespace is re-encoded with the weights the attack forges (and
the sample count it claims); the honest updates it receives are remembered (the latest per
sender, bounded by the number of senders) as the statistics ``alie`` and ``ipm`` need. The
node itself trains and merges as usual: an attacker looks like any peer on the wire.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import WireError
from ..federation.attacks import Attack
from ..transport.base import Envelope, Frame, Transport, TransportStats
from ..wire.codec import compute_digest, decode, encode
from ..wire.messages import ModelOffer, ModelUpdate

__all__ = ["AttackingTransport"]

logger = logging.getLogger(__name__)

#: Senders whose latest honest weights an attacker keeps.
MAX_OBSERVED_SENDERS = 1024


class AttackingTransport:
    """A :class:`~scatterbrained.transport.base.Transport` that forges what a node sends.

    Args:
        inner: the node's real transport.
        attack: the attack model.
        namespace: the namespace whose weights are forged.
    """

    def __init__(self, inner: Transport, attack: Attack, namespace: str) -> None:
        self._inner = inner
        self._attack = attack
        self._namespace = namespace
        self._honest: dict[str, dict[str, np.ndarray]] = {}
        self.forged = 0

    @property
    def address(self) -> str:
        """The inner transport's address."""
        return self._inner.address

    @property
    def public_key(self) -> str | None:
        """The inner transport's public key."""
        return self._inner.public_key

    @property
    def stats(self) -> TransportStats:
        """The inner transport's counters."""
        return self._inner.stats

    async def start(self) -> None:
        """Start the inner transport."""
        await self._inner.start()

    async def close(self) -> None:
        """Close the inner transport."""
        await self._inner.close()

    def forget(self, address: str) -> None:
        """Forget a connection of the inner transport."""
        self._inner.forget(address)

    async def send(
        self,
        address: str,
        frames: Sequence[Frame],
        *,
        server_key: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Send ``frames``, with forged weights when they carry this node's model."""
        forged = self._forge(frames)
        return await self._inner.send(
            address,
            forged if forged is not None else frames,
            server_key=server_key,
            timeout=timeout,
        )

    async def recv(self) -> Envelope:
        """Receive the next message, remembering honest weights sent to this node."""
        envelope = await self._inner.recv()
        self._observe(envelope)
        return envelope

    async def __aenter__(self) -> AttackingTransport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _forge(self, frames: Sequence[Frame]) -> list[Frame] | None:
        try:
            message = decode(frames)
        except WireError:
            return None
        body = message.body
        if message.namespace != self._namespace or not isinstance(body, ModelUpdate | ModelOffer):
            return None
        arrays = self._attack.forge(body.arrays, list(self._honest.values()))
        samples = body.samples if self._attack.samples is None else self._attack.samples
        if isinstance(body, ModelOffer):
            changed: Any = dataclasses.replace(
                body, arrays=arrays, samples=samples, digest=compute_digest(arrays)
            )
        else:
            changed = dataclasses.replace(body, arrays=arrays, samples=samples)
        self.forged += 1
        return encode(dataclasses.replace(message, body=changed))

    def _observe(self, envelope: Envelope) -> None:
        try:
            message = decode(envelope.frames)
        except WireError:
            return
        body = message.body
        if message.namespace != self._namespace or not isinstance(body, ModelUpdate):
            return
        if message.sender in self._honest or len(self._honest) < MAX_OBSERVED_SENDERS:
            self._honest[message.sender] = {k: np.array(v) for k, v in body.arrays.items()}
