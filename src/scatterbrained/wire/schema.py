"""The header schema of the wire format (frame 0), as msgspec structs.

Every struct is ``array_like`` (encoded as a msgpack array, fields in order) and the body is a
tagged union whose integer tag is the array's first element. Decoding with the typed
:data:`HEADER_DECODER` makes msgspec itself reject wrong types, missing fields and unknown
body tags; each body's :meth:`BodyFields.check` then bounds its values. Bodies' arrays and
byte payloads are not here: they are the frames that follow, described by the manifest.

This module is the codec's internal schema; users work with :mod:`.messages`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from scatterbrained.errors import WireError
from scatterbrained.wire.limits import MAX_TEXT_CHARS, check_json_like, check_text

__all__ = [
    "DIGEST_BYTES",
    "HEADER_DECODER",
    "HEADER_ENCODER",
    "VERSION_DECODER",
    "AnyBodyFields",
    "ArchitectureFields",
    "ArraySpec",
    "BodyFields",
    "ByeFields",
    "Header",
    "HelloFields",
    "ModelOfferFields",
    "ModelRequestFields",
    "ModelUnavailableFields",
    "ModelUpdateFields",
    "NamespaceFields",
    "RawFields",
    "VersionPeek",
]

#: Length of a SHA-256 digest in bytes.
DIGEST_BYTES = 32


class ArraySpec(msgspec.Struct, array_like=True):
    """One manifest entry: the frame's name, dtype (NumPy ``.str`` or ``"raw"``) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class BodyFields(msgspec.Struct, array_like=True):
    """Base of the header's body structs (msgspec tagged union, tag = first element)."""

    def check(self) -> None:
        """Check the bounds of the scalar fields that the schema's types cannot express.

        Raises:
            WireError: ``"field"`` (a text too long, a negative count, bad kwargs) or
                ``"digest"`` (a digest that is not 0 or 32 bytes long).
        """

    def expects_frames(self) -> bool:
        """Whether this body may come with payload frames."""
        return False


class NamespaceFields(msgspec.Struct, array_like=True):
    """A :class:`~scatterbrained.wire.messages.NamespaceInfo` on the wire."""

    name: str
    mode: str
    version: int
    has_model: bool = True


class HelloFields(BodyFields, tag=1):
    """Fields of a Hello (tag 1)."""

    address: str
    namespaces: tuple[NamespaceFields, ...]
    public_key: str | None
    want_reply: bool
    challenge: int = 0
    echo: int = 0

    def check(self) -> None:
        """See :meth:`BodyFields.check`."""
        check_text(self.address, "Hello.address")
        _check_count(self.challenge, "Hello.challenge")
        _check_count(self.echo, "Hello.echo")
        check_text(self.public_key, "Hello.public_key")
        if len(self.namespaces) > MAX_NAMESPACES:
            raise WireError(
                "field", f"Hello lists {len(self.namespaces)} namespaces; at most {MAX_NAMESPACES}"
            )
        for info in self.namespaces:
            check_text(info.name, "Hello.namespaces.name")
            check_text(info.mode, "Hello.namespaces.mode")
            _check_count(info.version, "Hello.namespaces.version")


class ByeFields(BodyFields, tag=2):
    """Fields of a Bye (tag 2)."""

    reason: str

    def check(self) -> None:
        """See :meth:`BodyFields.check`."""
        check_text(self.reason, "Bye.reason", MAX_TEXT_CHARS)


class RawFields(BodyFields, tag=3):
    """A Raw body (tag 3): no fields; every payload item is a ``"raw"`` frame."""

    def expects_frames(self) -> bool:
        """See :meth:`BodyFields.expects_frames`."""
        return True


class ModelUpdateFields(BodyFields, tag=4):
    """Scalar fields of a ModelUpdate (tag 4); its arrays are the frames."""

    version: int
    samples: int
    mode: str
    round: int
    weight: float = 0.0

    def check(self) -> None:
        """See :meth:`BodyFields.check`."""
        check_text(self.mode, "ModelUpdate.mode")
        _check_count(self.samples, "ModelUpdate.samples")
        _check_count(self.version, "ModelUpdate.version")
        _check_round(self.round, "ModelUpdate.round")
        if not 0.0 <= self.weight <= MAX_PUSH_SUM_WEIGHT:  # False for NaN too
            raise WireError(
                "field",
                f"ModelUpdate.weight is {self.weight}; expected a push-sum weight in "
                f"0..{MAX_PUSH_SUM_WEIGHT:g}",
            )

    def expects_frames(self) -> bool:
        """See :meth:`BodyFields.expects_frames`."""
        return True


class ModelRequestFields(BodyFields, tag=5):
    """Fields of a ModelRequest (tag 5)."""

    request_id: int
    include_architecture: bool


class ArchitectureFields(msgspec.Struct, array_like=True):
    """An Architecture without its payload (which travels as the offer's last frame)."""

    format: str
    factory: str | None
    kwargs: dict[str, Any]


class ModelOfferFields(BodyFields, tag=6):
    """Scalar fields of a ModelOffer (tag 6); arrays (and architecture payload) are frames."""

    request_id: int
    version: int
    samples: int
    digest: bytes
    architecture: ArchitectureFields | None
    round: int = -1

    def check(self) -> None:
        """See :meth:`BodyFields.check`."""
        _check_count(self.samples, "ModelOffer.samples")
        _check_count(self.version, "ModelOffer.version")
        _check_round(self.round, "ModelOffer.round")
        if len(self.digest) not in (0, DIGEST_BYTES):
            raise WireError("digest", f"digest has {len(self.digest)} bytes; expected 0 or 32")
        if self.architecture is not None:
            check_text(self.architecture.format, "Architecture.format")
            check_text(self.architecture.factory, "Architecture.factory")
            check_json_like(self.architecture.kwargs, "Architecture.kwargs")

    def expects_frames(self) -> bool:
        """See :meth:`BodyFields.expects_frames`."""
        return True


class ModelUnavailableFields(BodyFields, tag=7):
    """Fields of a ModelUnavailable (tag 7)."""

    request_id: int
    reason: str
    final: bool = False

    def check(self) -> None:
        """See :meth:`BodyFields.check`."""
        check_text(self.reason, "ModelUnavailable.reason", MAX_TEXT_CHARS)


AnyBodyFields: TypeAlias = (
    HelloFields
    | ByeFields
    | RawFields
    | ModelUpdateFields
    | ModelRequestFields
    | ModelOfferFields
    | ModelUnavailableFields
)


class Header(msgspec.Struct, array_like=True):
    """Frame 0: protocol version, routing fields, body fields and the frame manifest."""

    version: int
    sender: str
    namespace: str
    session: int
    seq: int
    body: AnyBodyFields
    manifest: tuple[ArraySpec, ...]


class VersionPeek(msgspec.Struct, array_like=True):
    """Reads only the version of a header that failed to decode (trailing items ignored)."""

    version: int


#: Encodes a :class:`Header` to msgpack.
HEADER_ENCODER = msgspec.msgpack.Encoder()
#: Decodes and type-checks a :class:`Header`.
HEADER_DECODER = msgspec.msgpack.Decoder(Header)
#: Decodes only a header's leading version number.
VERSION_DECODER = msgspec.msgpack.Decoder(VersionPeek)


#: Namespaces one Hello may list (a node may be in at most this many).
MAX_NAMESPACES = 64
#: The largest counter (version, round, samples) a message may carry: far beyond any real
#: run, and small enough that a counter adopted from a peer can always be incremented and
#: encoded again (a peer sending 2**64 - 1 must not break this node for good).
MAX_COUNTER = 2**62
#: The largest push-sum weight an update may carry. Push-sum conserves the total weight,
#: which starts at 1 per node, so an honest share never exceeds the federation's size.
MAX_PUSH_SUM_WEIGHT = 1e6


def _check_count(value: int, what: str) -> None:
    if not 0 <= value < MAX_COUNTER:
        raise WireError("field", f"{what} is {value}; expected a count in 0..2**62")


def _check_round(value: int, what: str) -> None:
    if not -1 <= value < MAX_COUNTER:
        raise WireError("field", f"{what} is {value}; expected -1 or a round in 0..2**62")
