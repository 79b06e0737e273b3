"""Model adapters: any model as named arrays that can train, evaluate and export its architecture.

``import scatterbrained.adapters`` never imports torch. :class:`TorchAdapter` is loaded on first
access (``from scatterbrained.adapters import TorchAdapter``), and :func:`adapt` only looks for
torch in ``sys.modules``: a model cannot be an ``nn.Module`` unless torch is already imported.
(``TorchAdapter`` is left out of ``__all__`` so that ``import *`` never needs torch.)
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .architecture import (
    FORMAT_FACTORY,
    FORMAT_TORCH_EXPORT,
    FactoryRegistry,
    adapter_from_architecture,
    default_registry,
    export_architecture,
    model_from_architecture,
)
from .base import EpochResult, EvalResult, ModelAdapter, StepHook
from .sklearn import SklearnAdapter

if TYPE_CHECKING:
    from .torch import TorchAdapter as TorchAdapter

__all__ = [
    "FORMAT_FACTORY",
    "FORMAT_TORCH_EXPORT",
    "EpochResult",
    "EvalResult",
    "FactoryRegistry",
    "ModelAdapter",
    "SklearnAdapter",
    "StepHook",
    "adapt",
    "adapter_from_architecture",
    "default_registry",
    "export_architecture",
    "model_from_architecture",
]


def __getattr__(name: str) -> Any:
    if name == "TorchAdapter":
        from .torch import TorchAdapter

        return TorchAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Keyword options each adapter takes (``adapter_options`` of a namespace).
_TORCH_OPTIONS = frozenset({"device", "example_input", "factory", "max_grad_norm"})
_SKLEARN_OPTIONS = frozenset({"classes", "n_features", "factory"})


def _check_options(model: Any, given: Mapping[str, Any], valid: Collection[str]) -> None:
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    hints = [
        f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
        for name in unknown
        for close in [difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)]
    ]
    raise ConfigurationError(
        f"unknown adapter option(s) {', '.join(hints)} for a {type(model).__name__}; "
        f"valid options: {', '.join(sorted(valid))}"
    )


def adapt(
    model: Any,
    create_optimizer: Callable[..., Any] | None = None,
    loss: Any = None,
    **kwargs: Any,
) -> ModelAdapter:
    """Wrap ``model`` in the adapter that fits it.

    * a :class:`ModelAdapter` is returned as is (no other argument may be given);
    * a ``torch.nn.Module`` becomes a :class:`TorchAdapter` (``kwargs``: ``device``,
      ``example_input``, ``factory``, ``max_grad_norm``); ``create_optimizer`` is called with
      the model, e.g. ``lambda model: torch.optim.AdamW(model.parameters())``;
    * an object with ``partial_fit`` becomes a :class:`SklearnAdapter` (``kwargs``:
      ``classes`` and ``n_features`` required, ``factory``; ``loss`` is its evaluation loss).

    Raises:
        ConfigurationError: the model is none of these, an option is unknown or missing
            (the message names the valid ones), or the options do not fit its adapter.
    """
    if isinstance(model, ModelAdapter):
        if create_optimizer is not None or loss is not None or kwargs:
            raise ConfigurationError(
                "model is already a ModelAdapter; configure it through its own constructor"
            )
        return model
    torch = sys.modules.get("torch")
    try:
        if torch is not None and isinstance(model, torch.nn.Module):
            from .torch import TorchAdapter

            _check_options(model, kwargs, _TORCH_OPTIONS)
            return TorchAdapter(model, create_optimizer, loss, **kwargs)
        if callable(getattr(model, "partial_fit", None)):
            if create_optimizer is not None:
                raise ConfigurationError("create_optimizer does not apply to partial_fit models")
            _check_options(model, kwargs, _SKLEARN_OPTIONS)
            return SklearnAdapter(model, loss=loss, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"invalid options for {type(model).__name__}: {exc}") from exc
    raise ConfigurationError(
        f"cannot adapt a {type(model).__name__}; supported: a ModelAdapter, a torch.nn.Module, "
        "or an estimator with partial_fit (e.g. SGDClassifier, with classes= and n_features=)"
    )
