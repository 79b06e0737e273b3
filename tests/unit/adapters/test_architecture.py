"""Tests of the factory registry and of rebuilding models from architectures."""

from __future__ import annotations

import itertools
import pathlib
from typing import Any

import numpy as np
import pytest

from scatterbrained.adapters import (
    FactoryRegistry,
    SklearnAdapter,
    adapter_from_architecture,
    default_registry,
    export_architecture,
    model_from_architecture,
)
from scatterbrained.adapters.architecture import validate_factory_kwargs
from scatterbrained.errors import ConfigurationError, ModelSyncError
from scatterbrained.wire.messages import Architecture


@pytest.mark.timeout(10)
def test_registry_creates_with_checked_kwargs() -> None:
    # Prepare
    registry = FactoryRegistry()
    calls: list[dict[str, object]] = []

    def build(**kwargs: object) -> str:
        calls.append(kwargs)
        return "built"

    registry.register("test.model", build)
    # Execute
    built = registry.create("test.model", {"sizes": (64, 32), "act": "relu", "p": 0.1})
    # Assert
    assert built == "built"
    assert calls == [{"sizes": [64, 32], "act": "relu", "p": 0.1}]
    assert "test.model" in registry and registry.names() == ["test.model"]


@pytest.mark.timeout(10)
def test_registries_are_independent_and_names_are_protected() -> None:
    # Prepare
    first, second = FactoryRegistry(), FactoryRegistry()
    first.register("a", dict)
    # Execute / Assert
    assert "a" not in second
    with pytest.raises(ConfigurationError, match="already registered"):
        first.register("a", list)
    first.register("a", list, replace=True)
    with pytest.raises(ConfigurationError):
        first.register("bad name!", dict)
    with pytest.raises(ConfigurationError):
        first.register("b", "not callable")  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_unknown_factory_lists_registered_names() -> None:
    # Prepare
    registry = FactoryRegistry()
    registry.register("known.one", dict)
    # Execute / Assert
    with pytest.raises(ConfigurationError, match=r"known\.one"):
        registry.create("unknown", {})


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"x": {"nested": "dict"}},
        {"x": object()},
        {"x": float("nan")},
        {"x": b"bytes"},
        {"not-an-identifier": 1},
        {1: 1},
        {"x": [[[[[[[[[[1]]]]]]]]]]},
        {"x": "s" * 20_000},
        {"x": list(range(20_000))},
        "not a mapping",
    ],
)
def test_non_json_like_kwargs_are_rejected(kwargs: Any) -> None:
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        validate_factory_kwargs(kwargs)


@pytest.mark.timeout(10)
def test_factory_errors_become_configuration_errors() -> None:
    # Prepare
    registry = FactoryRegistry()
    registry.register("strict", lambda *, a: a)
    # Execute / Assert
    with pytest.raises(ConfigurationError, match="rejected"):
        registry.create("strict", {"b": 1})


def _trained_sklearn() -> SklearnAdapter:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    registry = default_registry()
    created = registry.create(
        "sklearn.sgd_classifier",
        {"classes": list(range(10)), "n_features": 64, "loss": "log_loss", "random_state": 0},
    )
    assert isinstance(created, SklearnAdapter)
    created.train_epoch([(x[i : i + 100] / 16.0, y[i : i + 100]) for i in range(0, 1000, 100)])
    return created


@pytest.mark.timeout(30)
def test_sklearn_model_round_trips_through_the_factory_format() -> None:
    # Prepare
    original = _trained_sklearn()
    architecture = export_architecture(original)
    assert architecture is not None
    probe = np.random.default_rng(0).random((5, 64))
    # Execute
    rebuilt = adapter_from_architecture(architecture, original.get_arrays(), default_registry())
    estimator = model_from_architecture(architecture, original.get_arrays())
    # Assert
    assert isinstance(rebuilt, SklearnAdapter)
    assert np.array_equal(rebuilt.model.predict_proba(probe), original.model.predict_proba(probe))
    assert np.array_equal(estimator.predict(probe), original.model.predict(probe))
    assert rebuilt.export_architecture() == architecture


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "architecture",
    [
        Architecture(format="pickle", payload=b"\x80\x04K\x01."),
        Architecture(format="factory", factory="os.system", kwargs={"command": "true"}),
        Architecture(format="factory", factory="sklearn.sgd_classifier", kwargs={"n_jobs": 64}),
        Architecture(
            format="factory",
            factory="sklearn.sgd_classifier",
            kwargs={"classes": [0, 1], "n_features": 2, "alpha": "much"},
        ),
        Architecture(format="factory", factory="sklearn.sgd_classifier", kwargs={"x": {"a": 1}}),
        Architecture(
            format="factory",
            factory="sklearn.sgd_classifier",
            kwargs={"classes": [0, 1], "n_features": 10**9},
        ),
    ],
    ids=["pickle-format", "unknown", "param", "value", "dict", "huge"],
)
def test_hostile_factory_architectures_raise_model_sync_error(architecture: Architecture) -> None:
    # Execute / Assert
    with pytest.raises(ModelSyncError):
        adapter_from_architecture(architecture, {}, default_registry())


@pytest.mark.timeout(30)
def test_weights_that_do_not_fit_a_factory_model_raise_model_sync_error() -> None:
    # Prepare
    architecture = Architecture(
        format="factory",
        factory="sklearn.sgd_classifier",
        kwargs={"classes": [0, 1], "n_features": 2},
    )
    arrays = {"coef": np.zeros((1, 3)), "intercept": np.zeros(1)}
    # Execute / Assert
    with pytest.raises(ModelSyncError, match="do not fit"):
        adapter_from_architecture(architecture, arrays, default_registry())


@pytest.mark.timeout(60)
def test_torch_factory_models_round_trip(tmp_path: pathlib.Path) -> None:
    # Prepare
    torch = pytest.importorskip("torch")
    from scatterbrained.adapters.torch import TorchAdapter

    def mlp(*, sizes: list[int]) -> Any:
        layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
        return torch.nn.Sequential(*layers)

    registry = FactoryRegistry()
    registry.register("test.mlp", mlp)
    torch.manual_seed(0)
    original = TorchAdapter(mlp(sizes=[4, 3, 2]), factory=("test.mlp", {"sizes": [4, 3, 2]}))
    architecture = original.export_architecture()
    assert architecture == Architecture(
        format="factory", factory="test.mlp", kwargs={"sizes": [4, 3, 2]}
    )
    # Execute
    rebuilt = adapter_from_architecture(architecture, original.get_arrays(), registry)
    # Assert
    assert isinstance(rebuilt, TorchAdapter)
    probe = torch.rand(3, 4)
    assert torch.equal(rebuilt.model(probe), original.model(probe))
    assert rebuilt.export_architecture() == architecture


@pytest.mark.timeout(30)
def test_factory_returning_an_unsupported_object_raises_model_sync_error() -> None:
    # Prepare
    registry = FactoryRegistry()
    registry.register("test.str", lambda: "not a model")
    architecture = Architecture(format="factory", factory="test.str")
    # Execute / Assert
    with pytest.raises(ModelSyncError, match="expected"):
        adapter_from_architecture(architecture, {}, registry)
