"""Typed errors of scatterbrained.

Every error the library raises derives from :class:`ScatterbrainedError`, so callers can catch
one base class. Messages say what was expected, what came, and what to do.

Malformed or hostile network input never raises into user code: it is dropped and counted in
``node.stats`` (see :class:`WireError`, which is raised only inside the decoder).
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatasetNotFoundError",
    "DiscoveryError",
    "ModeError",
    "ModelSyncError",
    "PeerTimeoutError",
    "ScatterbrainedError",
    "SecurityError",
    "TransportError",
    "WireError",
]


class ScatterbrainedError(Exception):
    """Base class of every error raised by scatterbrained."""


class ConfigurationError(ScatterbrainedError, ValueError):
    """An argument, option or config file value is invalid (raised before anything starts)."""


class TransportError(ScatterbrainedError):
    """A socket could not be bound, connected or used (for example the port is taken)."""


class DiscoveryError(ScatterbrainedError):
    """The discovery service could not start (for example no usable interface for the scope)."""


class SecurityError(ScatterbrainedError):
    """Keys are missing or invalid, or the start-up self-check found authentication not enforced."""


class WireError(ScatterbrainedError):
    """A received message failed validation.

    Attributes:
        reason: short machine-readable reason used as the key in ``node.stats.dropped``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModeError(ScatterbrainedError):
    """The namespace's operating mode forbids the operation (e.g. ``send_to`` while LEECHING)."""


class PeerTimeoutError(ScatterbrainedError, TimeoutError):
    """Waiting for peers, a message or a model took longer than the given timeout."""


class ModelSyncError(ScatterbrainedError):
    """``sync_model`` could not get a usable model from a peer.

    Attributes:
        final: True when asking the same peer again cannot help (it said so, or what it
            sent can never fit); False for a passing failure (timeout, a peer that left).
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class CheckpointError(ConfigurationError):
    """A checkpoint file cannot be read or does not fit the model (nothing was restored).

    Attributes:
        path: the file.
    """

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(
            f"checkpoint {path}: {problem}; nothing was restored (delete or replace the file, "
            "or pass on_bad_checkpoint='fresh' to start without it)"
        )
        self.path = path


class DatasetNotFoundError(ScatterbrainedError, FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to install them."""
