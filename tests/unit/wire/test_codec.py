"""Example-based tests of the wire codec: round trips, zero-copy, and every rejection reason."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError, WireError
from scatterbrained.wire import (
    ALLOWED_DTYPES,
    ARCHITECTURE_FRAME_NAME,
    PROTOCOL_VERSION,
    Architecture,
    Body,
    Bye,
    Hello,
    Limits,
    Message,
    ModelOffer,
    ModelRequest,
    ModelUnavailable,
    ModelUpdate,
    NamespaceInfo,
    Raw,
    check_specs,
    compute_digest,
    decode,
    encode,
    specs_of,
)
from scatterbrained.wire.schema import (
    HEADER_DECODER,
    HEADER_ENCODER,
    ArraySpec,
    Header,
    ModelOfferFields,
    RawFields,
)

pytestmark = pytest.mark.timeout(10)

Frames = list[Any]


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 5), dtype=np.float64),
    }


def _message(body: Body) -> Message:
    return Message(sender="node-a", namespace="MyNetwork", session=42, seq=7, body=body)


def _assert_arrays_equal(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert np.array_equal(got[name], array), name


def _assert_round_trip(message: Message) -> Message:
    decoded = decode(encode(message))
    assert (decoded.sender, decoded.namespace, decoded.session, decoded.seq) == (
        message.sender,
        message.namespace,
        message.session,
        message.seq,
    )
    assert type(decoded.body) is type(message.body)
    return decoded


BODIES_WITHOUT_ARRAYS: list[Body] = [
    Hello("tcp://127.0.0.1:5555"),
    Hello(
        "tcp://10.0.0.1:1",
        (NamespaceInfo("a", "peer", 3), NamespaceInfo("b", "leeching")),
        public_key="k" * 40,
        want_reply=True,
    ),
    Bye(),
    Bye("shutting down"),
    ModelRequest(request_id=9),
    ModelRequest(request_id=2**63, include_architecture=False),
    ModelUnavailable(request_id=1, reason="no model yet"),
]


@pytest.mark.parametrize("body", BODIES_WITHOUT_ARRAYS, ids=lambda b: type(b).__name__)
def test_control_bodies_round_trip(body: Body) -> None:
    # Prepare
    message = _message(body)

    # Execute
    decoded = _assert_round_trip(message)

    # Assert
    assert decoded.body == body
    assert len(encode(message)) == 1


@pytest.mark.parametrize("arrays", [{}, _arrays()], ids=["no-arrays", "mixed"])
def test_model_update_round_trips(arrays: dict[str, np.ndarray]) -> None:
    # Prepare
    body = ModelUpdate(version=3, samples=1200, mode="peer", arrays=arrays, round=5, weight=0.25)

    # Execute
    decoded = _assert_round_trip(_message(body))

    # Assert
    assert isinstance(decoded.body, ModelUpdate)
    assert (decoded.body.version, decoded.body.samples, decoded.body.mode) == (3, 1200, "peer")
    assert (decoded.body.round, decoded.body.weight) == (5, 0.25)
    _assert_arrays_equal(decoded.body.arrays, arrays)


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
def test_every_allowed_dtype_round_trips_including_0d(dtype: str) -> None:
    # Prepare
    arrays = {"scalar": np.ones((), dtype=dtype), "matrix": np.ones((2, 3), dtype=dtype)}

    # Execute
    decoded = _assert_round_trip(_message(ModelUpdate(1, 1, "peer", arrays)))

    # Assert
    assert isinstance(decoded.body, ModelUpdate)
    _assert_arrays_equal(decoded.body.arrays, arrays)
    assert decoded.body.arrays["scalar"].ndim == 0


def test_model_offer_with_architecture_round_trips_and_checks_digest() -> None:
    # Prepare
    arrays = _arrays()
    arch = Architecture("factory", b"", factory="mlp", kwargs={"hidden": [64, 32], "p": 0.5})
    offer = ModelOffer(1, 4, 100, arrays, compute_digest(arrays), arch)

    # Execute
    decoded = _assert_round_trip(_message(offer))

    # Assert
    assert isinstance(decoded.body, ModelOffer)
    assert decoded.body.architecture == arch
    assert decoded.body.digest == offer.digest
    _assert_arrays_equal(decoded.body.arrays, arrays)


def test_model_offer_carries_a_binary_architecture_payload() -> None:
    # Prepare
    arch = Architecture("torch.export", payload=bytes(range(256)) * 10)
    offer = ModelOffer(2, 1, 0, {"w": np.ones(3, np.float32)}, architecture=arch)

    # Execute
    frames = encode(_message(offer))
    decoded = decode(frames)

    # Assert
    assert isinstance(decoded.body, ModelOffer)
    assert decoded.body.architecture == arch
    assert HEADER_DECODER.decode(frames[0]).manifest[-1].name == ARCHITECTURE_FRAME_NAME


def test_raw_payload_round_trips_as_views() -> None:
    # Prepare
    payload = (b"hello", memoryview(b""), memoryview(bytearray(b"\x00\xff")))

    # Execute
    decoded = _assert_round_trip(_message(Raw(payload)))

    # Assert
    assert isinstance(decoded.body, Raw)
    assert [bytes(item) for item in decoded.body.payload] == [bytes(p) for p in payload]
    assert all(isinstance(item, memoryview) for item in decoded.body.payload)


def test_non_contiguous_and_big_endian_arrays_are_sent_as_little_endian_contiguous() -> None:
    # Prepare
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    arrays = {"t": np.arange(12, dtype=np.int32).reshape(3, 4).T, "be": base}

    # Execute
    decoded = decode(encode(_message(ModelUpdate(1, 1, "peer", arrays))))

    # Assert
    assert isinstance(decoded.body, ModelUpdate)
    assert decoded.body.arrays["be"].dtype.str == "<f4"
    assert np.array_equal(decoded.body.arrays["be"], base)
    assert np.array_equal(decoded.body.arrays["t"], arrays["t"])


def test_encode_is_zero_copy_and_decode_returns_read_only_views() -> None:
    # Prepare
    big = np.random.default_rng(1).standard_normal(1_000_000).astype(np.float32)
    message = _message(ModelUpdate(1, 1, "peer", {"big": big, "small": np.ones(3)}))

    # Execute
    frames = encode(message)
    received = [memoryview(bytes(frame)) for frame in frames]  # as a transport hands them over
    decoded = decode(received)

    # Assert
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.uint8), big)
    assert isinstance(decoded.body, ModelUpdate)
    out = decoded.body.arrays["big"]
    assert np.shares_memory(out, np.frombuffer(received[1], dtype=np.uint8))
    assert not out.flags.writeable


def test_compute_digest_accepts_mapping_or_sequence_and_sees_layout() -> None:
    # Prepare
    arrays = _arrays()

    # Execute
    by_mapping = compute_digest(arrays)
    by_sequence = compute_digest(list(arrays.values()))
    reshaped = compute_digest([a.reshape(-1) for a in arrays.values()])

    # Assert
    assert by_mapping == by_sequence
    assert len(by_mapping) == 32
    assert reshaped != by_mapping


# --------------------------------------------------------------------------- rejections


def _header(frames: Frames) -> Header:
    return HEADER_DECODER.decode(frames[0])


def _with_header(frames: Frames, **changes: Any) -> Frames:
    header = msgspec.structs.replace(_header(frames), **changes)
    return [HEADER_ENCODER.encode(header), *frames[1:]]


def _with_spec(frames: Frames, index: int, **changes: Any) -> Frames:
    manifest = list(_header(frames).manifest)
    manifest[index] = msgspec.structs.replace(manifest[index], **changes)
    return _with_header(frames, manifest=tuple(manifest))


def _update_frames(arrays: Mapping[str, np.ndarray] | None = None) -> Frames:
    body = ModelUpdate(1, 10, "peer", _arrays() if arrays is None else arrays)
    return list(encode(_message(body)))


def _nan_frames() -> Frames:
    return _update_frames({"w": np.array([1.0, np.nan], np.float32)})


Mutation = Callable[[], Frames]

REJECTIONS: list[tuple[str, Mutation, str]] = [
    ("no frames", lambda: [], "empty"),
    ("not a buffer", lambda: ["text"], "frame"),
    ("garbage header", lambda: [b"\xc1garbage"], "header"),
    ("header is a dict", lambda: [msgspec.msgpack.encode({"v": 1})], "header"),
    ("trailing bytes", lambda: [bytes(encode(_message(Bye()))[0]) + b"\x00"], "header"),
    ("unknown body tag", lambda: [msgspec.msgpack.encode([1, "a", "", 0, 0, [99], []])], "header"),
    (
        "future version",
        lambda: [msgspec.msgpack.encode([2, "a", "", 0, 0, [2, ""], []])],
        "version",
    ),
    ("future layout", lambda: [msgspec.msgpack.encode([2, {"new": "layout"}])], "version"),
    ("missing frame", lambda: _update_frames()[:-1], "frame_count"),
    ("extra frame", lambda: [*_update_frames(), b"x"], "frame_count"),
    (
        "manifest on Bye",
        lambda: [
            *_with_header(encode(_message(Bye())), manifest=(ArraySpec("x", "raw", (1,)),)),
            b"x",
        ],
        "manifest",
    ),
    ("raw frame in update", lambda: _with_spec(_update_frames(), 3, dtype="raw"), "manifest"),
    ("array in Raw", lambda: _with_header(_update_frames(), body=RawFields()), "manifest"),
    ("object dtype", lambda: _with_spec(_update_frames(), 0, dtype="|O"), "dtype"),
    ("big-endian dtype", lambda: _with_spec(_update_frames(), 0, dtype=">f4"), "dtype"),
    ("complex dtype", lambda: _with_spec(_update_frames(), 0, dtype="<c8"), "dtype"),
    ("negative dim", lambda: _with_spec(_update_frames(), 0, shape=(-4, 3, 3, 3)), "shape"),
    ("nine dims", lambda: _with_spec(_update_frames(), 4, shape=(0,) + (1,) * 8), "shape"),
    ("absurd empty", lambda: _with_spec(_update_frames(), 4, shape=(0, 2**62, 2**62)), "shape"),
    ("wrong length", lambda: _with_spec(_update_frames(), 0, shape=(4, 3, 3, 2)), "length"),
    (
        "truncated frame",
        lambda: [*_update_frames()[:1], _update_frames()[1][:-1], *_update_frames()[2:]],
        "length",
    ),
    ("raw length", lambda: _with_spec(encode(_message(Raw((b"ab",)))), 0, shape=(3,)), "length"),
    ("NaN", _nan_frames, "non_finite"),
    ("inf float16", lambda: _update_frames({"w": np.array([np.inf], np.float16)}), "non_finite"),
    ("-inf float64", lambda: _update_frames({"w": np.array([-np.inf, 1.0])}), "non_finite"),
    ("bool byte 2", lambda: [*_update_frames({"m": np.ones(2, bool)})[:1], b"\x01\x02"], "value"),
    ("duplicate name", lambda: _with_spec(_update_frames(), 1, name="conv.weight"), "name"),
    ("empty name", lambda: _with_spec(_update_frames(), 1, name=""), "name"),
    ("long name", lambda: _with_spec(_update_frames(), 1, name="n" * 257), "name"),
    ("long sender", lambda: _with_header(_update_frames(), sender="s" * 257), "field"),
    ("long namespace", lambda: _with_header(_update_frames(), namespace="s" * 257), "field"),
]


@pytest.mark.parametrize(
    ("mutation", "reason"), [(m, r) for _, m, r in REJECTIONS], ids=[i for i, _, _ in REJECTIONS]
)
def test_decode_rejects_with_a_stable_reason(mutation: Mutation, reason: str) -> None:
    # Prepare
    frames = mutation()

    # Execute
    with pytest.raises(WireError) as caught:
        decode(frames)

    # Assert
    assert caught.value.reason == reason


def _offer_frames(**changes: Any) -> Frames:
    arch = Architecture("factory", factory="mlp", kwargs={"depth": 2})
    offer = ModelOffer(1, 1, 1, {"w": np.ones(4, np.float32)}, architecture=arch)
    frames = list(encode(_message(offer)))
    body = msgspec.structs.replace(_header(frames).body, **changes)
    return _with_header(frames, body=body)


def _offer_kwargs(kwargs: dict[str, Any]) -> Frames:
    body = _header(_offer_frames()).body
    assert isinstance(body, ModelOfferFields) and body.architecture is not None
    return _offer_frames(architecture=msgspec.structs.replace(body.architecture, kwargs=kwargs))


def _offer_without_payload() -> Frames:
    frames = _offer_frames()
    return _with_header(frames, manifest=_header(frames).manifest[:-1])[:-1]


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (_offer_frames(digest=b"\x00" * 32), "digest"),
        (_offer_frames(digest=b"\x00" * 5), "digest"),
        (_offer_frames(samples=-1), "field"),
        (_offer_kwargs({"nested": {"a": 1}}), "field"),
        (_offer_kwargs({"deep": [[[[[[1]]]]]]}), "field"),
        (_offer_kwargs({"nan": float("nan")}), "field"),
        (_offer_kwargs({"blob": b"\x00"}), "field"),
        (_offer_without_payload(), "manifest"),
    ],
    ids=["digest", "digest-length", "samples", "dict", "depth", "nan", "bytes", "no-payload"],
)
def test_decode_rejects_bad_offers(frames: Frames, reason: str) -> None:
    # Prepare (frames built at collection)

    # Execute
    with pytest.raises(WireError) as caught:
        decode(frames)

    # Assert
    assert caught.value.reason == reason


def test_offer_without_architecture_frame_is_rejected() -> None:
    # Prepare: an offer claiming an architecture whose last frame is an array
    frames = _offer_frames()
    manifest = _header(frames).manifest
    spec = ArraySpec(ARCHITECTURE_FRAME_NAME, "<f4", (0,))
    bad = _with_header(frames, manifest=(*manifest[:-1], spec))
    bad[-1] = b""

    # Execute
    with pytest.raises(WireError) as caught:
        decode(bad)

    # Assert
    assert caught.value.reason == "manifest"


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(max_frames=3), "too_many_frames"),
        (Limits(max_frame_bytes=400), "frame_size"),
        (Limits(max_message_bytes=500), "too_large"),
        (Limits(max_header_bytes=64), "too_large"),
    ],
    ids=["frames", "frame-bytes", "message-bytes", "header-bytes"],
)
def test_decode_enforces_limits(limits: Limits, reason: str) -> None:
    # Prepare
    frames = _update_frames()

    # Execute
    with pytest.raises(WireError) as caught:
        decode(frames, limits)

    # Assert
    assert caught.value.reason == reason
    assert decode(frames).body is not None  # the defaults accept the same message


def test_check_finite_can_be_turned_off() -> None:
    # Prepare
    frames = _nan_frames()

    # Execute
    decoded = decode(frames, Limits(check_finite=False))

    # Assert
    assert isinstance(decoded.body, ModelUpdate)
    assert np.isnan(decoded.body.arrays["w"][1])


def test_limits_reject_non_positive_bounds() -> None:
    with pytest.raises(ConfigurationError):
        Limits(max_frames=0)
    with pytest.raises(ConfigurationError):
        Limits(max_header_bytes=True)


@pytest.mark.parametrize(
    "body",
    [
        ModelUpdate(1, 1, "peer", {"c": np.ones(2, np.complex64)}),
        ModelUpdate(1, 1, "peer", {"o": np.array([None], dtype=object)}),
        ModelUpdate(1, 1, "peer", {"u": np.ones(2, np.uint32)}),
    ],
    ids=["complex", "object", "uint32"],
)
def test_encode_refuses_dtypes_outside_the_allow_list(body: Body) -> None:
    with pytest.raises(WireError) as caught:
        encode(_message(body))
    assert caught.value.reason == "dtype"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_message(ModelUpdate(1, 1, "peer", {"": np.ones(1)})), "name"),
        (_message(ModelUpdate(1, -5, "peer", {})), "field"),
        (_message(ModelUpdate(1.5, 1, "peer", {})), "field"),  # type: ignore[arg-type]
        (Message(b"bytes", "", 0, 0, Bye()), "field"),  # type: ignore[arg-type]
        (_message(Bye("x" * 5000)), "field"),
        (_message(ModelOffer(1, 1, 1, {}, digest=b"short")), "digest"),
        (
            _message(ModelOffer(1, 1, 1, {}, architecture=Architecture("f", kwargs={"f": set()}))),
            "field",
        ),
        (_message(Raw(("not bytes",))), "field"),  # type: ignore[arg-type]
        (Message("a", "", 2**64, 0, Bye()), "field"),
    ],
    ids=["name", "samples", "float", "sender", "reason", "digest", "kwargs", "raw", "overflow"],
)
def test_encode_refuses_what_decode_would_reject(message: Message, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        encode(message)
    assert caught.value.reason == reason


# --------------------------------------------------------------------------------- specs


def test_decode_with_expected_specs_accepts_a_match_and_rejects_a_mismatch() -> None:
    # Prepare
    arrays = _arrays()
    frames = _update_frames(arrays)
    expected = specs_of(arrays)
    wrong_shape = {**expected, "conv.bias": ("<f2", (5,))}

    # Execute
    decoded = decode(frames, expected=expected)
    with pytest.raises(WireError) as caught:
        decode(frames, expected=wrong_shape)

    # Assert
    assert isinstance(decoded.body, ModelUpdate)
    assert caught.value.reason == "specs"


@pytest.mark.parametrize(
    "expected",
    [
        {"w": ("float32", (2,))},
        {"w": ("<f4", (2, 1))},
        {"w": ("<f8", (2,))},
        {"w": ("<f4", (2,)), "b": ("<f4", (1,))},
        {"v": ("<f4", (2,))},
        {"w": ("torch.float32", (2,))},
    ],
    ids=["ok-alias", "shape", "dtype", "missing", "renamed", "unknown-dtype"],
)
def test_check_specs(expected: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    # Prepare
    arrays = {"w": np.zeros(2, np.float32)}
    should_pass = expected == {"w": ("float32", (2,))}

    # Execute / Assert
    if should_pass:
        check_specs(arrays, expected)
    else:
        with pytest.raises(WireError) as caught:
            check_specs(arrays, expected)
        assert caught.value.reason == "specs"


def test_protocol_version_is_first_in_the_header() -> None:
    frames = encode(_message(Bye()))
    assert msgspec.msgpack.decode(frames[0])[0] == PROTOCOL_VERSION


@pytest.mark.parametrize(
    "body",
    [
        ModelUpdate(version=2**64 - 1, samples=1, mode="peer", arrays={}, round=1),
        ModelUpdate(version=1, samples=1, mode="peer", arrays={}, round=2**64 - 1),
        ModelUpdate(version=1, samples=2**63, mode="peer", arrays={}, round=1),
        ModelUpdate(version=1, samples=1, mode="peer", arrays={}, weight=float("nan")),
        ModelUpdate(version=1, samples=1, mode="peer", arrays={}, weight=-1.0),
        ModelUpdate(version=1, samples=1, mode="peer", arrays={}, weight=1e300),
        ModelOffer(request_id=1, version=2**64 - 1, samples=1, arrays={}),
        ModelOffer(request_id=1, version=1, samples=1, arrays={}, round=2**63),
        Hello(address="tcp://h:1", namespaces=(NamespaceInfo("X", "peer", 2**63),)),
        Hello(
            address="tcp://h:1", namespaces=tuple(NamespaceInfo(f"n{i}", "peer") for i in range(65))
        ),
    ],
)
def test_counters_beyond_2_62_bad_weights_and_too_many_namespaces_are_refused(
    body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's 2**64 - 1 must never be adopted: the next increment could not be encoded."""
    from scatterbrained.wire import schema

    message = Message("peer", "X", 1, 1, body)
    with pytest.raises(WireError, match="field"):  # this node never sends one
        encode(message)
    for fields in (schema.HelloFields, schema.ModelUpdateFields, schema.ModelOfferFields):
        monkeypatch.setattr(fields, "check", lambda self: None)  # a hostile peer's encoder
    frames = encode(message)
    monkeypatch.undo()

    with pytest.raises(WireError, match="field"):
        decode(frames)
