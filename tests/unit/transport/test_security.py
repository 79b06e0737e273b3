"""Tests of CurveZMQ key handling: KeyPair, key files, validation, KeyPolicy, ZAP replies."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils import z85

from scatterbrained.errors import SecurityError
from scatterbrained.transport.security import (
    MAX_REPORTED_KEYS,
    KeyPair,
    KeyPolicy,
    ZapHandler,
    load_public_key,
    validate_key,
)

pytestmark = pytest.mark.timeout(10)


def test_generate_gives_valid_distinct_pairs_and_hides_secret() -> None:
    first, second = KeyPair.generate(), KeyPair.generate()

    assert validate_key(first.public) == first.public
    assert first.public != second.public
    assert zmq.curve_public(first.secret.encode()).decode() == first.public
    assert first.secret not in repr(first)


def test_save_load_round_trip_and_secret_file_mode(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    secret_path = tmp_path / "node.key"
    secret_path.write_text("old content")
    secret_path.chmod(0o644)

    public_path = keys.save(secret_path)
    loaded = KeyPair.load(secret_path)

    assert loaded == keys
    assert public_path == tmp_path / "node.key.pub"  # the README's name: .pub appended
    assert public_path.is_file() and not (tmp_path / "node.pub").exists()
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert keys.secret not in public_path.read_text()
    assert load_public_key(public_path) == keys.public
    assert load_public_key(secret_path) == keys.public


def test_files_are_readable_by_zmq_auth(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    public_path = keys.save(tmp_path / "node.key")

    public, secret = zmq.auth.load_certificate(str(tmp_path / "node.key"))
    public_only, no_secret = zmq.auth.load_certificate(str(public_path))

    assert (public.decode(), secret.decode() if secret else None) == (keys.public, keys.secret)
    assert (public_only.decode(), no_secret) == (keys.public, None)


def test_load_of_public_file_says_it_has_no_secret(tmp_path: Path) -> None:
    public_path = KeyPair.generate().save(tmp_path / "node.key")

    with pytest.raises(SecurityError, match="no secret key"):
        KeyPair.load(public_path)


def test_save_refuses_a_pub_secret_path(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match=r"\.pub"):
        KeyPair.generate().save(tmp_path / "node.pub")


@pytest.mark.parametrize(
    "bad",
    ["", "short", "x" * 41, "~" * 40, "%" * 40, None, 12345],
)
def test_bad_key_text_raises_security_error(bad: object) -> None:
    with pytest.raises(SecurityError, match="40 Z85 characters"):
        validate_key(bad)  # type: ignore[arg-type]


def test_bad_secret_key_is_not_echoed() -> None:
    public = KeyPair.generate().public
    leaked = "S" * 39

    with pytest.raises(SecurityError) as caught:
        KeyPair(public=public, secret=leaked)

    assert leaked not in str(caught.value)
    assert "39 characters" in str(caught.value)


def test_mismatched_pair_is_refused() -> None:
    first, second = KeyPair.generate(), KeyPair.generate()

    with pytest.raises(SecurityError, match="does not match"):
        KeyPair(public=first.public, secret=second.secret)


def test_load_public_key_from_text_and_bad_sources(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    junk = tmp_path / "junk.txt"
    junk.write_text("nothing here")

    assert load_public_key(keys.public) == keys.public
    with pytest.raises(SecurityError, match="no 'public-key"):
        load_public_key(junk)
    with pytest.raises(SecurityError, match="neither"):
        load_public_key(tmp_path / "missing.pub")


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32))
def test_every_32_byte_key_in_z85_validates(raw: bytes) -> None:
    text = z85.encode(raw).decode("ascii")

    assert validate_key(text) == text
    assert validate_key(text.encode("ascii")) == text


def test_key_policy_allow_list_and_deny_list() -> None:
    good, other, bad = (KeyPair.generate().public for _ in range(3))
    listed = KeyPolicy({good})
    open_policy = KeyPolicy(None)

    open_policy.deny(bad)
    listed.allow(other)
    listed.deny(good)

    assert open_policy.accepts(good) and not open_policy.accepts(bad)
    assert listed.accepts(other) and not listed.accepts(good) and not listed.accepts(bad)
    assert listed.allowed == frozenset({other})
    open_policy.forget(bad)
    assert open_policy.accepts(bad)


def test_key_policy_rejects_malformed_keys() -> None:
    with pytest.raises(SecurityError):
        KeyPolicy({"not a key"})


def _zap_request(mechanism: bytes, credentials: list[bytes]) -> list[bytes]:
    return [b"1.0", b"42", b"domain", b"127.0.0.1", b"", mechanism, *credentials]


def test_zap_replies_accept_only_allowed_curve_keys() -> None:
    good, bad = KeyPair.generate(), KeyPair.generate()
    context = zmq.asyncio.Context()
    try:
        handler = ZapHandler(context, KeyPolicy({good.public}))

        accepted = handler._reply(_zap_request(b"CURVE", [z85.decode(good.public)]))
        refused = handler._reply(_zap_request(b"CURVE", [z85.decode(bad.public)]))
        null = handler._reply(_zap_request(b"NULL", []))
        short = handler._reply([b"1.0", b"7"])
    finally:
        context.term()

    assert accepted[:3] == [b"1.0", b"42", b"200"] and accepted[4] == good.public.encode()
    assert refused[2] == b"400" and refused[4] == b""
    assert null[2] == b"400"
    assert short[1:3] == [b"7", b"400"]


@pytest.mark.parametrize(
    ("secret", "public"),
    [("node.key", "node.key.pub"), ("node", "node.pub"), ("a.b.key", "a.b.key.pub")],
)
def test_public_path_appends_pub_to_the_whole_name(secret: str, public: str) -> None:
    assert KeyPair.public_path(Path("keys") / secret) == Path("keys") / public


def test_public_files_of_older_versions_still_load(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    keys.save(tmp_path / "node.key")
    legacy = tmp_path / "old.pub"  # what older versions wrote for old.key
    legacy.write_text((tmp_path / "node.key.pub").read_text())

    assert load_public_key(legacy) == keys.public
    with pytest.raises(SecurityError, match=r"old\.pub exists .* pass that path"):
        load_public_key(tmp_path / "old.key.pub")


def _refuse(handler: ZapHandler, key: str) -> list[bytes]:
    return handler._reply(_zap_request(b"CURVE", [z85.decode(key)]))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_refused_key_is_named_once_with_how_to_allow_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger, denied = KeyPair.generate().public, KeyPair.generate().public
    policy = KeyPolicy(set())
    policy.deny(denied)
    context = zmq.asyncio.Context()
    caplog.set_level(logging.DEBUG, logger="scatterbrained.transport.security")
    try:
        handler = ZapHandler(context, policy)
        replies = [_refuse(handler, stranger) for _ in range(3)] + [_refuse(handler, denied)]
    finally:
        context.term()

    assert all(reply[2] == b"400" for reply in replies)
    warnings = _warnings(caplog)
    assert len(warnings) == 1  # three refusals of one key, one warning; the denied key: none
    assert stranger in warnings[0] and "from 127.0.0.1" in warnings[0]
    assert f"--allow '{stranger}'" in warnings[0]  # quoted: Z85 has shell characters
    assert f"allowed_keys=[..., {stranger!r}]" in warnings[0]
    assert denied not in warnings[0]


def test_refusal_warnings_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    policy = KeyPolicy(set())
    strangers = [KeyPair.generate().public for _ in range(MAX_REPORTED_KEYS + 5)]
    caplog.set_level(logging.WARNING, logger="scatterbrained.transport.security")

    warned = [policy.report_refused(key) for key in strangers + strangers]

    assert sum(warned) == MAX_REPORTED_KEYS
    warnings = _warnings(caplog)
    assert len(warnings) == MAX_REPORTED_KEYS + 1  # one per key, then one "no more" line
    assert "further refused keys are logged at DEBUG level" in warnings[-1]


def test_an_allowed_key_is_not_reported_and_is_reported_again_after_removal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = KeyPair.generate().public
    policy = KeyPolicy(set())
    caplog.set_level(logging.WARNING, logger="scatterbrained.transport.security")

    first = policy.report_refused(key)
    policy.allow(key)
    while_allowed = policy.report_refused(key)
    policy.forget(key)
    again = policy.report_refused(key)

    assert (first, while_allowed, again) == (True, False, True)
