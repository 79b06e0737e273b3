"""Tiny PyTorch models for simulations, built by registered name from JSON-like kwargs.

The registry is what the ``"factory"`` architecture format names (see
:class:`scatterbrained.wire.messages.Architecture`), so a newcomer can rebuild a peer's model
without running code that came off the network. Because those kwargs may come from a peer,
every size is bounded (:data:`MAX_DIM`, :data:`MAX_PARAMETERS`) before anything is allocated.

torch is imported only when a model is built, so importing this module is cheap.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MAX_DIM", "MAX_PARAMETERS", "MODEL_FACTORIES", "build_model", "cnn", "logreg", "mlp"]

#: Largest accepted width of any layer, input or output.
MAX_DIM = 1 << 20
#: Largest accepted number of parameters of a factory-built model.
MAX_PARAMETERS = 50_000_000


def _dim(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIM:
        raise ConfigurationError(f"{name} must be an integer in [1, {MAX_DIM}], got {value!r}")
    return value


def _check_budget(model_name: str, parameters: int) -> None:
    if parameters > MAX_PARAMETERS:
        raise ConfigurationError(
            f"{model_name} would have {parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} allowed; use smaller sizes"
        )


def mlp(input_dim: int, num_classes: int, hidden: int = 64) -> nn.Module:
    """Two-layer perceptron: ``Flatten -> Linear(input_dim, hidden) -> ReLU -> Linear``.

    Args:
        input_dim: features per sample after flattening (e.g. 64 for digits, 784 for 28x28).
        num_classes: output logits.
        hidden: width of the hidden layer.

    Raises:
        ConfigurationError: a size is not an integer in ``[1, MAX_DIM]`` or the model would
            exceed :data:`MAX_PARAMETERS`.
    """
    sizes = [_dim("input_dim", input_dim), _dim("hidden", hidden), _dim("num_classes", num_classes)]
    _check_budget("mlp", sizes[0] * sizes[1] + sizes[1] * sizes[2] + sizes[1] + sizes[2])
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(sizes[0], sizes[1]),
        nn.ReLU(),
        nn.Linear(sizes[1], sizes[2]),
    )


def logreg(input_dim: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: ``Flatten -> Linear(input_dim, num_classes)``.

    Args:
        input_dim: features per sample after flattening.
        num_classes: output logits.

    Raises:
        ConfigurationError: a size is not an integer in ``[1, MAX_DIM]`` or the model would
            exceed :data:`MAX_PARAMETERS`.
    """
    inputs, outputs = _dim("input_dim", input_dim), _dim("num_classes", num_classes)
    _check_budget("logreg", inputs * outputs + outputs)
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs))


def cnn(num_classes: int = 10, channels: int = 1, image_size: int = 28) -> nn.Module:
    """Small conv net for square images (28x28 by default), quick on a CPU.

    ``Conv(channels->8, 3x3, stride 2) -> ReLU -> Conv(8->16, 3x3, stride 2) -> ReLU ->
    Flatten -> Linear(16 * ceil(image_size / 4)**2, num_classes)``: 9,098 parameters at 28x28.
    Strided convolutions instead of conv + max-pool reach the same accuracy on Fashion-MNIST
    at about half the cost: one epoch over 3,750 samples (batch 32) takes about 0.5 s on one
    CPU thread. Inputs have shape ``(batch, channels, image_size, image_size)``.

    Args:
        num_classes: output logits.
        channels: input channels (1 for grey-scale).
        image_size: side of the square input in pixels (e.g. 28, or 8 for digits).

    Raises:
        ConfigurationError: a size is not an integer in ``[1, MAX_DIM]`` or the model would
            exceed :data:`MAX_PARAMETERS`.
    """
    classes, in_channels = _dim("num_classes", num_classes), _dim("channels", channels)
    side = _dim("image_size", image_size)
    features = 16 * (-(-side // 4)) ** 2  # each stride-2 conv (padding 1) gives ceil(side / 2)
    _check_budget("cnn", in_channels * 8 * 9 + 8 + 8 * 16 * 9 + 16 + features * classes + classes)
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 8, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(features, classes),
    )


#: Model name -> factory; factories take only JSON-like keyword arguments.
MODEL_FACTORIES: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {"mlp": mlp, "cnn": cnn, "logreg": logreg}
)


def _factory(name: str) -> Callable[..., nn.Module]:
    factory = MODEL_FACTORIES.get(str(name).strip().lower())
    if factory is None:
        close = difflib.get_close_matches(str(name).lower(), list(MODEL_FACTORIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(MODEL_FACTORIES)
        raise ConfigurationError(f"unknown model {name!r}; expected one of {known}{hint}")
    return factory


def build_model(name: str, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    With ``seed`` the initial weights are a function of the seed alone; the global torch RNG
    is left exactly as it was (the build runs inside ``torch.random.fork_rng``).

    Args:
        name: a key of :data:`MODEL_FACTORIES` (case-insensitive).
        seed: seed of the weight initialisation (``None``: the global torch RNG).
        **kwargs: the factory's keyword arguments.

    Raises:
        ConfigurationError: unknown name (with a did-you-mean), missing or unknown keyword
            arguments (the message lists the accepted ones), or sizes out of range.
    """
    factory = _factory(name)
    signature = inspect.signature(factory)
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        accepted = ", ".join(
            p.name if p.default is p.empty else f"{p.name}={p.default!r}"
            for p in signature.parameters.values()
        )
        raise ConfigurationError(
            f"model {name!r} rejects arguments {sorted(kwargs)}: {error}; it takes ({accepted})"
        ) from None
    if seed is None:
        return factory(**kwargs)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigurationError(f"seed must be an integer or None, got {seed!r}")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(**kwargs)
