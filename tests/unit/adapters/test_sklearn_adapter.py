"""Tests of SklearnAdapter: federation-ready linear classifiers without torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from scatterbrained.adapters import ModelAdapter, SklearnAdapter
from scatterbrained.errors import ConfigurationError

_CLASSES = list(range(10))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order] / 16.0, y[order]


def _batches(x: np.ndarray, y: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _adapter(**params: object) -> SklearnAdapter:
    estimator = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0, **params)
    return SklearnAdapter(estimator, classes=_CLASSES, n_features=64)


@pytest.mark.timeout(60)
def test_sgd_classifier_learns_digits_above_85_percent() -> None:
    # Prepare
    x, y = _digits()
    images = x.reshape(-1, 8, 8)  # 3-D input: flattened by the adapter
    train, valid = _batches(images[:1400], y[:1400], 64), _batches(x[1400:], y[1400:], 200)
    adapter = _adapter()
    before = adapter.evaluate(valid)
    # Execute
    results = [adapter.train_epoch(train) for _ in range(5)]
    after = adapter.evaluate(valid)
    # Assert
    assert isinstance(adapter, ModelAdapter)
    assert before.loss == pytest.approx(math.log(10))  # zero weights: uniform probabilities
    assert results[-1].loss < results[0].loss
    assert results[0].samples == 1400 and results[0].steps == math.ceil(1400 / 64)
    assert after.accuracy is not None and after.accuracy > 0.85
    assert after.loss < before.loss


@pytest.mark.timeout(10)
def test_arrays_exist_before_training_with_documented_shapes() -> None:
    # Prepare
    binary = SklearnAdapter(SGDClassifier(), classes=[3, 7], n_features=5)
    multi = _adapter()
    # Execute
    binary_arrays, multi_arrays = binary.get_arrays(), multi.get_arrays()
    # Assert
    assert binary_arrays["coef"].shape == (1, 5) and binary_arrays["intercept"].shape == (1,)
    assert multi_arrays["coef"].shape == (10, 64) and multi_arrays["intercept"].shape == (10,)
    assert multi.array_specs() == {"coef": ("float64", (10, 64)), "intercept": ("float64", (10,))}
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in multi_arrays.values())
    assert not multi_arrays["coef"].any()


@pytest.mark.timeout(10)
def test_set_arrays_changes_predictions_and_copies() -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2)
    arrays = {"coef": np.array([[1.0, 0.0]]), "intercept": np.array([0.0])}
    # Execute
    adapter.set_arrays(arrays)
    arrays["coef"][:] = -1.0
    # Assert
    assert adapter.model.predict(np.array([[2.0, 0.0], [-2.0, 0.0]])).tolist() == [1, 0]
    assert adapter.get_arrays()["coef"].tolist() == [[1.0, 0.0]]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "arrays",
    [
        {"coef": np.zeros((1, 2))},
        {"coef": np.zeros((1, 3)), "intercept": np.zeros(1)},
        {"coef": np.zeros((1, 2), dtype=np.int64), "intercept": np.zeros(1)},
        {"coef": np.zeros((1, 2)), "intercept": np.zeros(1), "extra": np.zeros(1)},
    ],
)
def test_set_arrays_rejects_mismatches(arrays: dict[str, np.ndarray]) -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2)
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        adapter.set_arrays(arrays)


@pytest.mark.timeout(10)
def test_hinge_estimator_reports_hinge_loss() -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(loss="hinge"), classes=[0, 1], n_features=1)
    adapter.set_arrays({"coef": np.array([[1.0]]), "intercept": np.array([0.0])})
    inputs, labels = np.array([[2.0], [0.5], [1.0]]), np.array([1, 1, 0])
    # Execute
    result = adapter.evaluate([(inputs, labels)])
    # Assert: margins 2, 0.5, -1 -> hinge 0, 0.5, 2
    assert result.loss == pytest.approx((0 + 0.5 + 2) / 3)
    assert result.accuracy == pytest.approx(2 / 3)


@pytest.mark.timeout(10)
def test_zero_one_loss_and_multiclass_hinge() -> None:
    # Prepare
    zero_one = SklearnAdapter(SGDClassifier(), classes=[0, 1, 2], n_features=3, loss="zero_one")
    hinge = SklearnAdapter(SGDClassifier(), classes=[0, 1, 2], n_features=3, loss="hinge")
    weights = {"coef": np.eye(3), "intercept": np.zeros(3)}
    zero_one.set_arrays(weights)
    hinge.set_arrays(weights)
    batch = (np.array([[3.0, 0, 0], [0, 1.0, 0.5]]), np.array([0, 2]))
    # Execute
    zo, hg = zero_one.evaluate([batch]), hinge.evaluate([batch])
    # Assert: sample 1 margin 3 -> 0; sample 2 margin 0.5 - 1 -> 1.5
    assert zo.loss == pytest.approx(0.5)
    assert hg.loss == pytest.approx(0.75)


@pytest.mark.timeout(10)
def test_step_hook_and_checkpoint() -> None:
    # Prepare
    adapter = _adapter()
    seen: list[int] = []
    x, y = _digits()
    # Execute
    result = adapter.train_epoch(_batches(x[:100], y[:100], 40), step_hook=seen.append)
    state = adapter.checkpoint_state()
    other = _adapter()
    other.load_checkpoint_state(state)
    # Assert
    assert seen == [1, 2, 3] and result.steps == 3
    assert state["t"] == pytest.approx(101.0)
    assert other.model.t_ == pytest.approx(101.0)


@pytest.mark.timeout(10)
def test_float_labels_with_integer_values_are_accepted() -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2)
    # Execute
    result = adapter.train_epoch([(np.ones((2, 2)), np.array([0.0, 1.0]))])
    # Assert
    assert result.samples == 2


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "batch",
    [
        (np.ones((2, 3)), np.array([0, 1])),
        (np.ones((2, 2)), np.array([0, 5])),
        (np.ones((2, 2)), np.array([0.5, 1.0])),
        (np.ones((2, 2)), np.array([0, 1, 1])),
        np.ones((2, 2)),
    ],
    ids=["features", "unknown-label", "fractional", "count", "not-a-pair"],
)
def test_bad_batches_are_rejected(batch: object) -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2)
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        adapter.train_epoch([batch])


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SklearnAdapter(object(), classes=[0, 1], n_features=2), "partial_fit"),
        (lambda: SklearnAdapter(SGDClassifier()), r"missing: classes, n_features; every node"),
        (lambda: SklearnAdapter(SGDClassifier(), classes=[0, 1]), r"missing: n_features;"),
        (
            lambda: SklearnAdapter(SGDClassifier(average=True), classes=[0, 1], n_features=2),
            "avera",
        ),
        (lambda: SklearnAdapter(SGDClassifier(), classes=[0], n_features=2), "at least 2"),
        (lambda: SklearnAdapter(SGDClassifier(), classes=[0, 0], n_features=2), "duplicates"),
        (lambda: SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=0), "n_features"),
        (
            lambda: SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2, loss="log_loss"),
            "predict_proba",
        ),
        (
            lambda: SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2, loss="nope"),
            "one of",
        ),
    ],
)
def test_invalid_configuration_is_rejected(make: object, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.timeout(10)
def test_sgd_classifier_exports_a_factory_architecture() -> None:
    # Prepare
    adapter = _adapter()
    # Execute
    architecture = adapter.export_architecture()
    # Assert
    assert architecture is not None and architecture.format == "factory"
    assert architecture.factory == "sklearn.sgd_classifier"
    assert architecture.kwargs["classes"] == _CLASSES
    assert architecture.kwargs["n_features"] == 64
    assert architecture.kwargs["loss"] == "log_loss"
    assert architecture.kwargs["alpha"] == 1e-4


@pytest.mark.timeout(10)
def test_other_estimators_export_nothing_unless_given_a_factory() -> None:
    # Prepare
    class Custom(SGDClassifier):  # type: ignore[misc]
        pass

    plain = SklearnAdapter(Custom(), classes=[0, 1], n_features=2)
    named = SklearnAdapter(Custom(), classes=[0, 1], n_features=2, factory=("my.model", {"k": 1}))
    # Execute / Assert
    assert plain.export_architecture() is None
    exported = named.export_architecture()
    assert exported is not None and exported.factory == "my.model" and exported.kwargs == {"k": 1}
