"""Return-routability for Hellos: a peer is believed to live at an address only once it
answered there.

Without keys anybody can send a Hello under any id naming any address. Believed as it is, it
makes the receiver push weights, answer model requests and send heartbeats to that address:
a reflection of the receiver's traffic onto a third party, or thousands of forged members
that each cost a connection. So every Hello a node sends carries a *challenge*: a keyed hash
of the address it is sent to, which only a process receiving at that address can read. A peer
becomes a member (``PeerRecord.greeted``) only when a Hello from it *echoes* the challenge
made for the address it claims. Until then the node sends it nothing but Hellos, at most
:data:`MAX_UNVERIFIED_REPLIES` per heartbeat interval in all. The same cookie idea as in
DTLS/QUIC address validation and TCP SYN cookies: the node keeps no state per challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["MAX_UNVERIFIED_REPLIES", "AddressChallenge", "ReplyBudget"]

#: Hello replies to not-yet-verified senders per heartbeat interval (a flood of forged
#: Hellos asking for replies costs at most this many small messages).
MAX_UNVERIFIED_REPLIES = 256


class AddressChallenge:
    """Stateless cookies for addresses, keyed by a secret of this node's session.

    Args:
        secret: the key (random 32 bytes when ``None``).
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)

    def cookie(self, address: str) -> int:
        """The challenge for Hellos sent to ``address``: 62 bits, never 0."""
        digest = hmac.new(self._secret, address.encode("utf-8", "replace"), hashlib.sha256)
        return (int.from_bytes(digest.digest()[:8], "big") >> 2) | 1

    def verifies(self, echo: int, address: str) -> bool:
        """True when ``echo`` is the challenge this node sends to ``address``."""
        return echo != 0 and hmac.compare_digest(
            echo.to_bytes(8, "big"), self.cookie(address).to_bytes(8, "big")
        )


class ReplyBudget:
    """At most ``limit`` uses per ``interval`` seconds.

    Args:
        limit: uses per interval (>= 1).
    """

    def __init__(self, limit: int = MAX_UNVERIFIED_REPLIES) -> None:
        self.limit = limit
        self._window_start = float("-inf")
        self._used = 0

    def take(self, now: float, interval: float) -> bool:
        """Use one if any is left in the current window (``now`` in monotonic seconds)."""
        if now - self._window_start >= interval:
            self._window_start, self._used = now, 0
        if self._used >= self.limit:
            return False
        self._used += 1
        return True
