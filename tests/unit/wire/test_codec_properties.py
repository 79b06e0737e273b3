"""Property tests of the wire codec: random messages round trip exactly, and mutated
encodings either decode to a valid Message or raise WireError, never anything else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scatterbrained.errors import WireError
from scatterbrained.wire import (
    ALLOWED_DTYPES,
    ARCHITECTURE_FRAME_NAME,
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
    compute_digest,
    decode,
    encode,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLOAT_WIDTHS: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}
names = st.text(min_size=1, max_size=24).filter(lambda n: n != ARCHITECTURE_FRAME_NAME)
texts = st.text(max_size=40)
int64 = st.integers(-(2**63), 2**63 - 1)
counts = st.integers(0, 2**62 - 1)  # counters above 2**62 are refused (see below)
rounds = st.integers(-1, 2**62 - 1)


@st.composite
def wire_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(sorted(ALLOWED_DTYPES))))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    elements = None
    if dtype.kind == "f":
        width = FLOAT_WIDTHS[dtype.itemsize]
        elements = st.floats(allow_nan=False, allow_infinity=False, width=width)
    return draw(hnp.arrays(dtype, shape, elements=elements))


array_dicts = st.dictionaries(names, wire_arrays(), max_size=5)
json_scalars = st.none() | st.booleans() | int64 | st.floats(allow_nan=False, allow_infinity=False)
json_values = json_scalars | texts | st.lists(json_scalars | texts, max_size=4)


@st.composite
def offers(draw: st.DrawFn) -> ModelOffer:
    arrays = draw(array_dicts)
    digest = compute_digest(arrays) if draw(st.booleans()) else b""
    architecture = draw(
        st.none()
        | st.builds(
            Architecture,
            format=texts,
            payload=st.binary(max_size=64),
            factory=st.none() | texts,
            kwargs=st.dictionaries(texts, json_values, max_size=4),
        )
    )
    return ModelOffer(
        draw(int64),
        draw(counts),
        draw(counts),
        arrays,
        digest=digest,
        architecture=architecture,
        round=draw(rounds),
    )


bodies: st.SearchStrategy[Body] = st.one_of(
    st.builds(
        Hello,
        address=texts,
        namespaces=st.lists(
            st.builds(NamespaceInfo, texts, texts, counts, st.booleans()), max_size=3
        ).map(tuple),
        public_key=st.none() | texts,
        want_reply=st.booleans(),
    ),
    st.builds(Bye, reason=texts),
    st.builds(Raw, payload=st.lists(st.binary(max_size=32), max_size=4).map(tuple)),
    st.builds(
        ModelUpdate,
        version=counts,
        samples=counts,
        mode=texts,
        arrays=array_dicts,
        round=rounds,
    ),
    st.builds(ModelRequest, request_id=int64, include_architecture=st.booleans()),
    offers(),
    st.builds(ModelUnavailable, request_id=int64, reason=texts, final=st.booleans()),
)
messages = st.builds(Message, sender=texts, namespace=texts, session=int64, seq=int64, body=bodies)


def _arrays_equal(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> bool:
    return list(got) == list(want) and all(
        got[k].dtype == a.dtype and got[k].shape == a.shape and np.array_equal(got[k], a)
        for k, a in want.items()
    )


def _comparable(body: Body) -> Any:
    """The body with arrays and buffers replaced by comparable values."""
    if isinstance(body, Raw):
        return ("raw", [bytes(item) for item in body.payload])
    if isinstance(body, ModelUpdate):
        return (body.version, body.samples, body.mode, body.round)
    if isinstance(body, ModelOffer):
        arch = body.architecture
        arch_key = None if arch is None else (arch.format, arch.payload, arch.factory)
        kwargs = None if arch is None else {k: _listify(v) for k, v in arch.kwargs.items()}
        return (body.request_id, body.version, body.samples, body.digest, arch_key, kwargs)
    return body


def _listify(value: object) -> object:
    return [_listify(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.timeout(60)
@SETTINGS
@given(messages)
def test_random_messages_round_trip_exactly(message: Message) -> None:
    # Execute
    decoded = decode(encode(message))

    # Assert
    routing = (message.sender, message.namespace, message.session, message.seq)
    assert (decoded.sender, decoded.namespace, decoded.session, decoded.seq) == routing
    assert type(decoded.body) is type(message.body)
    assert _comparable(decoded.body) == _comparable(message.body)
    if isinstance(message.body, (ModelUpdate, ModelOffer)):
        assert isinstance(decoded.body, (ModelUpdate, ModelOffer))
        assert _arrays_equal(decoded.body.arrays, message.body.arrays)


def _flip(frame: bytes, position: int, xor: int) -> bytes:
    if not frame:
        return frame
    data = bytearray(frame)
    data[position % len(data)] ^= xor
    return bytes(data)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> list[bytes]:
    frames = [bytes(frame) for frame in encode(draw(messages))]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "drop", "add", "flip", "set", "swap", "grow"]))
        index = draw(st.integers(0, max(len(frames) - 1, 0)))
        position = draw(st.integers(0, 2**16))
        if not frames:
            frames = [draw(st.binary(max_size=16))]
        elif kind == "truncate":
            frames[index] = frames[index][: position % (len(frames[index]) + 1)]
        elif kind == "drop":
            del frames[index]
        elif kind == "add":
            frames.insert(index, draw(st.binary(max_size=64)))
        elif kind == "flip":
            frames[index] = _flip(frames[index], position, draw(st.integers(1, 255)))
        elif kind == "set":
            frames[0] = _flip(frames[0], position, draw(st.integers(1, 255)))
        elif kind == "swap":
            frames.reverse()
        else:
            frames[index] = frames[index] + draw(st.binary(min_size=1, max_size=16))
    return frames


@pytest.mark.timeout(60)
@SETTINGS
@given(mutated_encodings())
def test_mutated_encodings_decode_or_raise_wire_error_only(frames: list[bytes]) -> None:
    # Execute
    try:
        decoded = decode(frames)
    except WireError as error:
        # Assert: a rejection carries a short machine-readable reason
        assert error.reason.isidentifier()
        assert error.reason != "malformed", error  # an unforeseen exception slipped through
        return

    # Assert: an accepted mutation is a well-formed message that encodes again
    assert isinstance(decoded, Message)
    assert decode(encode(decoded)).body.__class__ is decoded.body.__class__
