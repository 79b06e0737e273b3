"""Messages and their wire format: a versioned msgpack header plus one raw frame per array.

:mod:`.messages` defines what nodes exchange; :func:`encode` turns a :class:`Message` into
frames (zero-copy for arrays) and :func:`decode` validates received frames against
:class:`Limits` and turns them back, raising only :class:`~scatterbrained.errors.WireError`.
"""

from __future__ import annotations

from scatterbrained.wire.codec import ARCHITECTURE_FRAME_NAME, compute_digest, decode, encode
from scatterbrained.wire.limits import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    RAW_DTYPE,
    Limits,
    Specs,
    check_specs,
    specs_of,
)
from scatterbrained.wire.messages import (
    PROTOCOL_VERSION,
    Architecture,
    Body,
    Bye,
    Hello,
    Message,
    ModelOffer,
    ModelRequest,
    ModelUnavailable,
    ModelUpdate,
    NamespaceInfo,
    Raw,
)

__all__ = [
    "ALLOWED_DTYPES",
    "ARCHITECTURE_FRAME_NAME",
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "RAW_DTYPE",
    "Architecture",
    "Body",
    "Bye",
    "Hello",
    "Limits",
    "Message",
    "ModelOffer",
    "ModelRequest",
    "ModelUnavailable",
    "ModelUpdate",
    "NamespaceInfo",
    "Raw",
    "Specs",
    "check_specs",
    "compute_digest",
    "decode",
    "encode",
    "specs_of",
]
