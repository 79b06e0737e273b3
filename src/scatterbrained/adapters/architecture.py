"""Model architectures that travel between peers without being able to run code on load.

Two formats (:class:`~scatterbrained.wire.messages.Architecture`):

* ``"factory"``: a name and JSON-like keyword arguments, looked up in a process-local
  :class:`FactoryRegistry` that the receiving node was given. Only code the receiver registered
  itself can run; the sender chooses among those factories and their arguments.
* ``"torch.export"``: the graphs of a PyTorch model (see :mod:`.torch_export` for the format and
  its Security section). Weights never travel in an architecture: they are the named arrays of
  the model offer and are plugged in on load.

Security
    No function here unpickles, ``torch.load``-s or ``eval``-s received bytes. Factory kwargs are
    checked to be JSON-like (str, int, float, bool, None and lists of those) before a registered
    factory is called. Every failure on received data is a :class:`ModelSyncError`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigurationError, ModelSyncError
from ..wire.messages import Architecture
from .base import ModelAdapter
from .validation import validate_factory_kwargs, validate_factory_name

__all__ = [
    "FORMAT_FACTORY",
    "FORMAT_TORCH_EXPORT",
    "FactoryRegistry",
    "adapter_from_architecture",
    "default_registry",
    "export_architecture",
    "model_from_architecture",
    "validate_factory_kwargs",
    "validate_factory_name",
]

_log = logging.getLogger(__name__)

FORMAT_FACTORY = "factory"
FORMAT_TORCH_EXPORT = "torch.export"


class FactoryRegistry:
    """Process-local name -> factory table for the ``"factory"`` architecture format.

    Create one per node (or use :func:`default_registry`) and pass it explicitly; nothing is
    global. A factory is called with keyword arguments only and returns an ``nn.Module`` or a
    ``ModelAdapter`` (e.g. a :class:`.sklearn.SklearnAdapter`).
    """

    def __init__(self) -> None:
        self._factories: dict[str, Callable[..., object]] = {}

    def register(self, name: str, factory: Callable[..., object], *, replace: bool = False) -> None:
        """Register ``factory`` under ``name``.

        Raises:
            ConfigurationError: invalid name, ``factory`` not callable, or ``name`` taken and
                ``replace`` is false.
        """
        validate_factory_name(name)
        if not callable(factory):
            raise ConfigurationError(f"factory {name!r} must be callable")
        if name in self._factories and not replace:
            raise ConfigurationError(
                f"factory {name!r} is already registered; pass replace=True to override"
            )
        self._factories[name] = factory

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def create(self, name: str, kwargs: Mapping[str, object]) -> object:
        """Call the factory registered as ``name`` with the checked ``kwargs``.

        Raises:
            ConfigurationError: unknown name (the message lists the registered ones), kwargs
                that are not JSON-like, or the factory rejected them.
        """
        factory = self._factories.get(name) if isinstance(name, str) else None
        if factory is None:
            raise ConfigurationError(
                f"no factory named {name!r:.80} is registered; registered: {self.names()}"
            )
        checked = validate_factory_kwargs(kwargs)
        try:
            return factory(**checked)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"factory {name!r} rejected its kwargs: {exc}") from exc


def default_registry() -> FactoryRegistry:
    """Return a new registry holding the built-in factories.

    Built-ins: ``"sklearn.sgd_classifier"`` (:func:`.sklearn.sgd_classifier`).
    """
    from .sklearn import SGD_CLASSIFIER_FACTORY, sgd_classifier

    registry = FactoryRegistry()
    registry.register(SGD_CLASSIFIER_FACTORY, sgd_classifier)
    return registry


def export_architecture(adapter: ModelAdapter) -> Architecture | None:
    """Return ``adapter``'s architecture in a code-free format, or ``None``.

    A torch adapter gives its factory when one is configured, else a ``torch.export`` program
    when an example input is known; a scikit-learn adapter gives its factory.
    """
    return adapter.export_architecture()


def _adapter_from_object(
    created: object, arch: Architecture, options: Mapping[str, Any]
) -> ModelAdapter:
    if isinstance(created, ModelAdapter):
        return created
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(created, torch.nn.Module):
        from .torch import TorchAdapter

        factory = (str(arch.factory), dict(arch.kwargs))
        return TorchAdapter(created, **options, factory=factory)
    raise ModelSyncError(
        f"factory {arch.factory!r} returned a {type(created).__name__}; expected a "
        "torch.nn.Module or a ModelAdapter"
    )


def _build_adapter(
    arch: Architecture, registry: FactoryRegistry, options: Mapping[str, Any]
) -> Any:
    if not isinstance(arch, Architecture):
        raise ModelSyncError(f"expected an Architecture, got {type(arch).__name__}")
    if arch.format == FORMAT_FACTORY:
        try:
            created = registry.create(str(arch.factory), arch.kwargs)
        except ConfigurationError as exc:
            raise ModelSyncError(f"cannot build the model from its factory: {exc}") from exc
        return _adapter_from_object(created, arch, options)
    raise ModelSyncError(
        f"architecture format {arch.format!r:.40} is not supported; expected "
        f"{FORMAT_FACTORY!r} or {FORMAT_TORCH_EXPORT!r}"
    )


def adapter_from_architecture(
    arch: Architecture,
    arrays: Mapping[str, np.ndarray],
    registry: FactoryRegistry | None = None,
    *,
    create_optimizer: Callable[..., Any] | None = None,
    loss: Callable[..., Any] | None = None,
    device: str = "cpu",
) -> ModelAdapter:
    """Rebuild a model from a (possibly hostile) architecture and load ``arrays`` into it.

    Args:
        arch: the architecture received from a peer.
        arrays: the weights received with it.
        registry: the factories this node trusts (for the ``"factory"`` format); ``None``
            means :func:`default_registry`.
        create_optimizer: ``model -> optimizer`` factory of the rebuilt torch model, called
            with the module (e.g. ``lambda model: torch.optim.AdamW(model.parameters())``);
            default Adam.
        loss: loss of the rebuilt torch model (default inferred).
        device: torch device of the rebuilt torch model.

    Returns:
        An adapter around the rebuilt model, holding ``arrays``.

    Raises:
        ModelSyncError: unknown format or factory, a malformed or disallowed payload, torch
            missing for a ``torch.export`` payload, or weights that do not fit.
    """
    options: dict[str, Any] = {"create_optimizer": create_optimizer, "loss": loss}
    options["device"] = device
    if isinstance(arch, Architecture) and arch.format == FORMAT_TORCH_EXPORT:
        try:
            from .torch import TorchAdapter
            from .torch_export import load_program
        except ImportError as exc:
            raise ModelSyncError(
                "the peer's model is a torch.export program but torch is not installed; "
                "install scatterbrained[torch]"
            ) from exc
        module = load_program(arch.payload, arrays, device=device)
        return TorchAdapter(module, create_optimizer, loss, device=device)
    adapter: ModelAdapter = _build_adapter(arch, registry or default_registry(), options)
    try:
        adapter.set_arrays(arrays)
    except ConfigurationError as exc:
        raise ModelSyncError(f"weights do not fit the architecture: {exc}") from exc
    return adapter


def model_from_architecture(
    arch: Architecture,
    arrays: Mapping[str, np.ndarray],
    registry: FactoryRegistry | None = None,
    *,
    device: str = "cpu",
) -> Any:
    """Rebuild the model object (``nn.Module`` or estimator) holding ``arrays``.

    Same as :func:`adapter_from_architecture` but returns ``adapter.model``.

    Raises:
        ModelSyncError: see :func:`adapter_from_architecture`.
    """
    return adapter_from_architecture(arch, arrays, registry, device=device).model
