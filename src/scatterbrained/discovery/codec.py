"""Beacon encoding: one UDP datagram of at most :data:`MAX_DATAGRAM_BYTES` bytes.

A datagram is the 4-byte :data:`MAGIC` (format name and version) followed by a msgpack array
(msgspec) of the beacon's fields. Decoding is strict: every field is type-checked and bounded
(string lengths, character sets, namespace count, port range, known operating modes), so a
datagram from a hostile or confused sender either yields a valid :class:`~.base.Beacon` or a
:class:`~scatterbrained.errors.WireError` whose ``reason`` is a short counter key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..errors import ConfigurationError, WireError
from ..types import OperatingMode
from .base import Beacon, NamespaceAd

__all__ = [
    "MAGIC",
    "MAX_DATAGRAM_BYTES",
    "MAX_NAMESPACES",
    "MAX_NAME_CHARS",
    "decode_beacon",
    "encode_beacon",
]

#: Format name and version; a datagram that does not start with it is not ours.
MAGIC = b"SBD1"
#: Largest datagram sent or accepted (fits one Ethernet frame with IPv4/UDP headers).
MAX_DATAGRAM_BYTES = 1400
#: Most namespaces one beacon may advertise.
MAX_NAMESPACES = 32
#: Longest node id or namespace name, in characters.
MAX_NAME_CHARS = 128

_NAME_PATTERN = r"\A[^\x00-\x1f\x7f]+\Z"  # printable: no control characters
_HOST_PATTERN = r"\A[A-Za-z0-9.:\-]*\Z"  # IPv4, IPv6 or a DNS name; empty = "the sender"
_Z85_PATTERN = r"\A[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z"  # CurveZMQ public key
_MODES = frozenset(mode.value for mode in OperatingMode)

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=_NAME_PATTERN)]
_Host = Annotated[str, msgspec.Meta(max_length=253, pattern=_HOST_PATTERN)]
_Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_Mode = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
_Version = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Session = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Key = Annotated[str, msgspec.Meta(pattern=_Z85_PATTERN)]


class _WireNamespace(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    name: _Name
    mode: _Mode
    version: _Version


class _WireBeacon(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    node_id: _Name
    host: _Host
    port: _Port
    namespaces: Annotated[list[_WireNamespace], msgspec.Meta(max_length=MAX_NAMESPACES)]
    public_key: _Key | None
    session: _Session


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_WireBeacon)


def encode_beacon(beacon: Beacon) -> bytes:
    """Encode ``beacon`` as one datagram.

    The result is decoded again before it is returned, so a beacon that peers would drop is
    refused here instead.

    Args:
        beacon: what this node announces.

    Returns:
        The datagram: :data:`MAGIC` followed by the msgpack body, at most
        :data:`MAX_DATAGRAM_BYTES` bytes.

    Raises:
        ConfigurationError: a field is out of bounds (name too long or with control characters,
            port outside 1..65535, unknown mode, duplicate namespace, more than
            :data:`MAX_NAMESPACES` namespaces, key not 40 Z85 characters) or the datagram would
            exceed :data:`MAX_DATAGRAM_BYTES`; shorten names or advertise fewer namespaces.
    """
    wire = _WireBeacon(
        node_id=beacon.node_id,
        host=beacon.host,
        port=beacon.port,
        namespaces=[_WireNamespace(ad.name, ad.mode, ad.version) for ad in beacon.namespaces],
        public_key=beacon.public_key,
        session=beacon.session,
    )
    try:
        datagram = MAGIC + _encoder.encode(wire)
        decode_beacon(datagram)
    except (WireError, TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise ConfigurationError(
            f"beacon for node {beacon.node_id!r} cannot be announced ({exc}); expected names of "
            f"1..{MAX_NAME_CHARS} printable characters, at most {MAX_NAMESPACES} distinct "
            f"namespaces, a port in 1..65535 and a datagram of at most {MAX_DATAGRAM_BYTES} bytes"
        ) from exc
    return datagram


def decode_beacon(datagram: bytes) -> Beacon:
    """Decode and validate one datagram.

    Args:
        datagram: the bytes received.

    Returns:
        The beacon it carries (``host`` may be empty: the receiver fills in the source address).

    Raises:
        WireError: ``reason`` is ``too_large``, ``bad_magic``, ``malformed`` (not msgpack, wrong
            types or out-of-bounds values), ``bad_mode`` or ``duplicate_namespace``.
    """
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise WireError("too_large", f"{len(datagram)} bytes > {MAX_DATAGRAM_BYTES}")
    if not datagram.startswith(MAGIC):
        raise WireError("bad_magic", f"expected prefix {MAGIC!r}, got {bytes(datagram[:4])!r}")
    try:
        wire = _decoder.decode(memoryview(datagram)[len(MAGIC) :])
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: e.g. invalid UTF-8
        raise WireError("malformed", str(exc)) from None
    names = [ns.name for ns in wire.namespaces]
    if len(set(names)) != len(names):
        raise WireError("duplicate_namespace", f"namespaces {names!r}")
    for ns in wire.namespaces:
        if ns.mode not in _MODES:
            raise WireError("bad_mode", f"namespace {ns.name!r} has mode {ns.mode!r}")
    return Beacon(
        node_id=wire.node_id,
        host=wire.host,
        port=wire.port,
        namespaces=tuple(NamespaceAd(ns.name, ns.mode, ns.version) for ns in wire.namespaces),
        public_key=wire.public_key,
        session=wire.session,
    )
