"""Tests of adapt() dispatch and of the package working without torch."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

import scatterbrained
from scatterbrained.adapters import SklearnAdapter, adapt
from scatterbrained.errors import ConfigurationError


@pytest.mark.timeout(10)
def test_adapters_pass_through() -> None:
    # Prepare
    adapter = SklearnAdapter(SGDClassifier(), classes=[0, 1], n_features=2)
    # Execute / Assert
    assert adapt(adapter) is adapter
    with pytest.raises(ConfigurationError, match="already"):
        adapt(adapter, loss="hinge")


@pytest.mark.timeout(10)
def test_partial_fit_models_become_sklearn_adapters() -> None:
    # Prepare
    estimator = SGDClassifier(loss="log_loss")
    # Execute
    adapter = adapt(estimator, classes=[0, 1, 2], n_features=4)
    # Assert
    assert isinstance(adapter, SklearnAdapter) and adapter.model is estimator
    with pytest.raises(ConfigurationError, match="n_features"):
        adapt(SGDClassifier(), classes=[0, 1])
    with pytest.raises(ConfigurationError, match="create_optimizer"):
        adapt(SGDClassifier(), lambda p: p, classes=[0, 1], n_features=2)


@pytest.mark.timeout(60)
def test_torch_modules_become_torch_adapters() -> None:
    # Prepare
    torch = pytest.importorskip("torch")
    from scatterbrained.adapters import TorchAdapter

    model = torch.nn.Linear(3, 2)
    # Execute
    adapter = adapt(model, None, None, max_grad_norm=1.0)
    # Assert
    assert isinstance(adapter, TorchAdapter) and adapter.model is model
    with pytest.raises(ConfigurationError, match="unknown adapter option"):
        adapt(model, no_such_option=1)


@pytest.mark.timeout(60)
def test_torch_adapt_passes_the_model_to_the_optimizer_factory() -> None:
    # Prepare: the paper's `create_optimizer = lambda model: optim.AdamW(model.parameters())`
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    # Execute
    adapter = adapt(model, lambda m: torch.optim.AdamW(m.parameters()), None)
    # Assert
    assert adapter.optimizer.param_groups[0]["params"] == list(model.parameters())  # type: ignore[attr-defined]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({}, "classes, n_features"),
        ({"classes": [0, 1]}, "n_features"),
        ({"n_features": 4}, "classes"),
    ],
)
def test_sklearn_models_without_their_options_say_which_are_needed_and_why(
    options: dict[str, object], missing: str
) -> None:
    # Execute
    with pytest.raises(ConfigurationError) as caught:
        adapt(SGDClassifier(), **options)
    # Assert
    message = str(caught.value)
    assert f"needs the adapter options classes and n_features, missing: {missing};" in message
    assert 'adapter_options={"classes": [...], "n_features": 64}' in message
    assert "same shape before seeing any data" in message
    assert "__init__()" not in message


@pytest.mark.timeout(10)
def test_a_misspelt_sklearn_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        adapt(SGDClassifier(), clases=[0, 1], n_features=4)
    assert str(caught.value) == (
        "unknown adapter option(s) 'clases' (did you mean 'classes'?) for a SGDClassifier; "
        "valid options: classes, factory, n_features"
    )


@pytest.mark.timeout(10)
@pytest.mark.parametrize("model", [object(), "a string", np.zeros(3), None])
def test_unsupported_models_list_what_is_supported(model: object) -> None:
    # Execute / Assert
    with pytest.raises(ConfigurationError, match="partial_fit"):
        adapt(model)


@pytest.mark.timeout(120)
def test_package_imports_and_federates_sklearn_without_torch(tmp_path: pathlib.Path) -> None:
    # Prepare: a child interpreter in which `import torch` fails
    script = textwrap.dedent(
        """
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        import scatterbrained.adapters as adapters
        from sklearn.linear_model import SGDClassifier
        adapter = adapters.adapt(SGDClassifier(), classes=[0, 1], n_features=2)
        adapter.train_epoch([(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0, 1]))])
        rebuilt = adapters.adapter_from_architecture(
            adapter.export_architecture(), adapter.get_arrays())
        from scatterbrained.wire.messages import Architecture
        try:
            adapters.adapter_from_architecture(Architecture("torch.export", b"x"), {})
        except Exception as exc:
            print(type(exc).__name__, "torch" in str(exc))
        print("ok", type(rebuilt).__name__, "torch" in sys.modules)
        """
    )
    src = str(pathlib.Path(scatterbrained.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    # Execute
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=100
    )
    # Assert
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ModelSyncError", "True", "ok", "SklearnAdapter", "False"]
