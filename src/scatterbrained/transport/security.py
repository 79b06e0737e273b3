"""CurveZMQ keys, key files, allow-lists and the ZAP handler that enforces them.

Keys are Z85 text (40 characters encoding 32 bytes), as ZeroMQ prints them.

Key files use ZeroMQ's certificate format (ZPL), the one written by ``zmq.auth`` and read by
:func:`zmq.auth.load_certificate`::

    #   ZeroMQ CURVE **Secret** Certificate
    metadata
    curve
        public-key = "<40 Z85 characters>"
        secret-key = "<40 Z85 characters>"

:meth:`KeyPair.save` writes the secret certificate (mode ``0600``) and, next to it, a public
certificate named like it plus ``.pub`` (``node.key`` -> ``node.key.pub``; no ``secret-key``
line) to hand out to peers. Any certificate file loads with :func:`load_public_key`, whatever
its name (older versions wrote ``node.pub``).

libzmq *fails open*: a CURVE server whose context has no ZAP handler accepts every client key.
:class:`ZapHandler` is that handler; :class:`KeyPolicy` is the mutable allow/deny list it
consults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.asyncio
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from ..errors import SecurityError

__all__ = [
    "MAX_REPORTED_KEYS",
    "ZAP_ENDPOINT",
    "KeyPair",
    "KeyPolicy",
    "KeyedEndpoint",
    "ZapHandler",
    "check_authentication_enforced",
    "load_public_key",
    "validate_key",
]

logger = logging.getLogger(__name__)

#: Where libzmq sends authentication requests (one per context).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"

_KEY_CHARS = 40
_KEY_BYTES = 32
_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
#: Distinct refused keys that get a WARNING each; later ones are logged at DEBUG only.
MAX_REPORTED_KEYS = 64
_ZPL_KEY_LINE = re.compile(r'^\s*(public-key|secret-key)\s*=\s*"([^"]*)"\s*$', re.MULTILINE)


def validate_key(key: str | bytes, *, what: str = "public key") -> str:
    """Return ``key`` as Z85 text after checking it is a well-formed CurveZMQ key.

    Args:
        key: the key as Z85 text (``str`` or ASCII ``bytes``).
        what: how to name the key in error messages. Secret keys are never echoed.

    Returns:
        The key as a 40-character ``str``.

    Raises:
        SecurityError: the key is not 40 Z85 characters decoding to 32 bytes.
    """
    secret = "secret" in what
    sized = isinstance(key, (str, bytes))
    shown = f"{len(key)} characters" if secret and sized else repr(key)[:60]
    try:
        text = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(text, str) or len(text) != _KEY_CHARS:
            raise ValueError("wrong length")
        decoded = z85.decode(text)
    except (ValueError, KeyError, struct.error, OverflowError, UnicodeDecodeError):
        raise SecurityError(
            f"invalid {what}: expected {_KEY_CHARS} Z85 characters encoding {_KEY_BYTES} bytes, "
            f"got {shown}; generate keys with KeyPair.generate() or load them with KeyPair.load()"
        ) from None
    if len(decoded) != _KEY_BYTES:  # pragma: no cover - 40 Z85 chars always give 32 bytes
        raise SecurityError(f"invalid {what}: decodes to {len(decoded)} bytes, expected 32")
    return text


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair (Z85 text). The secret key never appears in ``repr``.

    Attributes:
        public: the public key, safe to hand to peers.
        secret: the secret key; keep it private.

    Raises:
        SecurityError: a key is malformed or the public key does not belong to the secret key.
    """

    public: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        validate_key(self.public, what="public key")
        validate_key(self.secret, what="secret key")
        derived = zmq.curve_public(self.secret.encode("ascii")).decode("ascii")
        if derived != self.public:
            raise SecurityError(
                "public key does not match the secret key; load both from the same key file "
                "or use KeyPair.generate()"
            )

    @classmethod
    def generate(cls) -> KeyPair:
        """Return a fresh random key pair (``zmq.curve_keypair``)."""
        public, secret = zmq.curve_keypair()
        return cls(public=public.decode("ascii"), secret=secret.decode("ascii"))

    @staticmethod
    def public_path(path: str | os.PathLike[str]) -> Path:
        """Return where :meth:`save` puts the public certificate for secret file ``path``.

        ``.pub`` is appended to the whole name: ``node.key`` -> ``node.key.pub``.
        """
        secret = Path(path)
        return secret.with_name(secret.name + ".pub")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the secret certificate to ``path`` (mode 0600) and the public one beside it.

        Existing files are overwritten (the secret file's mode is reset to 0600).

        Args:
            path: the secret certificate's path; the public one is ``path`` plus ``.pub``
                (``node.key`` -> ``node.key.pub``, see :meth:`public_path`).

        Returns:
            The public certificate's path.

        Raises:
            SecurityError: ``path`` itself ends in ``.pub``: a secret key must not look like
                the public file that is handed to peers.
            OSError: the files cannot be written.
        """
        secret_path = Path(path)
        public_path = self.public_path(secret_path)
        if secret_path.suffix == ".pub":  # a secret that looks like a file to hand out
            raise SecurityError(
                f"secret key path {secret_path} ends in '.pub', the suffix of the public "
                "certificate; choose another name, e.g. 'node.key'"
            )
        secret_text = _certificate_text(self.public, self.secret)
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secret_text)
        public_path.write_text(_certificate_text(self.public, None), encoding="ascii")
        return public_path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyPair:
        """Read a secret certificate written by :meth:`save` (or by ``zmq.auth``).

        Logs a warning when the file is readable by group or others.

        Raises:
            SecurityError: the file has no valid ``public-key``/``secret-key`` pair.
            OSError: the file cannot be read.
        """
        secret_path = Path(path)
        mode = secret_path.stat().st_mode
        if mode & 0o077:
            logger.warning("secret key file %s is readable by others (mode %o)", path, mode & 0o777)
        keys = _parse_certificate(secret_path.read_text(encoding="ascii", errors="replace"))
        if "secret-key" not in keys or "public-key" not in keys:
            raise SecurityError(
                f"{path} holds no secret key: expected a certificate with 'public-key' and "
                "'secret-key' lines (written by KeyPair.save); a '.pub' file holds only the "
                "public key"
            )
        return cls(public=keys["public-key"], secret=keys["secret-key"])


def load_public_key(source: str | os.PathLike[str]) -> str:
    """Return a public key given as Z85 text or as the path of a certificate file.

    Args:
        source: 40 Z85 characters, or a path to a public (or secret) certificate.

    Raises:
        SecurityError: ``source`` is neither a valid key nor a readable certificate with one.
    """
    if isinstance(source, str) and len(source) == _KEY_CHARS and not os.path.exists(source):
        return validate_key(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise SecurityError(
            f"expected a public key (40 Z85 characters) or a certificate file, got "
            f"{str(source)[:60]!r} which is neither ({exc.strerror}){_legacy_hint(path)}"
        ) from None
    keys = _parse_certificate(text)
    if "public-key" not in keys:
        raise SecurityError(f"{path} has no 'public-key = \"...\"' line; is it a key file?")
    return validate_key(keys["public-key"])


def _legacy_hint(path: Path) -> str:
    """Point at ``node.pub`` (the name older versions wrote) when ``node.key.pub`` is missing."""
    if path.suffix != ".pub" or not Path(path.stem).suffix:
        return ""
    legacy = path.with_name(Path(path.stem).stem + ".pub")
    if not legacy.is_file():
        return ""
    return f"; {legacy} exists (the name older versions gave the public file): pass that path"


def _certificate_text(public: str, secret: str | None) -> str:
    kind = "Secret" if secret is not None else "Public"
    lines = [
        f"#   ZeroMQ CURVE **{kind}** Certificate (written by scatterbrained)",
        "#   DO NOT share this file." if secret is not None else "#   Hand this file to peers.",
        "",
        "metadata",
        "curve",
        f'    public-key = "{public}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret}"')
    return "\n".join(lines) + "\n"


def _parse_certificate(text: str) -> dict[str, str]:
    return {match.group(1): match.group(2) for match in _ZPL_KEY_LINE.finditer(text)}


class KeyPolicy:
    """Which client keys may connect: an optional allow-list plus a deny-list.

    A key is accepted when it is not denied and either there is no allow-list
    (``allowed=None``: any authenticated key) or it is on the allow-list.

    Args:
        allowed: the allowed public keys, or ``None`` to accept every key not denied.

    Raises:
        SecurityError: a key is malformed.
    """

    def __init__(self, allowed: set[str] | None = None) -> None:
        self._allowed = None if allowed is None else {validate_key(k) for k in allowed}
        self._denied: set[str] = set()
        self._reported: set[str] = set()
        self._reports_capped = False

    @property
    def allowed(self) -> frozenset[str] | None:
        """The allow-list, or ``None`` when every key not denied is accepted."""
        return None if self._allowed is None else frozenset(self._allowed)

    def accepts(self, key: str) -> bool:
        """True when ``key`` may connect."""
        if key in self._denied:
            return False
        return self._allowed is None or key in self._allowed

    def allow(self, key: str) -> None:
        """Accept ``key`` from now on (adds it to the allow-list, lifts a denial).

        Raises:
            SecurityError: the key is malformed.
        """
        key = validate_key(key)
        self._denied.discard(key)
        self._reported.discard(key)
        if self._allowed is not None:
            self._allowed.add(key)

    def deny(self, key: str) -> None:
        """Refuse ``key`` from now on, whatever the allow-list says.

        Raises:
            SecurityError: the key is malformed.
        """
        key = validate_key(key)
        self._denied.add(key)
        if self._allowed is not None:
            self._allowed.discard(key)

    def forget(self, key: str) -> None:
        """Remove ``key`` from both lists (it falls back to the default rule)."""
        self._denied.discard(key)
        if self._allowed is not None:
            self._allowed.discard(key)

    def report_refused(self, key: str, origin: str = "") -> bool:
        """Log that ``key`` was refused; a WARNING the first time for a key not on the allow-list.

        The warning names the key and how to allow it (``--allow KEY`` on the command line,
        ``allowed_keys=[...]`` in the API). Each key is warned about once; at most
        :data:`MAX_REPORTED_KEYS` distinct keys are remembered, later ones are logged at
        DEBUG level only. Keys on the deny-list (refused on purpose) are logged at DEBUG.

        Args:
            key: the refused public key (Z85).
            origin: where the connection came from (e.g. an IP address), for the log.

        Returns:
            True when a warning was logged.
        """
        where = f" from {origin}" if origin else ""
        if key in self._denied or key in self._reported or self.accepts(key):
            logger.debug("refused key %s%s (denied, or already reported)", key, where)
            return False
        if len(self._reported) >= MAX_REPORTED_KEYS:
            if not self._reports_capped:
                self._reports_capped = True
                logger.warning(
                    "refused more than %d distinct CURVE keys; further refused keys are "
                    "logged at DEBUG level only (run with -vv to see them)",
                    MAX_REPORTED_KEYS,
                )
            logger.debug("refused key %s%s: not on the allow-list", key, where)
            return False
        self._reported.add(key)
        logger.warning(
            "refused a CURVE connection%s with public key %s: it is not on this node's "
            "allow-list; if it is a peer of yours, allow it with --allow '%s' "
            "(scatterbrained node) or allowed_keys=[..., %r] (sb.Node)",
            where,
            key,
            key,
            key,
        )
        return True


class ZapHandler:
    """A ZAP (ZeroMQ authentication protocol) handler serving one context.

    It must be started before any CURVE server socket of the context is bound. It accepts
    only the CURVE mechanism and only keys that ``policy`` accepts; the ZAP *User-Id* of an
    accepted connection is the client's Z85 public key, which the receiver reads back from
    every message (``frame.get("User-Id")``).

    Args:
        context: the node's own context (ZAP endpoints are per context).
        policy: the allow/deny lists to consult (read at every handshake, so changes apply
            to new connections).
    """

    def __init__(self, context: zmq.asyncio.Context, policy: KeyPolicy) -> None:
        self._context = context
        self._policy = policy
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind the ZAP endpoint and start answering requests (needs a running loop).

        Raises:
            SecurityError: another handler is already bound in this context.
        """
        sock = self._context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise SecurityError(f"cannot start the ZAP handler at {ZAP_ENDPOINT}: {exc}") from exc
        self._socket = sock
        self._task = asyncio.get_running_loop().create_task(self._serve(sock), name="zap-handler")

    async def stop(self) -> None:
        """Stop answering and close the endpoint. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close(linger=0)

    async def _serve(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            request = await sock.recv_multipart()
            await sock.send_multipart(self._reply(request))

    def _reply(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _routing_id, mechanism = request[:6]
        credentials = request[6:]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != _KEY_BYTES:
            logger.debug("ZAP: refused mechanism %r from %r", mechanism, address)
            return [version, request_id, b"400", b"CURVE required", b"", b""]
        key = z85.encode(credentials[0]).decode("ascii")
        if not self._policy.accepts(key):
            self._policy.report_refused(key, address.decode("ascii", errors="replace")[:64])
            return [version, request_id, b"400", b"key not allowed", b"", b""]
        return [version, request_id, b"200", b"OK", key.encode("ascii"), b""]


async def check_authentication_enforced(
    context: zmq.asyncio.Context,
    endpoint: str,
    server_key: str,
    policy: KeyPolicy,
    timeout: float = 2.0,
) -> None:
    """Dial a CURVE server with a fresh, denied key and require the handshake to be refused.

    libzmq accepts every client key when no ZAP handler answers, so this is the proof that
    authentication is on. The probe sends no message, so nothing can reach the server's
    receivers. The probe key is denied in ``policy`` for the check only.

    Args:
        context: the server's context (its ZAP handler is the one under test).
        endpoint: where to dial the server, e.g. ``tcp://127.0.0.1:5555``.
        server_key: the server's public key (Z85).
        policy: the server's key policy.
        timeout: seconds to wait for the refusal.

    Raises:
        SecurityError: the unknown key was not refused within ``timeout``.
    """
    canary = KeyPair.generate()
    policy.deny(canary.public)
    probe = context.socket(zmq.DEALER)
    probe.setsockopt(zmq.LINGER, 0)
    probe.setsockopt(zmq.CURVE_SECRETKEY, canary.secret.encode("ascii"))
    probe.setsockopt(zmq.CURVE_PUBLICKEY, canary.public.encode("ascii"))
    probe.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
    monitor = probe.get_monitor_socket(_HANDSHAKE_EVENTS)
    event: int | None = None
    try:
        probe.connect(endpoint)
        message = parse_monitor_message(await asyncio.wait_for(monitor.recv_multipart(), timeout))
        event = int(message["event"])
    except asyncio.TimeoutError:
        pass
    finally:
        probe.disable_monitor()
        monitor.close(linger=0)
        probe.close(linger=0)
        policy.forget(canary.public)
    if event != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        outcome = "no handshake result" if event is None else zmq.Event(event).name
        raise SecurityError(
            f"authentication is not enforced: a client with an unknown CURVE key was not "
            f"refused within {timeout} s ({outcome}); no ZAP handler answers for this "
            "context, so refusing to start"
        )


class KeyedEndpoint:
    """Key accessors shared by the ZeroMQ transport and its in-memory twin.

    Subclasses set ``self._keys`` (this endpoint's key pair or ``None``) and
    ``self._policy`` (the allow-list of peer keys).
    """

    _keys: KeyPair | None
    _policy: KeyPolicy

    @property
    def public_key(self) -> str | None:
        """This endpoint's public key (Z85), or ``None`` without keys."""
        return None if self._keys is None else self._keys.public

    @property
    def allowed_keys(self) -> frozenset[str] | None:
        """The allow-list of peer keys, or ``None`` when any authenticated key is accepted."""
        return self._policy.allowed

    def allow_key(self, key: str) -> None:
        """Accept ``key`` from now on (takes effect at once for received messages).

        Raises:
            SecurityError: keys are not configured, or the key is malformed.
        """
        self._require_keys()
        self._policy.allow(key)

    def deny_key(self, key: str) -> None:
        """Refuse ``key``: new connections fail and its messages on open ones are dropped.

        Raises:
            SecurityError: keys are not configured, or the key is malformed.
        """
        self._require_keys()
        self._policy.deny(key)

    def _require_keys(self) -> None:
        if self._keys is None:
            raise SecurityError("this transport has no keys; pass keys=KeyPair.generate()")
