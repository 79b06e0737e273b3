"""Beacon codec: round trip, strict bounds, hostile bytes are WireError and nothing else."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.discovery import (
    MAGIC,
    MAX_DATAGRAM_BYTES,
    Beacon,
    NamespaceAd,
    decode_beacon,
    encode_beacon,
)
from scatterbrained.errors import ConfigurationError, WireError
from scatterbrained.types import OperatingMode

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # 40 Z85 characters

names = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
ads = st.lists(
    st.builds(
        NamespaceAd,
        name=names,
        mode=st.sampled_from([m.value for m in OperatingMode]),
        version=st.integers(0, 2**63 - 1),
    ),
    max_size=5,
    unique_by=lambda ad: ad.name,
).map(tuple)
beacons = st.builds(
    Beacon,
    node_id=names,
    host=st.sampled_from(["", "127.0.0.1", "10.0.0.7", "host-a.example", "::1"]),
    port=st.integers(1, 65535),
    namespaces=ads,
    public_key=st.sampled_from([None, KEY]),
    session=st.integers(0, 2**63 - 1),
)


def body(*fields: object) -> bytes:
    return MAGIC + msgspec.msgpack.encode(list(fields))


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(beacons)
def test_valid_beacons_round_trip_within_one_datagram(beacon: Beacon) -> None:
    # Execute
    datagram = encode_beacon(beacon)
    decoded = decode_beacon(datagram)
    # Assert
    assert decoded == beacon
    assert datagram.startswith(MAGIC)
    assert len(datagram) <= MAX_DATAGRAM_BYTES


def test_enum_modes_encode_as_their_value() -> None:
    # Prepare
    beacon = Beacon("a", "", 5000, (NamespaceAd("ns", OperatingMode.SEEDING, 2),))
    # Execute
    decoded = decode_beacon(encode_beacon(beacon))
    # Assert
    assert decoded.namespaces[0].mode == "seeding"
    assert type(decoded.namespaces[0].mode) is str


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    # Execute / Assert: either a valid beacon or a WireError, nothing else
    try:
        decode_beacon(data)
    except WireError as exc:
        assert exc.reason in {"too_large", "bad_magic", "malformed"}


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_magic_raise_only_wire_error(data: bytes) -> None:
    # Execute / Assert
    try:
        beacon = decode_beacon(MAGIC + data)
    except WireError as exc:
        assert exc.reason in {"malformed", "bad_mode", "duplicate_namespace"}
    else:
        assert isinstance(beacon, Beacon)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "bad_magic"),
        (b"SBD2" + b"\x90", "bad_magic"),
        (MAGIC, "malformed"),
        (MAGIC + b"\xc1", "malformed"),
        (MAGIC + b"\x96\xa3\x00\x00\x80", "malformed"),  # invalid UTF-8 (found by hypothesis)
        (MAGIC + b"x" * MAX_DATAGRAM_BYTES, "too_large"),
        (body("a", "", 5000, [], None), "malformed"),  # a field missing
        (body("a", "", 5000, [], None, 1, "extra"), "malformed"),
        (body("", "", 5000, [], None, 1), "malformed"),  # empty node id
        (body("a\x00b", "", 5000, [], None, 1), "malformed"),  # control character
        (body("a\n", "", 5000, [], None, 1), "malformed"),  # trailing newline
        (body("a" * 129, "", 5000, [], None, 1), "malformed"),
        (body("a", "10.0.0.1\n", 5000, [], None, 1), "malformed"),
        (body("a", "", 5000, [], KEY + "\n", 1), "malformed"),
        (body("a", "tcp://x", 5000, [], None, 1), "malformed"),  # not a host
        (body("a", "", 0, [], None, 1), "malformed"),
        (body("a", "", 70000, [], None, 1), "malformed"),
        (body("a", "", "5000", [], None, 1), "malformed"),
        (body("a", "", 5000, [], "short-key", 1), "malformed"),
        (body("a", "", 5000, [], None, -1), "malformed"),
        (body("a", "", 5000, [["n", "peer", -1]], None, 1), "malformed"),
        (body("a", "", 5000, [["n", "peer", 0]] * 40, None, 1), "malformed"),
        (body("a", "", 5000, [["n", "boss", 0]], None, 1), "bad_mode"),
        (
            body("a", "", 5000, [["n", "peer", 0], ["n", "seeding", 1]], None, 1),
            "duplicate_namespace",
        ),
    ],
)
def test_invalid_datagrams_are_rejected_with_a_reason(datagram: bytes, reason: str) -> None:
    # Execute
    with pytest.raises(WireError) as caught:
        decode_beacon(datagram)
    # Assert
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "beacon",
    [
        Beacon("", "", 5000),
        Beacon("a\nb", "", 5000),
        Beacon("a", "", 0),
        Beacon("a", "not a host!", 5000),
        Beacon("a", "", 5000, public_key="too-short"),
        Beacon("a", "", 5000, (NamespaceAd("n", "boss"),)),
        Beacon("a", "", 5000, (NamespaceAd("n", "peer"), NamespaceAd("n", "peer"))),
        Beacon("a", "", 5000, (NamespaceAd("n", "peer", -3),)),
        Beacon("a", "", 5000, tuple(NamespaceAd(f"{i:0>100}", "peer") for i in range(20))),
    ],
)
def test_encoding_a_beacon_peers_would_drop_is_a_configuration_error(beacon: Beacon) -> None:
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        encode_beacon(beacon)
