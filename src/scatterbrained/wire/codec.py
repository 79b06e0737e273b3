"""Message <-> multipart frames: a versioned msgpack header plus one raw frame per array.

Frame 0 is a header encoded with msgspec msgpack (array-like structs, the body a tagged
union): protocol version, sender, namespace, session, seq, the body's scalar fields, and a
manifest with one ``(name, dtype, shape)`` entry per following frame. Frames 1..n are the
array buffers themselves, sent zero-copy (a byte view of each C-contiguous array); dtype
``"raw"`` marks an opaque byte frame of shape ``(nbytes,)`` (a :class:`Raw` payload item, or
the :class:`Architecture` payload, which is then the last frame of a :class:`ModelOffer`).

:func:`decode` treats its input as hostile: it checks every bound of :class:`Limits`, the
header schema, each manifest entry against its frame, and (optionally) that float arrays are
finite; any failure raises :class:`WireError` with a stable ``reason`` and nothing else ever
escapes. Decoded arrays are read-only views onto the received frames (no copy).

Reasons: ``frame`` (not a byte buffer), ``empty``, ``too_many_frames``, ``frame_size``,
``too_large``, ``header``, ``version``, ``frame_count``, ``field``, ``manifest``, ``name``,
``dtype``, ``shape``, ``length``, ``non_finite``, ``value``, ``digest``, ``specs``,
``malformed`` (anything unforeseen).
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

import numpy as np

from scatterbrained.errors import WireError
from scatterbrained.transport.base import Frame
from scatterbrained.wire.limits import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    RAW_DTYPE,
    Limits,
    Specs,
    check_all_finite,
    check_array_name,
    check_json_like,
    check_shape,
    check_specs,
    check_text,
    specs_of,
    wire_array,
    wire_dtype,
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
from scatterbrained.wire.schema import (
    HEADER_DECODER,
    HEADER_ENCODER,
    VERSION_DECODER,
    AnyBodyFields,
    ArchitectureFields,
    ArraySpec,
    BodyFields,
    ByeFields,
    Header,
    HelloFields,
    ModelOfferFields,
    ModelRequestFields,
    ModelUnavailableFields,
    ModelUpdateFields,
    NamespaceFields,
    RawFields,
)

__all__ = [
    "ARCHITECTURE_FRAME_NAME",
    "DEFAULT_LIMITS",
    "Limits",
    "Specs",
    "check_specs",
    "compute_digest",
    "decode",
    "encode",
    "specs_of",
]

#: Manifest name of the Architecture payload frame ("~" never occurs in a parameter name).
ARCHITECTURE_FRAME_NAME = "~architecture"

#: One decoded payload item: an array frame, or an opaque byte frame.
_Item: TypeAlias = np.ndarray | memoryview
_Entry: TypeAlias = tuple[str, _Item]


# ----------------------------------------------------------------------------------- encode


def encode(message: Message) -> list[Frame]:
    """Encode ``message`` into frames: the header, then one zero-copy frame per array/item.

    Array frames are byte views of the arrays themselves (C-contiguous arrays are not
    copied; non-contiguous or big-endian ones are converted once). The caller must not
    mutate the arrays until the frames are sent.

    Raises:
        WireError: the message cannot be represented: ``"dtype"`` (dtype not allowed),
            ``"name"`` (empty, too long or repeated array name), ``"field"`` or ``"digest"``
            (a field out of the bounds :func:`decode` enforces, or not encodable).
    """
    try:
        wire_body, specs, frames = _encode_body(message.body)
        header = Header(
            PROTOCOL_VERSION,
            message.sender,
            message.namespace,
            operator.index(message.session),
            operator.index(message.seq),
            wire_body,
            tuple(specs),
        )
        _check_fields(header)
        head = HEADER_ENCODER.encode(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError("field", f"cannot encode {type(message.body).__name__}: {exc}") from exc
    return [head, *frames]


def _encode_body(body: Body) -> tuple[AnyBodyFields, list[ArraySpec], list[Frame]]:
    specs: list[ArraySpec] = []
    frames: list[Frame] = []
    if isinstance(body, Raw):
        for index, item in enumerate(body.payload):
            _append_raw(str(index), item, specs, frames)
        return RawFields(), specs, frames
    if isinstance(body, ModelUpdate):
        _append_arrays(body.arrays, specs, frames)
        wire = ModelUpdateFields(
            _idx(body.version), _idx(body.samples), body.mode, _idx(body.round), float(body.weight)
        )
        return wire, specs, frames
    if isinstance(body, ModelOffer):
        _append_arrays(body.arrays, specs, frames)
        arch = body.architecture
        if arch is not None:
            _append_raw(ARCHITECTURE_FRAME_NAME, arch.payload, specs, frames)
        return _offer_to_wire(body), specs, frames
    return _control_to_wire(body), specs, frames


def _control_to_wire(body: Body) -> AnyBodyFields:
    if isinstance(body, Hello):
        infos = tuple(
            NamespaceFields(i.name, i.mode, _idx(i.version), i.has_model) for i in body.namespaces
        )
        return HelloFields(
            body.address,
            infos,
            body.public_key,
            bool(body.want_reply),
            int(body.challenge),
            int(body.echo),
        )
    if isinstance(body, Bye):
        return ByeFields(body.reason)
    if isinstance(body, ModelRequest):
        return ModelRequestFields(_idx(body.request_id), bool(body.include_architecture))
    if isinstance(body, ModelUnavailable):
        return ModelUnavailableFields(_idx(body.request_id), body.reason, body.final)
    raise WireError("field", f"cannot encode a body of type {type(body).__name__}")


def _offer_to_wire(body: ModelOffer) -> ModelOfferFields:
    arch = body.architecture
    wire_arch = None
    if arch is not None:
        check_json_like(arch.kwargs, "Architecture.kwargs")
        wire_arch = ArchitectureFields(arch.format, arch.factory, dict(arch.kwargs))
    return ModelOfferFields(
        _idx(body.request_id),
        _idx(body.version),
        _idx(body.samples),
        bytes(body.digest),
        wire_arch,
        _idx(body.round),
    )


def _idx(value: int) -> int:
    try:
        return operator.index(value)
    except TypeError as exc:
        raise WireError("field", f"expected an integer, got {type(value).__name__}") from exc


def _append_arrays(
    arrays: Mapping[str, np.ndarray], specs: list[ArraySpec], frames: list[Frame]
) -> None:
    seen: set[str] = set()
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise WireError("name", f"array names must be str, got {type(name).__name__}")
        check_array_name(name, seen)
        wire = wire_array(array)
        specs.append(ArraySpec(name, wire_dtype(wire.dtype), tuple(wire.shape)))
        frames.append(_byte_frame(wire))


def _append_raw(name: str, item: object, specs: list[ArraySpec], frames: list[Frame]) -> None:
    try:
        view = _byte_view(item)
    except WireError:
        raise WireError("field", f"payload item {name!r} is not a contiguous buffer") from None
    specs.append(ArraySpec(name, RAW_DTYPE, (view.nbytes,)))
    frames.append(view)


def _byte_frame(array: np.ndarray) -> Frame:
    """Return the bytes of a C-contiguous ``array`` as a flat memoryview onto it (no copy)."""
    return array.data.cast("B") if array.size else b""


def _byte_view(buffer: object) -> memoryview:
    """Return a flat unsigned-byte memoryview of ``buffer`` without copying."""
    try:
        view = memoryview(buffer)  # type: ignore[arg-type]
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
    except (TypeError, ValueError) as exc:
        raise WireError("frame", f"not a contiguous byte buffer: {type(buffer).__name__}") from exc
    return view


def compute_digest(arrays: Mapping[str, np.ndarray] | Iterable[np.ndarray]) -> bytes:
    """SHA-256 over arrays in manifest order, as :attr:`ModelOffer.digest` expects.

    Each array contributes its wire dtype, shape and byte length, then its bytes, so the
    digest also covers how the bytes are split and read. A mapping contributes its values in
    iteration order (names are not hashed; compare names with :func:`check_specs`).

    Raises:
        WireError: ``"dtype"`` when an array's dtype is not allowed on the wire.
    """
    values = arrays.values() if isinstance(arrays, Mapping) else arrays
    digest = hashlib.sha256()
    for array in values:
        wire = wire_array(array)
        shape = ",".join(str(dim) for dim in wire.shape)
        digest.update(f"{wire_dtype(wire.dtype)}|{shape}|{wire.nbytes};".encode())
        digest.update(_byte_frame(wire))
    return digest.digest()


# ----------------------------------------------------------------------------------- decode


def decode(
    frames: Sequence[Frame],
    limits: Limits = DEFAULT_LIMITS,
    *,
    expected: Specs | None = None,
) -> Message:
    """Decode and validate one received multipart message.

    Args:
        frames: the received frames (buffers; memoryviews are not copied).
        limits: the bounds to enforce.
        expected: when given, the arrays of a ModelUpdate/ModelOffer must match these
            names, dtypes and shapes exactly (see :func:`check_specs`).

    Returns:
        The message; its arrays are read-only views onto ``frames``, Raw payload items are
        memoryviews of them, and ``Architecture.payload`` is a copy (bytes).

    Raises:
        WireError: for any defect of the input (see the module docstring for the reasons).
            No other exception escapes.
    """
    try:
        return _decode(frames, limits, expected)
    except WireError:
        raise
    except Exception as exc:  # hostile input must never raise anything but WireError
        raise WireError("malformed", f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def _decode(frames: Sequence[object], limits: Limits, expected: Specs | None) -> Message:
    views = _check_frame_sizes(frames, limits)
    header = _decode_header(views[0])
    _check_fields(header)
    if len(views) != 1 + len(header.manifest):
        raise WireError(
            "frame_count",
            f"{len(views)} frames; the manifest declares 1 + {len(header.manifest)}",
        )
    if header.manifest and not header.body.expects_frames():
        raise WireError(
            "manifest", f"{type(header.body).__name__.removesuffix('Fields')} carries no frames"
        )
    entries = _decode_payload(header.manifest, views[1:], limits)
    body = _build_body(header.body, entries)
    if expected is not None and isinstance(body, (ModelUpdate, ModelOffer)):
        check_specs(body.arrays, expected)
    return Message(header.sender, header.namespace, header.session, header.seq, body)


def _check_frame_sizes(frames: Sequence[object], limits: Limits) -> list[memoryview]:
    if len(frames) == 0:
        raise WireError("empty", "a message needs at least a header frame")
    if len(frames) > limits.max_frames:
        raise WireError("too_many_frames", f"{len(frames)} frames; at most {limits.max_frames}")
    views = [_byte_view(frame) for frame in frames]
    total = 0
    for view in views:
        if view.nbytes > limits.max_frame_bytes:
            raise WireError("frame_size", f"{view.nbytes} bytes; at most {limits.max_frame_bytes}")
        total += view.nbytes
    if total > limits.max_message_bytes:
        raise WireError("too_large", f"{total} bytes; at most {limits.max_message_bytes}")
    if views[0].nbytes > limits.max_header_bytes:
        raise WireError(
            "too_large", f"header of {views[0].nbytes} bytes; at most {limits.max_header_bytes}"
        )
    return views


def _decode_header(view: memoryview) -> Header:
    try:
        header = HEADER_DECODER.decode(view)
    except Exception as exc:  # msgspec errors, RecursionError on absurd nesting
        raise WireError(_failed_header_reason(view), str(exc)[:200]) from None
    if header.version != PROTOCOL_VERSION:
        raise WireError("version", f"protocol {header.version}; expected {PROTOCOL_VERSION}")
    return header


def _failed_header_reason(view: memoryview) -> str:
    """Say ``"version"`` when an undecodable header is from another protocol version."""
    try:
        version = VERSION_DECODER.decode(view).version
    except Exception:
        return "header"
    return "header" if version == PROTOCOL_VERSION else "version"


def _check_fields(header: Header) -> None:
    check_text(header.sender, "sender")
    check_text(header.namespace, "namespace")
    header.body.check()


def _decode_payload(
    manifest: Sequence[ArraySpec], views: Sequence[memoryview], limits: Limits
) -> list[_Entry]:
    seen: set[str] = set()
    entries: list[_Entry] = []
    for spec, view in zip(manifest, views, strict=True):
        check_array_name(spec.name, seen)
        if spec.dtype == RAW_DTYPE:
            if spec.shape != (view.nbytes,):
                raise WireError("length", f"raw frame {spec.name[:80]!r} length mismatch")
            entries.append((spec.name, view))
        else:
            entries.append((spec.name, _decode_array(spec, view, limits)))
    return entries


def _decode_array(spec: ArraySpec, view: memoryview, limits: Limits) -> np.ndarray:
    if spec.dtype not in ALLOWED_DTYPES:
        raise WireError("dtype", f"dtype {spec.dtype[:40]!r} of {spec.name[:80]!r} not allowed")
    dtype = np.dtype(spec.dtype)
    nbytes = check_shape(spec.shape, dtype.itemsize, limits.max_frame_bytes)
    if nbytes != view.nbytes:
        raise WireError(
            "length", f"{spec.name[:80]!r}: frame has {view.nbytes} bytes; shape needs {nbytes}"
        )
    array = np.frombuffer(view, dtype=dtype).reshape(spec.shape)
    if limits.check_finite:
        check_all_finite(array, spec.name)
    if dtype.kind == "b" and array.size and int(array.view(np.uint8).max()) > 1:
        raise WireError("value", f"bool array {spec.name[:80]!r} holds bytes other than 0/1")
    return array


def _only_arrays(entries: Sequence[_Entry]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, item in entries:
        if not isinstance(item, np.ndarray):
            raise WireError("manifest", f"frame {name[:80]!r} must be an array, not raw bytes")
        arrays[name] = item
    return arrays


def _build_body(wire: BodyFields, entries: list[_Entry]) -> Body:
    if isinstance(wire, RawFields):
        if any(isinstance(item, np.ndarray) for _, item in entries):
            raise WireError("manifest", "Raw payload frames must have dtype 'raw'")
        return Raw(tuple(item for _, item in entries if isinstance(item, memoryview)))
    if isinstance(wire, ModelUpdateFields):
        arrays = _only_arrays(entries)
        return ModelUpdate(wire.version, wire.samples, wire.mode, arrays, wire.round, wire.weight)
    if isinstance(wire, ModelOfferFields):
        return _build_offer(wire, entries)
    if isinstance(wire, HelloFields):
        infos = tuple(
            NamespaceInfo(i.name, i.mode, i.version, i.has_model) for i in wire.namespaces
        )
        return Hello(
            wire.address, infos, wire.public_key, wire.want_reply, wire.challenge, wire.echo
        )
    if isinstance(wire, ByeFields):
        return Bye(wire.reason)
    if isinstance(wire, ModelRequestFields):
        return ModelRequest(wire.request_id, wire.include_architecture)
    if isinstance(wire, ModelUnavailableFields):
        return ModelUnavailable(wire.request_id, wire.reason, wire.final)
    raise WireError("header", f"unknown body {type(wire).__name__}")  # pragma: no cover


def _build_offer(wire: ModelOfferFields, entries: list[_Entry]) -> ModelOffer:
    architecture = None
    if wire.architecture is not None:
        if not entries or not isinstance(entries[-1][1], memoryview):
            raise WireError("manifest", "ModelOffer with architecture lacks its payload frame")
        name, payload = entries.pop()
        if name != ARCHITECTURE_FRAME_NAME:
            raise WireError("manifest", f"architecture frame is named {name[:80]!r}")
        arch = wire.architecture
        architecture = Architecture(arch.format, bytes(payload), arch.factory, arch.kwargs)
    arrays = _only_arrays(entries)
    if wire.digest and not hmac.compare_digest(wire.digest, compute_digest(arrays)):
        raise WireError("digest", "the arrays do not match the offer's SHA-256 digest")
    return ModelOffer(
        wire.request_id, wire.version, wire.samples, arrays, wire.digest, architecture, wire.round
    )
