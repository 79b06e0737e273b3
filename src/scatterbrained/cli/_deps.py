"""Optional dependencies of the command line: one clear error when PyTorch or aiohttp is
missing."""

from __future__ import annotations

from ..errors import ConfigurationError

__all__ = [
    "DASHBOARD_INSTALL",
    "TORCH_INSTALL",
    "is_missing_torch",
    "missing_torch",
    "require_aiohttp",
    "require_torch",
]

#: How to install the optional PyTorch dependency.
TORCH_INSTALL = "pip install 'scatterbrained[torch]'"


def is_missing_torch(exc: ImportError) -> bool:
    """True when ``exc`` says that ``torch`` (or one of its submodules) cannot be imported."""
    name = exc.name or ""
    return name == "torch" or name.startswith("torch.") or "'torch'" in str(exc)


def missing_torch(what: str, exc: ImportError) -> ConfigurationError:
    """Return the error that says ``what`` needs PyTorch and how to install it."""
    return ConfigurationError(
        f"{what} needs PyTorch, which cannot be imported ({exc}); install it with {TORCH_INSTALL}"
    )


def require_torch(what: str) -> None:
    """Import torch, or fail with one line saying how to install it.

    Args:
        what: what needs torch, for the message (e.g. "the simulator's models").

    Raises:
        ConfigurationError: torch cannot be imported.
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise missing_torch(what, exc) from None


#: How to install the optional dashboard dependency (aiohttp).
DASHBOARD_INSTALL = "pip install 'scatterbrained[dashboard]'"


def require_aiohttp(what: str) -> None:
    """Import aiohttp, or fail with one line saying how to install it.

    Raises:
        ConfigurationError: aiohttp cannot be imported.
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} needs aiohttp, which cannot be imported ({exc}); install it with "
            f"{DASHBOARD_INSTALL}"
        ) from None
