"""scikit-learn adapter: linear classifiers with ``partial_fit`` seen as ``coef``/``intercept``.

The federation never depends on torch: this adapter needs only NumPy and an estimator with
``partial_fit`` and ``decision_function`` (``predict_proba`` too for the log-loss), such as
``SGDClassifier(loss="log_loss")``. scikit-learn itself is imported only by the built-in
``"sklearn.sgd_classifier"`` factory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..wire.messages import Architecture
from .base import EpochResult, EvalResult, StepHook

__all__ = ["SGD_CLASSIFIER_FACTORY", "SklearnAdapter", "sgd_classifier"]

#: Registered name of the built-in ``SGDClassifier`` factory.
SGD_CLASSIFIER_FACTORY = "sklearn.sgd_classifier"
#: ``SGDClassifier`` parameters the built-in factory accepts from peers.
SGD_PARAMETERS = frozenset(
    {"loss", "penalty", "alpha", "l1_ratio", "fit_intercept", "learning_rate", "eta0"}
    | {"power_t", "epsilon", "random_state"}
)
_EVAL_LOSSES = ("log_loss", "hinge", "zero_one")
_MAX_COEF_VALUES = 50_000_000
_EPSILON = 1e-15


def _checked_classes(classes: Sequence[int]) -> np.ndarray:
    values = np.asarray(list(classes))
    if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) < 2:
        raise ConfigurationError(
            f"classes must be a sequence of at least 2 integer labels, got {classes!r:.80}"
        )
    unique = np.unique(values).astype(np.int64)
    if len(unique) != len(values):
        raise ConfigurationError(f"classes contain duplicates: {classes!r:.80}")
    return unique


def _missing_options(estimator: Any, classes: object, n_features: object) -> ConfigurationError:
    # A linear model's weights (coef, intercept) must have the same shape on every node before
    # any data is seen, so every class label and the input size are needed up front.
    missing = [n for n, v in (("classes", classes), ("n_features", n_features)) if v is None]
    return ConfigurationError(
        f"a scikit-learn {type(estimator).__name__} needs the adapter options classes and "
        f"n_features, missing: {', '.join(missing)}; every node must start from weights of the "
        "same shape before seeing any data, so all class labels and the number of input features "
        'must be known up front; pass adapter_options={"classes": [...], "n_features": 64} '
        "to node.namespace(...) (or classes=..., n_features=... to SklearnAdapter)"
    )


class SklearnAdapter:
    """A linear classifier trained with ``partial_fit``, as arrays ``coef`` and ``intercept``.

    Args:
        estimator: e.g. ``SGDClassifier(loss="log_loss")``; ``average`` must be off (averaged
            weights cannot be federated).
        classes: every class label (integers); the same on every node. Required.
        n_features: input features after flattening each sample. Required.
        loss: evaluation loss: ``"log_loss"`` (needs ``predict_proba``), ``"hinge"`` or
            ``"zero_one"``; ``None`` picks log-loss when available, else hinge.
        factory: ``(name, kwargs)`` of a registered factory rebuilding this adapter; derived
            automatically for a plain ``SGDClassifier``.

    Raises:
        ConfigurationError: ``classes`` or ``n_features`` not given, no
            ``partial_fit``/``decision_function``, averaging on, fewer than 2 classes,
            ``n_features`` < 1, too many weights, or an unusable ``loss``.
    """

    def __init__(
        self,
        estimator: Any,
        *,
        classes: Sequence[int] | None = None,
        n_features: int | None = None,
        loss: str | None = None,
        factory: tuple[str, Mapping[str, object]] | None = None,
    ) -> None:
        for method in ("partial_fit", "decision_function", "predict"):
            if not callable(getattr(estimator, method, None)):
                raise ConfigurationError(
                    f"{type(estimator).__name__} has no {method}(); SklearnAdapter needs a "
                    "linear classifier such as SGDClassifier"
                )
        if getattr(estimator, "average", False):
            raise ConfigurationError("averaged SGD (average=True) cannot be federated")
        if classes is None or n_features is None:
            raise _missing_options(estimator, classes, n_features)
        self._classes = _checked_classes(classes)
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise ConfigurationError(f"n_features must be a positive int, got {n_features!r}")
        rows = 1 if len(self._classes) == 2 else len(self._classes)
        if rows * n_features > _MAX_COEF_VALUES:
            raise ConfigurationError(f"{rows}x{n_features} weights exceed {_MAX_COEF_VALUES}")
        self._estimator = estimator
        self._n_features = n_features
        self._shapes = {"coef": (rows, n_features), "intercept": (rows,)}
        self._loss_name = self._pick_loss(loss)
        self._factory = self._pick_factory(factory)
        self._initialize_weights()

    @property
    def model(self) -> Any:
        """The wrapped estimator (trained in place)."""
        return self._estimator

    def _pick_loss(self, loss: str | None) -> str:
        has_proba = hasattr(self._estimator, "predict_proba")
        if loss is None:
            return "log_loss" if has_proba else "hinge"
        if loss not in _EVAL_LOSSES:
            raise ConfigurationError(f"loss must be one of {_EVAL_LOSSES}, got {loss!r}")
        if loss == "log_loss" and not has_proba:
            raise ConfigurationError("loss='log_loss' needs an estimator with predict_proba")
        return loss

    def _pick_factory(
        self, factory: tuple[str, Mapping[str, object]] | None
    ) -> tuple[str, dict[str, object]] | None:
        from .validation import validate_factory_kwargs, validate_factory_name

        if factory is not None:
            return validate_factory_name(factory[0]), validate_factory_kwargs(factory[1])
        kind = type(self._estimator)
        if kind.__name__ != "SGDClassifier" or not kind.__module__.startswith("sklearn."):
            return None
        kwargs: dict[str, object] = {"classes": [int(c) for c in self._classes]}
        kwargs["n_features"] = self._n_features
        kwargs["eval_loss"] = self._loss_name
        for key, value in self._estimator.get_params().items():
            if key in SGD_PARAMETERS and (value is None or isinstance(value, (str, int, float))):
                kwargs[key] = value
        return SGD_CLASSIFIER_FACTORY, validate_factory_kwargs(kwargs)

    def _initialize_weights(self) -> None:
        est = self._estimator
        coef = getattr(est, "coef_", None)
        known = getattr(est, "classes_", None)
        fitted = (
            coef is not None
            and np.shape(coef) == self._shapes["coef"]
            and known is not None
            and np.array_equal(np.asarray(known), self._classes)
        )
        if not fitted:
            est.coef_ = np.zeros(self._shapes["coef"], dtype=np.float64)
            est.intercept_ = np.zeros(self._shapes["intercept"], dtype=np.float64)
            est.classes_ = self._classes.copy()
            est.n_features_in_ = self._n_features

    # -- named arrays ---------------------------------------------------------------------

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Return copies of ``coef`` and ``intercept`` (float64, C-contiguous)."""
        est = self._estimator
        return {
            "coef": np.array(est.coef_, dtype=np.float64, copy=True, order="C"),
            "intercept": np.array(est.intercept_, dtype=np.float64, copy=True, order="C"),
        }

    def array_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{"coef": ("float64", (rows, n_features)), "intercept": ("float64", (rows,))}``."""
        return {name: ("float64", shape) for name, shape in self._shapes.items()}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace ``coef_`` and ``intercept_`` with copies of ``arrays``.

        Raises:
            ConfigurationError: names other than ``coef``/``intercept``, wrong shapes, or
                non-floating dtypes.
        """
        if set(arrays) != set(self._shapes):
            raise ConfigurationError(
                f"expected arrays {sorted(self._shapes)}, got {sorted(arrays)[:5]}"
            )
        checked: dict[str, np.ndarray] = {}
        for name, shape in self._shapes.items():
            array = np.asarray(arrays[name])
            if array.shape != shape or array.dtype.kind != "f":
                raise ConfigurationError(
                    f"array {name!r} is {array.dtype}{array.shape}, expected float64{shape}"
                )
            checked[name] = np.array(array, dtype=np.float64, copy=True, order="C")
        self._estimator.coef_ = checked["coef"]
        self._estimator.intercept_ = checked["intercept"]

    # -- training -------------------------------------------------------------------------

    def _batch(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ConfigurationError("expected each batch to be an (inputs, targets) pair")
        inputs = np.asarray(batch[0], dtype=np.float64)
        inputs = inputs.reshape(inputs.shape[0] if inputs.ndim else 1, -1)
        if inputs.shape[1] != self._n_features:
            raise ConfigurationError(
                f"batch has {inputs.shape[1]} features per sample, expected {self._n_features}"
            )
        targets = np.asarray(batch[1]).reshape(-1)
        if targets.dtype.kind == "f" and np.all(np.mod(targets, 1) == 0):
            targets = targets.astype(np.int64)
        unknown = np.setdiff1d(targets, self._classes)
        if len(targets) != len(inputs) or targets.dtype.kind not in "iu" or len(unknown):
            raise ConfigurationError(
                f"targets must be {len(inputs)} labels from {self._classes.tolist()[:10]}; "
                f"got {len(targets)} of dtype {targets.dtype}, unknown {unknown.tolist()[:5]}"
            )
        return inputs, targets

    def _losses(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        est = self._estimator
        index = np.searchsorted(self._classes, targets)
        rows = np.arange(len(targets))
        if self._loss_name == "log_loss":
            proba = np.asarray(est.predict_proba(inputs))
            picked = np.clip(proba[rows, index].astype(np.float64), _EPSILON, 1.0)
            return np.asarray(-np.log(picked), dtype=np.float64)
        if self._loss_name == "zero_one":
            wrong: np.ndarray = np.asarray(est.predict(inputs)) != targets
            return wrong.astype(np.float64)
        scores = np.asarray(est.decision_function(inputs), dtype=np.float64)
        if scores.ndim == 1:
            signs = np.where(index == 1, 1.0, -1.0)
            margins = signs * scores
        else:
            true_scores = scores[rows, index].copy()
            scores[rows, index] = -np.inf
            margins = true_scores - scores.max(axis=1)
        return np.maximum(0.0, 1.0 - margins)

    def train_epoch(
        self, loader: Iterable[Any], *, step_hook: StepHook | None = None
    ) -> EpochResult:
        """Run ``partial_fit`` once per ``(x, y)`` batch; ``x`` is flattened to 2-D.

        The reported loss of a batch is measured just before its update.

        Raises:
            ConfigurationError: malformed batches (feature count, unknown labels).
        """
        total, samples, steps = 0.0, 0, 0
        classes = self._classes
        for batch in loader:
            inputs, targets = self._batch(batch)
            total += float(self._losses(inputs, targets).sum())
            self._estimator.partial_fit(inputs, targets, classes=classes)
            samples += len(targets)
            steps += 1
            if step_hook is not None:
                step_hook(steps)
        return EpochResult(
            loss=total / samples if samples else math.nan, samples=samples, steps=steps
        )

    def evaluate(self, loader: Iterable[Any]) -> EvalResult:
        """Mean evaluation loss and accuracy over ``loader``.

        Raises:
            ConfigurationError: malformed batches.
        """
        total, samples, correct = 0.0, 0, 0
        for batch in loader:
            inputs, targets = self._batch(batch)
            total += float(self._losses(inputs, targets).sum())
            correct += int((np.asarray(self._estimator.predict(inputs)) == targets).sum())
            samples += len(targets)
        if not samples:
            return EvalResult(loss=math.nan, accuracy=None, samples=0)
        return EvalResult(loss=total / samples, accuracy=correct / samples, samples=samples)

    # -- architecture and checkpoints -----------------------------------------------------

    def export_architecture(self) -> Architecture | None:
        """The ``"factory"`` architecture, or ``None`` when no factory is known."""
        if self._factory is None:
            return None
        name, kwargs = self._factory
        return Architecture(format="factory", factory=name, kwargs=dict(kwargs))

    def checkpoint_state(self) -> dict[str, Any]:
        """``{"t": estimator.t_}`` (the learning-rate schedule's step count) when present."""
        t = getattr(self._estimator, "t_", None)
        return {"t": None if t is None else float(t)}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore the step count saved by :meth:`checkpoint_state`."""
        t = state.get("t")
        if t is not None:
            self._estimator.t_ = float(t)


def sgd_classifier(
    *, classes: Sequence[int], n_features: int, eval_loss: str | None = None, **params: Any
) -> SklearnAdapter:
    """Built-in factory ``"sklearn.sgd_classifier"``: a fresh ``SGDClassifier`` adapter.

    Args:
        classes: every class label.
        n_features: input features.
        eval_loss: the adapter's evaluation loss (see :class:`SklearnAdapter`).
        **params: ``SGDClassifier`` parameters, limited to :data:`SGD_PARAMETERS`.

    Raises:
        ConfigurationError: a parameter outside :data:`SGD_PARAMETERS`, or invalid values.
    """
    from sklearn.linear_model import SGDClassifier

    unknown = sorted(set(params) - SGD_PARAMETERS)
    if unknown:
        raise ConfigurationError(
            f"SGDClassifier parameters {unknown} are not accepted; allowed: "
            f"{sorted(SGD_PARAMETERS)}"
        )
    estimator = SGDClassifier(**params)
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid SGDClassifier parameters: {exc}") from exc
    return SklearnAdapter(estimator, classes=classes, n_features=n_features, loss=eval_loss)
